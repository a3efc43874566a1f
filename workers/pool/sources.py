"""Where the pool's settings come from (the declaration is :mod:`workers.pool.settings`):
the command line, ``--env-file``, the environment and ``--config``, in that order of
precedence, then the defaults. Values arrive in :class:`Source` objects, named mappings, so
an error says where a bad value came from."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, replace
from typing import Any

from workers.pool.config import Subscription, read_config
from workers.pool.envfile import ENV_PREFIX, SettingsError, read_env_file
from workers.pool.settings import OPTIONS, Option, PoolSettings

_BY_NAME = {opt.name: opt for opt in OPTIONS}
_BY_ENV = {opt.env_name: opt for opt in OPTIONS}


@dataclass(frozen=True)
class Source:
    """Values keyed by setting name, as text (or typed, as a config file gives them), and
    what to call their origin in an error: "the command line", "env file X", ..."""

    name: str
    values: Mapping[str, object]


def command_line(args: argparse.Namespace) -> Source:
    given = {o.name: getattr(args, o.name, None) for o in OPTIONS}
    return Source("the command line", {k: v for k, v in given.items() if v is not None})


def environment(environ: Mapping[str, str], name: str = "the environment") -> Source:
    """The EVENTBUS_* variables of ``environ`` that are settings."""
    return Source(name, {_BY_ENV[k].name: v for k, v in environ.items() if k in _BY_ENV})


def env_file(path: str) -> Source:
    """The settings in an env file. An unknown EVENTBUS_* name is refused as a likely
    typo; other variables are the handlers' (see :func:`handler_environment`), and
    EVENTBUS_ENV_FILE is ignored (the file is being read)."""
    variables = read_env_file(path)
    unknown = sorted(k for k in variables if k.startswith(ENV_PREFIX) and k not in _BY_ENV)
    if unknown:
        raise SettingsError(f"--env-file {path!r}: unknown setting(s) {', '.join(unknown)}")
    variables.pop(_BY_NAME["env_file"].env_name, None)
    return environment(variables, f"env file {path}")


def build(
    sources: Sequence[Source],
    subscriptions: Sequence[Subscription] = (),
    tenants: Mapping[str, Mapping[str, object]] | None = None,
    where: str = "",
) -> PoolSettings:
    """Settings from ``sources`` (the first that has a value wins), then the defaults; the
    ``subscriptions`` of a config file, or one from --tenant, --stream, --group, --handler;
    the per-tenant settings of the config file's ``[tenants.<id>]`` tables (``where``)."""
    for given in sources:
        unknown = sorted(set(given.values) - _BY_NAME.keys())
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)} (from {given.name})")
    if subscriptions:
        single = [o.label for o in OPTIONS if o.must and any(o.name in s.values for s in sources)]
        if single:
            raise SettingsError(
                f"{', '.join(single)} given with [[subscription]] tables: use one or the other"
            )
    values = {o.name: _value(o, sources, required=not subscriptions) for o in OPTIONS}
    settings = PoolSettings(**{k: v for k, v in values.items() if v is not MISSING})
    if not subscriptions:
        subscriptions = (
            Subscription(settings.tenant, settings.stream, settings.group, settings.handler),
        )
    per_tenant = {t: _per_tenant(t, values, where) for t, values in (tenants or {}).items()}
    return _checked(
        replace(settings, subscriptions=tuple(subscriptions), tenant_settings=per_tenant)
    )


def _per_tenant(tenant: str, values: Mapping[str, object], where: str) -> dict[str, Any]:
    """One ``[tenants.<id>]`` table's values, parsed like the same settings at the top."""
    out = {}
    for name, raw in values.items():
        opt = _BY_NAME[name]
        try:
            out[name] = opt.parse(raw)
        except ValueError as exc:
            raise SettingsError(
                f"bad value {raw!r} for {name} in [tenants.{tenant}] (from {where}): {exc}"
            ) from None
    return out


def _value(opt: Option, sources: Sequence[Source], required: bool = True) -> Any:
    """The option's value from the first source that has one; MISSING: use the default."""
    source = next((s for s in sources if opt.name in s.values), None)
    if source is None:
        if opt.required and required:
            raise SettingsError(f"{opt.label} is required ({opt.help})")
        return MISSING
    raw = source.values[opt.name]
    try:
        return opt.parse(raw)
    except ValueError as exc:
        raise SettingsError(
            f"bad value {raw!r} for {opt.label} (from {source.name}): {exc}"
        ) from None


def _checked(settings: PoolSettings) -> PoolSettings:
    """Rules across settings: the longest consumer name must be valid."""
    try:
        settings.consumer_name(settings.processes - 1)
    except ValueError as exc:
        names = ", ".join(_BY_NAME[n].label for n in ("pool_name", "group", "hostname_in_names"))
        raise SettingsError(f"consumer names from {names} are not valid: {exc}") from None
    return settings


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> PoolSettings:
    """Settings from parsed flags, the env file they or the environment name, the
    environment and the defaults."""
    sources = [command_line(args), environment(os.environ if environ is None else environ)]
    path = _value(_BY_NAME["env_file"], sources)
    if path not in (None, MISSING):
        sources.insert(1, env_file(path))
    config = _value(_BY_NAME["config"], sources)
    if config in (None, MISSING):
        return build(sources)
    found = read_config(config, _BY_NAME)
    where = f"config {config}"
    return build(
        [*sources, Source(where, found.settings)], found.subscriptions, found.tenants, where
    )
