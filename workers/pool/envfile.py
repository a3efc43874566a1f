"""The pool's env file (systemd ``EnvironmentFile`` syntax) and its one reader: its
``EVENTBUS_*`` lines are settings (see :mod:`workers.pool.settings`), its other variables
go into the workers' environment."""

from __future__ import annotations

from pathlib import Path

ENV_PREFIX = "EVENTBUS_"


class SettingsError(ValueError):
    """A setting is missing or has a bad value; the message names the flag and its env twin."""


def handler_environment(path: str | None) -> dict[str, str]:
    """The env file's other variables (API keys, ...): the supervisor puts them into the
    environment its workers start with, as systemd's ``EnvironmentFile=`` did, so the file
    has one reader and handlers still get them (again after SIGHUP)."""
    if not path:
        return {}
    return {k: v for k, v in read_env_file(path).items() if not k.startswith(ENV_PREFIX)}


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (systemd EnvironmentFile syntax: comments, optional quotes)."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"--env-file {path!r}: {exc.strerror}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"--env-file {path!r} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out
