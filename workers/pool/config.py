"""The pool's config file (``--config`` / ``EVENTBUS_CONFIG``): TOML with pool-wide
settings at the top (the names of :class:`~workers.pool.settings.PoolSettings`, ``_`` or
``-``) and one ``[[subscription]]`` table per subscription::

    processes = 4
    redis_url = "redis://redis.internal:6379/0"

    [[subscription]]
    tenant = "*"            # every tenant that has this stream, including new ones
    stream = "tasks"
    group = "writers"
    handler = "myagents.writer:handle"
    weight = 2              # optional, default 1
    max_in_flight = 8       # optional: events of one tenant in handlers pool-wide

Errors name the file, the table and the bad value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventbus.keys import validate_group, validate_stream, validate_tenant_id
from workers.parsers import import_path
from workers.pool.envfile import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (setup.cfg: tomli, tomllib's backport)
    import tomli as tomllib

#: ``tenant = "*"``: every tenant that has the stream (see README "One pool for all tenants").
EVERY_TENANT = "*"


@dataclass(frozen=True)
class Subscription:
    """One (tenant, stream, group, handler) a pool consumes, with its fair share."""

    tenant: str  # a tenant id, or EVERY_TENANT
    stream: str
    group: str
    handler: str  # package.module:function
    weight: float = 1.0  # share of the workers' time relative to the others
    max_in_flight: int | None = None  # events of one tenant in handlers, pool-wide

    @property
    def every_tenant(self) -> bool:
        return self.tenant == EVERY_TENANT

    def for_tenant(self, tenant: str) -> Subscription:
        """This subscription for one concrete tenant (of a ``"*"`` subscription)."""
        return Subscription(
            tenant, self.stream, self.group, self.handler, self.weight, self.max_in_flight
        )

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.stream}/{self.group}"


def _tenant(raw: str) -> str:
    return raw if raw == EVERY_TENANT else validate_tenant_id(raw)


def _weight(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError("must be a number")
    if not (math.isfinite(raw) and raw > 0):
        raise ValueError("must be a number > 0")
    return float(raw)


def _max_in_flight(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ValueError("must be an integer >= 1")
    return raw


def _text(parse: Any) -> Any:
    def parse_text(raw: object) -> object:
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return parse(raw)

    return parse_text


_FIELDS: dict[str, Any] = {
    "tenant": _text(_tenant),
    "stream": _text(validate_stream),
    "group": _text(validate_group),
    "handler": _text(import_path),
    "weight": _weight,
    "max_in_flight": _max_in_flight,
}
_REQUIRED = ("tenant", "stream", "group", "handler")


def subscription(table: Mapping[str, object], where: str) -> Subscription:
    """One ``[[subscription]]`` table, checked; ``where`` names it in errors."""
    unknown = sorted(set(table) - _FIELDS.keys())
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in table]
    if missing:
        raise SettingsError(f"{where}: missing {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        try:
            values[key] = _FIELDS[key](raw)
        except ValueError as exc:
            raise SettingsError(f"{where}: bad value {raw!r} for {key}: {exc}") from None
    return Subscription(**values)


def check_unique(subs: Iterable[Subscription], where: str) -> tuple[Subscription, ...]:
    """A (tenant, stream, group) is consumed by one subscription only."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for sub in subs:
        key = (sub.tenant, sub.stream, sub.group)
        if key in seen:
            raise SettingsError(f"{where}: subscription {sub.label} is listed twice")
        seen.add(key)
        out.append(sub)
    return tuple(out)


def expand(subs: Sequence[Subscription], tenants: Sequence[str]) -> list[Subscription]:
    """Concrete subscriptions: each ``"*"`` one for every tenant in ``tenants``; a
    subscription naming the tenant itself wins over the ``"*"`` one (its weight, handler)."""
    concrete = [s for s in subs if not s.every_tenant]
    named = {(s.tenant, s.stream, s.group) for s in concrete}
    out = list(concrete)
    for sub in subs:
        if sub.every_tenant:
            out.extend(
                sub.for_tenant(t) for t in tenants if (t, sub.stream, sub.group) not in named
            )
    return out


#: The settings a ``[tenants.<id>]`` table may set for one tenant (the agent guards): they
#: override the pool-wide values for that tenant's buses (publishes of its handlers, and
#: the screening of its entries before its handlers see them).
PER_TENANT = ("max_hops", "max_visits", "budget_events", "budget_units", "trace", "request_ttl_s")


@dataclass(frozen=True)
class ConfigFile:
    """What a config file holds: settings (by setting name, typed), subscriptions, and
    per-tenant settings (tenant id -> setting name -> raw value, checked by the caller)."""

    path: str
    settings: dict[str, object]
    subscriptions: tuple[Subscription, ...]
    tenants: dict[str, dict[str, object]]


def _tenant_tables(data: object, where: str) -> dict[str, dict[str, object]]:
    """The ``[tenants.<id>]`` tables: valid tenant ids, known keys (values unchecked)."""
    if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
        raise SettingsError(f"{where}: 'tenants' must be [tenants.<id>] tables")
    out: dict[str, dict[str, object]] = {}
    for tenant, table in data.items():
        try:
            validate_tenant_id(tenant)
        except ValueError as exc:
            raise SettingsError(f"{where}, [tenants.{tenant}]: {exc}") from None
        values = {k.replace("-", "_"): v for k, v in table.items()}
        unknown = sorted(k for k in values if k not in PER_TENANT)
        if unknown:
            raise SettingsError(
                f"{where}, [tenants.{tenant}]: unknown key(s) {', '.join(unknown)} "
                f"(a tenant table sets {', '.join(PER_TENANT)})"
            )
        out[tenant] = values
    return out


def read_config(path: str, setting_names: Iterable[str]) -> ConfigFile:
    """Read and check ``path``; unknown settings and malformed tables are refused."""
    where = f"config {path}"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read {where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{where}: not valid TOML: {exc}") from None
    tenants = _tenant_tables(data.pop("tenants", {}), where)
    tables = data.pop("subscription", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SettingsError(f"{where}: 'subscription' must be [[subscription]] tables")
    names = set(setting_names) - {"config"}
    settings = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in settings if k not in names)
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    subs = [subscription(t, f"{where}, subscription {i + 1}") for i, t in enumerate(tables)]
    return ConfigFile(path, settings, check_unique(subs, where), tenants)
