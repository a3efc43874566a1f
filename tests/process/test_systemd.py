"""systemd integration without systemd: the notify protocol on a real socket, and the
unit file checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for
from tests.process.pool import Pool
from workers.pool import sdnotify
from workers.tools.localredis import LocalRedis

ROOT = Path(__file__).parents[2]


def _datagram_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    return sock


def _received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_notify_sends_the_state_to_notify_socket(tmp_path: Path, monkeypatch) -> None:
    path = str(tmp_path / "notify.sock")
    with _datagram_socket(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1")
        assert _received(sock) == ["READY=1"]


def test_notify_supports_abstract_socket_names(monkeypatch) -> None:
    name = f"eventbus-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(1)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("WATCHDOG=1")
        assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval_s() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None


def test_supervisor_sends_ready_watchdog_and_stopping(make_pool, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _datagram_socket(path) as sock:
        pool = make_pool(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        # Read the socket while the pool starts, as systemd does: its queue holds only 10
        # datagrams, watchdog pings come every 0.2 s, and a full queue blocks the sender.
        pool.start(wait_ready=False)
        seen: list[str] = []

        def got(prefix: str) -> bool:
            seen.extend(_received(sock))
            return any(m.startswith(prefix) for m in seen)

        wait_for(lambda: got("READY=1"), 90)
        wait_for(lambda: pool.logged("supervisor_ready"))  # logged just after READY=1
        ready = next(m for m in seen if m.startswith("READY=1"))
        assert f"MAINPID={pool.proc.pid}" in ready
        wait_for(lambda: got("WATCHDOG=1"), 30)
        assert pool.stop() == 0
        wait_for(lambda: got("STOPPING=1"), 30)


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    # A missing tool fails, not skips: scripts/test (and so CI) installs it.
    assert tool is not None, "systemd-analyze missing: apt-get install systemd (scripts/test does)"
    supervisor = Path(sys.executable).with_name("eventbus-supervisor")
    assert supervisor.exists(), "the package's console script is not installed"
    unit = (ROOT / "systemd" / "eventbus-pool@.service").read_text()
    assert "Type=notify" in unit and "KillMode=mixed" in unit and "WatchdogSec=" in unit
    # verify checks that ExecStart exists: point it at this checkout's installed script.
    local = tmp_path / "eventbus-pool@tasks.service"
    local.write_text(unit.replace("/opt/eventbus/venv/bin/eventbus-supervisor", str(supervisor)))
    proc = subprocess.run([tool, "verify", str(local)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "eventbus-pool@tasks.service" not in proc.stderr, proc.stderr


def test_unit_has_one_reader_of_the_env_file() -> None:
    """The supervisor reads the env file (and again on SIGHUP); systemd does not, so no
    second parser with other rules sees it."""
    unit = (ROOT / "systemd" / "eventbus-pool@.service").read_text()
    directives = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not [line for line in directives if line.startswith("EnvironmentFile")]
    exec_start = next(line for line in directives if line.startswith("ExecStart="))
    assert exec_start.endswith("eventbus-supervisor --env-file /etc/eventbus/%i.env")


def test_watchdog_is_withheld_past_the_grace_while_redis_is_down_then_fed_again(
    tmp_path: Path, pools: list[Pool]
) -> None:
    path = str(tmp_path / "notify.sock")
    with LocalRedis() as own, _datagram_socket(path) as sock:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
        pool = Pool(own, tmp_path, processes=1, args=["--watchdog-grace-s", "1"], env=env)
        pools.append(pool)
        pool.start()
        wait_for(lambda: "WATCHDOG=1" in _received(sock), 60)
        own.stop()
        wait_for(lambda: pool.logged("watchdog_withheld"), 60)
        _received(sock)  # drop what came before
        seen = len(pool.logged("watchdog_withheld"))
        wait_for(lambda: len(pool.logged("watchdog_withheld")) >= seen + 2, 60)
        assert "WATCHDOG=1" not in _received(sock)
        assert "redis unreachable" in pool.logged("watchdog_withheld")[-1]["problems"][0]
        own.start()
        wait_for(lambda: "WATCHDOG=1" in _received(sock), 60)
        assert pool.stop() == 0
