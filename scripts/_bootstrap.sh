# Sourced by the scripts in this folder: a virtual env with the package (and [dev]) in
# .venv, and a redis-server binary on the PATH (from the system packages if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EVENTBUS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual env in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.eventbus-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing eventbus[dev] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" >&2
    touch "$stamp"
  fi
}

# Debian packages some tests need besides redis-server: libfaketime (clock-skew fault test),
# systemd-analyze (unit file check), and headless Chromium with its driver (the web
# console's browser tests). Best effort: the tests say what is missing.
ensure_test_tools() {
  local missing=()
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo -n"; fi
    echo "installing ${missing[*]} from the system packages" >&2
    ($sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq "${missing[@]}") >&2 || echo "could not install ${missing[*]}" >&2
  fi
  return 0
}

ensure_redis_server() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  echo "redis-server not found: installing it from the system packages" >&2
  local sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y redis >&2
  else
    echo "cannot install redis-server: install it with your package manager" >&2
    exit 1
  fi
  # The package may start a system service; the project never uses it.
}
