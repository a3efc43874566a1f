"""Pool settings: every command-line flag has an environment-variable twin, so a systemd
``EnvironmentFile`` can drive a pool. This is the only module that reads the environment.

Precedence: command-line flag > ``--env-file`` > process environment > default.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eventbus.keys import validate_consumer, validate_group, validate_stream, validate_tenant_id
from eventbus.logs import LEVELS
from eventbus.retry import RetryPolicy
from eventbus.settings import BusSettings, ConsumerSettings


class SettingsError(ValueError):
    """A setting has a bad value; the message names the flag and its env twin."""


def at_least_int(minimum: int) -> Callable[[str], int]:
    """A parser of integers >= ``minimum`` (ValueError otherwise; argparse names it)."""

    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def at_least_float(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not value >= minimum:  # also rejects NaN
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"number >= {minimum}"
    return parse


def _delays(raw: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in raw.split(",") if part.strip())
    if not values or any(not v >= 0 for v in values):
        raise ValueError("must be a comma-separated list of seconds >= 0, e.g. 1,4,16")
    return values


def _optional_int(raw: str) -> int | None:
    if raw.strip() == "":
        return None
    return at_least_int(0)(raw)


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()

    parse.__name__ = "one of " + ", ".join(choices)
    return parse


def _name(validator: Callable[[str], str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        return validator(raw)

    return parse


def _handler(raw: str) -> str:
    module, sep, attr = raw.partition(":")
    if not (module and sep and attr):
        raise ValueError("must look like package.module:function")
    return raw


@dataclass(frozen=True)
class Option:
    name: str  # attribute name; flag is --name-with-dashes; env is EVENTBUS_NAME_UPPER
    parse: Callable[[str], Any]
    default: str | None  # as text, parsed like user input; None = required
    help: str
    env: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or "EVENTBUS_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("redis_url", str, "redis://127.0.0.1:6379/0", "Redis URL"),
    Option("tenant", _name(validate_tenant_id), None, "tenant id"),
    Option("stream", _name(validate_stream), None, "stream to consume"),
    Option("group", _name(validate_group), None, "consumer group"),
    Option("handler", _handler, None, "handler import path, package.module:function"),
    Option("processes", at_least_int(1), "2", "worker processes (one consumer each)"),
    Option("pool_name", str, "", "consumer name prefix (default: the group)", "EVENTBUS_POOL"),
    Option(
        "hostname_in_names",
        _bool,
        "false",
        "put the hostname in consumer names (several hosts share a group)",
        "EVENTBUS_CONSUMER_HOSTNAME",
    ),
    Option("retry_delays", _delays, "1,4,16", "seconds before each retry, e.g. 1,4,16"),
    Option("max_retries", _optional_int, "", "retries before the DLQ (default: one per delay)"),
    Option(
        "handler_timeout_s",
        at_least_float(0),
        "0",
        "a handler running longer is killed and counts as a failed attempt (0 = off)",
    ),
    Option("reclaim_idle_ms", at_least_int(1), "60000", "entries pending this long are reclaimed"),
    Option("reclaim_interval_s", at_least_float(0.1), "15", "how often the reclaimer runs"),
    Option("max_deliveries", at_least_int(1), "5", "deliveries before an entry counts as poison"),
    Option("sweep_interval_s", at_least_float(0.1), "60", "how often the DLQ sweeper runs"),
    Option(
        "dlq_max_age_s",
        at_least_float(0),
        "1209600",
        "dead letters older than this are deleted (0 = never; default 14 days)",
    ),
    Option("dlq_max_len", at_least_int(0), "10000", "DLQ length cap (0 = none)"),
    Option(
        "dlq_min_age_s",
        at_least_float(0),
        "86400",
        "the length cap never deletes dead letters younger than this",
    ),
    Option(
        "consumer_idle_ms",
        at_least_int(1),
        "3600000",
        "consumer names idle this long with nothing pending are removed",
    ),
    Option("maxlen", at_least_int(0), "1000", "stream retention target (entries; 0 = never trim)"),
    Option("batch_size", at_least_int(1), "100", "entries per read"),
    Option("block_ms", at_least_int(1), "2000", "longest blocking read (stop takes about that)"),
    Option(
        "grace_period_s",
        at_least_float(0),
        "30",
        "on SIGTERM, how long workers may finish the event in hand before being killed",
    ),
    Option(
        "max_restarts_per_minute",
        at_least_int(1),
        "10",
        "worker restarts allowed per minute before respawning pauses (logged loudly)",
    ),
    Option("log_level", _choice(*LEVELS), "info", "log level"),
    Option("log_format", _choice("auto", "json", "console"), "json", "log format"),
)


@dataclass(frozen=True)
class PoolSettings:
    redis_url: str
    tenant: str
    stream: str
    group: str
    handler: str
    processes: int = 2
    pool_name: str = ""
    hostname_in_names: bool = False
    retry_delays: tuple[float, ...] = (1.0, 4.0, 16.0)
    max_retries: int | None = None
    handler_timeout_s: float = 0.0
    reclaim_idle_ms: int = 60_000
    reclaim_interval_s: float = 15.0
    max_deliveries: int = 5
    sweep_interval_s: float = 60.0
    dlq_max_age_s: float = 14 * 86400.0
    dlq_max_len: int = 10_000
    dlq_min_age_s: float = 86400.0
    consumer_idle_ms: int = 3_600_000
    maxlen: int = 1000
    batch_size: int = 100
    block_ms: int = 2000
    grace_period_s: float = 30.0
    max_restarts_per_minute: int = 10
    log_level: str = "info"
    log_format: str = "json"
    env_file: str | None = None

    # -- derived -------------------------------------------------------------------------

    def consumer_name(self, index: int) -> str:
        """Stable per slot, so a restarted worker resumes its own pending entries."""
        prefix = self.pool_name or self.group
        if self.hostname_in_names:
            host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
            prefix = f"{host}-{prefix}"
        return validate_consumer(f"{prefix}-{index}")

    def retry_policy(self) -> RetryPolicy:
        retries = len(self.retry_delays) if self.max_retries is None else self.max_retries
        return RetryPolicy(retries, self.retry_delays)

    def bus_settings(self) -> BusSettings:
        return BusSettings(maxlen=self.maxlen)

    def consumer_settings(self) -> ConsumerSettings:
        return ConsumerSettings(
            count=self.batch_size,
            block_ms=self.block_ms,
            reclaim_idle_ms=self.reclaim_idle_ms,
            reclaim_interval_s=self.reclaim_interval_s,
            max_deliveries=self.max_deliveries,
        )


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file", default=None, help="KEY=VALUE file read at start and again on SIGHUP"
    )
    for opt in OPTIONS:
        default = "required" if opt.default is None else (opt.default or "unset")
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.name.split("_")[-1].upper(),
            help=f"{opt.help} [env {opt.env_name}; default {default}]",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> PoolSettings:
    """Build settings from parsed flags, the env file and the environment."""
    env: dict[str, str] = dict(os.environ if environ is None else environ)
    env_file = getattr(args, "env_file", None) or env.get("EVENTBUS_ENV_FILE")
    if env_file:
        env.update(read_env_file(env_file))
    values: dict[str, Any] = {"env_file": env_file}
    for opt in OPTIONS:
        flag_value = getattr(args, opt.name, None)
        if flag_value is not None:
            raw, source = flag_value, opt.flag
        elif opt.env_name in env:
            raw, source = env[opt.env_name], opt.env_name
        else:
            raw, source = opt.default, "default"
        if raw is None:
            raise SettingsError(f"{opt.flag} / {opt.env_name} is required ({opt.help})")
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise SettingsError(
                f"bad value {raw!r} for {opt.flag} / {opt.env_name} (from {source}): {exc}"
            ) from None
    settings = PoolSettings(**values)
    try:
        settings.consumer_name(0)
        settings.retry_policy()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return settings


def parse_settings(
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    prog: str = "eventbus-supervisor",
) -> PoolSettings:
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return resolve(parser.parse_args(argv), environ)


def field_names() -> list[str]:
    return [f.name for f in fields(PoolSettings)]
