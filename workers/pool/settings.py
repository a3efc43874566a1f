"""Pool settings, declared once: each field of :class:`PoolSettings` carries its type,
default, parser and help; its flag (``--name-with-dashes``) and env twin (``EVENTBUS_NAME``
unless declared otherwise) follow from its name. ``--help`` is generated from this
declaration and the README's table is tested against it. Library defaults come from
``eventbus.settings`` / ``eventbus.retry``. :mod:`workers.pool.sources` is the only module
that reads the environment, and ``read_env_file`` is the only reader of an env file.

Where values come from and in which order (flag > ``--env-file`` > environment >
``--config`` > default): :mod:`workers.pool.sources`.

Why not pydantic-settings (tried against these rules): its CLI makes a second flag of an
env alias (``--eventbus-pool``) and its --help shows no env twin; its env-file reader
(python-dotenv, one more dependency) silently ignores a missing file and expands
``${VAR}``; the environment beats the env file and errors are multi-line ValidationErrors
naming fields, not flags. After overriding sources, help and errors little would be left.
Why not a pydantic model: values arrive as text and are read by the small parsers the
``eventbus`` CLI uses too (``workers.parsers``), so there is one set of rules; a frozen
dataclass is what the supervisor and workers already use and pickle.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Annotated, Any, get_args, get_type_hints

from eventbus.keys import validate_consumer, validate_group, validate_stream, validate_tenant_id
from eventbus.logs import LEVELS, Format
from eventbus.retry import RETRY_DELAYS, RetryPolicy
from eventbus.settings import DEFAULT_REDIS_URL, BusSettings, ConsumerSettings
from workers.parsers import (
    at_least_float,
    at_least_int,
    boolean,
    import_path,
    one_of,
    or_none,
    seconds_list,
)
from workers.pool.config import Subscription
from workers.pool.envfile import ENV_PREFIX as ENV_PREFIX
from workers.pool.envfile import SettingsError as SettingsError
from workers.pool.envfile import handler_environment as handler_environment
from workers.pool.envfile import read_env_file as read_env_file


@dataclass(frozen=True)
class Setting:
    """Metadata of one field: how its text is read, what --help says, an irregular env name."""

    parse: Callable[[str], Any]  # text -> value; ValueError says what is wrong
    help: str
    env: str = ""  # the env twin when it is not EVENTBUS_<NAME>
    required: bool = False  # unless a config file gives [[subscription]] tables


def _retry_delays(raw: str) -> tuple[float, ...]:
    delays = seconds_list(raw)
    RetryPolicy(delays=delays)  # the library's rule: non-empty, finite, >= 0
    return delays


def _name_prefix(raw: str) -> str:
    return validate_consumer(raw) if raw else raw


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """One pool: (tenant, stream, group, handler) x N processes, and how it runs."""

    env_file: Annotated[
        str | None,
        Setting(
            or_none(str), "KEY=VALUE file (EnvironmentFile syntax) read at start and on SIGHUP"
        ),
    ] = None
    config: Annotated[
        str | None,
        Setting(
            or_none(str),
            "TOML file: these settings and [[subscription]] tables (read at start and on SIGHUP)",
        ),
    ] = None
    redis_url: Annotated[str, Setting(str, "Redis URL")] = DEFAULT_REDIS_URL
    redis_cluster: Annotated[
        bool,
        Setting(boolean, "the Redis URL is a seed node of a Redis Cluster (it finds the others)"),
    ] = False
    # One subscription; a config file's [[subscription]] tables replace these four.
    tenant: Annotated[str, Setting(validate_tenant_id, "tenant id", required=True)] = ""
    stream: Annotated[str, Setting(validate_stream, "stream to consume", required=True)] = ""
    group: Annotated[str, Setting(validate_group, "consumer group", required=True)] = ""
    handler: Annotated[
        str,
        Setting(import_path, "handler import path, package.module:function", required=True),
    ] = ""
    processes: Annotated[int, Setting(at_least_int(1), "worker processes (one consumer each)")] = 2
    pool_name: Annotated[
        str, Setting(_name_prefix, "consumer name prefix (unset: the group)", env="EVENTBUS_POOL")
    ] = ""
    hostname_in_names: Annotated[
        bool,
        Setting(
            boolean,
            "put the hostname in consumer names (several hosts share a group)",
            env="EVENTBUS_CONSUMER_HOSTNAME",
        ),
    ] = False
    retry_delays: Annotated[
        tuple[float, ...], Setting(_retry_delays, "seconds before each retry, e.g. 1,4,16")
    ] = RETRY_DELAYS
    max_retries: Annotated[
        int | None,
        Setting(or_none(at_least_int(0)), "retries before the DLQ (unset: one per delay)"),
    ] = None
    handler_timeout_s: Annotated[
        float,
        Setting(
            at_least_float(0),
            "a handler running longer is killed and counts as a failed attempt (0 = off)",
        ),
    ] = 0.0
    reclaim_idle_ms: Annotated[
        int, Setting(at_least_int(1), "entries pending this long are reclaimed")
    ] = ConsumerSettings.reclaim_idle_ms
    reclaim_interval_s: Annotated[
        float, Setting(at_least_float(0.1), "how often the reclaimer runs")
    ] = ConsumerSettings.reclaim_interval_s
    max_deliveries: Annotated[
        int, Setting(at_least_int(1), "deliveries before an entry counts as poison")
    ] = ConsumerSettings.max_deliveries
    sweep_interval_s: Annotated[
        float, Setting(at_least_float(0.1), "how often the DLQ sweeper runs")
    ] = 60.0
    dlq_max_age_s: Annotated[
        float,
        Setting(at_least_float(0), "dead letters older than this are deleted (0 = never; 14 days)"),
    ] = 14 * 86400.0
    dlq_max_len: Annotated[int, Setting(at_least_int(0), "DLQ length cap (0 = none)")] = 10_000
    dlq_min_age_s: Annotated[
        float,
        Setting(at_least_float(0), "the length cap never deletes dead letters younger than this"),
    ] = 86400.0
    consumer_idle_ms: Annotated[
        int,
        Setting(at_least_int(1), "consumer names idle this long with nothing pending are removed"),
    ] = 3_600_000
    maxlen: Annotated[
        int, Setting(at_least_int(0), "stream retention target (entries; 0 = never trim)")
    ] = BusSettings.maxlen
    batch_size: Annotated[int, Setting(at_least_int(1), "entries per read")] = (
        ConsumerSettings.count
    )
    block_ms: Annotated[
        int, Setting(at_least_int(1), "longest blocking read (stop takes about that)")
    ] = ConsumerSettings.block_ms
    grace_period_s: Annotated[
        float,
        Setting(
            at_least_float(0),
            "on SIGTERM, how long workers may finish the event in hand before being killed",
        ),
    ] = 30.0
    max_restarts_per_minute: Annotated[
        int,
        Setting(
            at_least_int(1),
            "worker restarts allowed per minute before respawning pauses (logged loudly)",
        ),
    ] = 10
    metrics_port: Annotated[
        int,
        Setting(
            at_least_int(0),
            "serve /metrics, /healthz and /readyz on this port (0 = off; needs eventbus[metrics])",
        ),
    ] = 0
    metrics_host: Annotated[str, Setting(str, "address the metrics endpoint binds")] = "127.0.0.1"
    metrics_max_tenants: Annotated[
        int,
        Setting(
            at_least_int(0),
            "tenant label values on /metrics; the other tenants are summed under "
            "tenant=_other (0 = no cap)",
        ),
    ] = 100
    watchdog_grace_s: Annotated[
        float,
        Setting(
            at_least_float(0),
            "the systemd watchdog is no longer fed once the pool is not ready for this long",
        ),
    ] = 60.0
    log_level: Annotated[str, Setting(one_of(*LEVELS), "log level: " + ", ".join(LEVELS))] = "info"
    log_format: Annotated[
        str, Setting(one_of(*get_args(Format)), "log format: " + ", ".join(get_args(Format)))
    ] = "json"
    # Agent guards (README "Agent guards"); 0 turns a limit off.
    max_hops: Annotated[
        int, Setting(at_least_int(0), "agents allowed in one call_chain (0 = no limit)")
    ] = BusSettings.max_hops
    max_visits: Annotated[
        int, Setting(at_least_int(0), "times one agent may appear in a call_chain (0 = any)")
    ] = BusSettings.max_visits
    budget_events: Annotated[
        int, Setting(at_least_int(0), "events per request (correlation id; 0 = no budget)")
    ] = BusSettings.budget_events
    budget_units: Annotated[
        float, Setting(at_least_float(0), "cost units per request (ctx.charge; 0 = no budget)")
    ] = BusSettings.budget_units
    trace: Annotated[
        bool, Setting(boolean, "record each request's causal tree (eventbus trace)")
    ] = BusSettings.trace
    request_ttl_s: Annotated[
        float,
        Setting(
            at_least_float(1),
            "a request's budget and trace expire this long after its last event",
        ),
    ] = BusSettings.request_ttl_s
    #: What the pool consumes (not a flag): the config file's tables, or the four above.
    subscriptions: tuple[Subscription, ...] = ()
    #: Per-tenant agent guards (not flags): the config file's ``[tenants.<id>]`` tables,
    #: setting name -> value, over the pool-wide values above for that tenant.
    tenant_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------

    def consumer_name(self, index: int) -> str:
        """Stable per slot, so a restarted worker resumes its own pending entries."""
        prefix = self.pool_name or self.group or "pool"
        if self.hostname_in_names:
            host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
            prefix = f"{host}-{prefix}"
        return validate_consumer(f"{prefix}-{index}")

    def retry_policy(self) -> RetryPolicy:
        retries = len(self.retry_delays) if self.max_retries is None else self.max_retries
        return RetryPolicy(retries, self.retry_delays)

    def bus_settings(self, tenant: str | None = None) -> BusSettings:
        """The bus settings of ``tenant``'s buses: the pool's, with the tenant's own
        ``[tenants.<id>]`` values (agent guards) over them."""
        own = self.tenant_settings.get(tenant, {}) if tenant else {}
        return replace(self._pool_bus_settings(), **own)

    def _pool_bus_settings(self) -> BusSettings:
        return BusSettings(
            maxlen=self.maxlen,
            max_hops=self.max_hops,
            max_visits=self.max_visits,
            budget_events=self.budget_events,
            budget_units=self.budget_units,
            trace=self.trace,
            request_ttl_s=self.request_ttl_s,
        )

    def consumer_settings(self) -> ConsumerSettings:
        return ConsumerSettings(
            count=self.batch_size,
            block_ms=self.block_ms,
            reclaim_idle_ms=self.reclaim_idle_ms,
            reclaim_interval_s=self.reclaim_interval_s,
            max_deliveries=self.max_deliveries,
        )


# -- the declaration as the outside sees it ---------------------------------------------------


def as_text(value: object) -> str:
    """A value as it would be typed (the inverse of the parsers): for --help, the README
    and values that arrive typed, e.g. from a config file."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(as_text(v) for v in value)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Option:
    """One setting as the outside sees it (derived from a field of PoolSettings)."""

    name: str  # the field; the flag is --name-with-dashes
    env_name: str
    default: Any  # dataclasses.MISSING when required
    parse_text: Callable[[str], Any]
    help: str
    must: bool = False  # required unless a config file gives subscriptions

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.must or self.default is MISSING

    @property
    def default_text(self) -> str:
        """As --help and the README show it: ``required``, ``unset`` or the value."""
        return "required" if self.required else (as_text(self.default) or "unset")

    @property
    def label(self) -> str:
        return f"{self.flag} / {self.env_name}"

    @property
    def metavar(self) -> str:
        if isinstance(self.default, bool):
            return "BOOL"
        if self.name.endswith("_ms"):
            return "MS"
        if self.name.endswith("_s"):
            return "SECONDS"
        if isinstance(self.default, int):
            return "N"
        return self.name.rsplit("_", 1)[-1].upper()

    def parse(self, raw: object) -> Any:
        """Text as typed, or a typed value (as a config file gives it) read the same way."""
        return self.parse_text(raw if isinstance(raw, str) else as_text(raw))


def _options() -> tuple[Option, ...]:
    hints = get_type_hints(PoolSettings, include_extras=True)
    out = []
    for f in fields(PoolSettings):
        meta = next(
            (m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Setting)),
            None,
        )
        if meta is None:  # not a setting (subscriptions)
            continue
        env_name = meta.env or ENV_PREFIX + f.name.upper()
        out.append(Option(f.name, env_name, f.default, meta.parse, meta.help, meta.required))
    return tuple(out)


OPTIONS: tuple[Option, ...] = _options()
