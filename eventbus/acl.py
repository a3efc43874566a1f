"""Tenant security enforced by Redis: ``ACL SETUSER`` lines for a tenant's users.

Each user may touch only keys matching ``~t:{tenant}:*`` (braces literal: the hash tag)
and run only the commands its role needs (the Lua scripts' inner commands included: Redis
checks those too). There is
no KEYS, SCAN, FLUSHALL, FLUSHDB, SORT, CONFIG, DEBUG, nor anything keyless that could
reach another tenant's data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from eventbus.keys import (
    TenantKeys,
    every_tenant_pattern,
    platform_pattern,
    validate_tenant_id,
)

# Needed on every connection: workers name their connection; scripts are loaded once
# (SCRIPT LOAD; pipelines ask SCRIPT EXISTS first) and run with EVALSHA. redis-py also
# sends CLIENT SETINFO, which Redis 7.0 does not know and redis-py ignores when refused:
# it is left out so that the lines work on 7.0. A Redis Cluster client reads the slot map
# (CLUSTER SLOTS) when it connects and after a failover, and the command table (COMMAND)
# once: keyless metadata, no data.
_CLUSTER = ("cluster|slots", "command")
_CONNECTION = (
    "ping",
    "client|setname",
    "evalsha",
    "script|load",
    "script|exists",
    *_CLUSTER,
)
# What publish.lua runs, plus the read-only introspection a producer may want.
_PUBLISH = (
    "get",
    "set",
    "sadd",
    "smembers",
    "xadd",
    "xlen",
    "xtrim",
    "xrange",
    "xpending",
    "xinfo|groups",
    "xinfo|stream",
    "time",
    # the agent guards in publish.lua: halted requests, budgets, spent marks, the trace
    "hexists",
    "hmget",
    "hincrby",
    "pexpire",
    "zadd",
    "zremrangebyscore",
    # the durability knob (min_replicas): WAIT for replicas after the write
    "wait",
)
# Consumers, the pool's periodic jobs, the DLQ and the operator CLI.
_CONSUME = (
    "xreadgroup",
    "xread",
    "xack",
    "xclaim",
    "xautoclaim",
    "xpending",
    "xrange",
    "xrevrange",
    "xdel",
    "xtrim",
    "xlen",
    "xadd",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "xgroup|create",
    "xgroup|delconsumer",
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zcard",
    "exists",
    "get",
    "set",
    "del",
    "sadd",
    "smembers",
    "sismember",  # TenantEventBus.stream_known (the CLI and the web console)
    "time",
    # agent guards: the stopped requests (read each 0.5 s) and ctx.charge (charge.lua);
    # the operator's halt / resume / budget (CLI, web console); a budget is set in one
    # MULTI/EXEC (keyless; the commands inside are checked as usual)
    "hkeys",
    "hget",
    "hincrbyfloat",
    "hset",
    "hdel",
    "zscore",
    "multi",
    "exec",
    "discard",
)

# The web console's read-only operator: overview, DLQ pages, the audit stream and a
# request's trace. No write command at all, and its keys are granted read-only (%R~) as
# a second fence. No script either, not even EVALSHA_RO of a `no-writes` script: running
# one needs a loaded script (SCRIPT LOAD would let the user load any Lua, a busy loop
# included) and a read-only script can still keep the server busy. The trace is read
# with plain XRANGE (eventbus.trace.read_trace_plain); the request's halted mark and
# budget with HKEYS / HEXISTS / HMGET / ZSCORE, all read-only.
_VIEW = (
    "ping",
    "client|setname",
    *_CLUSTER,
    "smembers",
    "sismember",
    "exists",
    "xlen",
    "xrange",
    "xrevrange",
    "xpending",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "zcard",
    "time",
    "hkeys",
    "hexists",
    "hmget",
    "zscore",
)

ROLES: dict[str, tuple[str, ...]] = {
    "publisher": _CONNECTION + _PUBLISH,
    "worker": _CONNECTION + tuple(dict.fromkeys(_PUBLISH + _CONSUME)),
    "viewer": _VIEW,
}
#: Roles whose keys are granted read-only (``%R~``): they can change nothing.
READ_ONLY_ROLES = ("viewer",)
#: Never granted to a tenant user (checked by the tests).
FORBIDDEN = (
    "keys",
    "scan",
    "flushall",
    "flushdb",
    "sort",
    "config",
    "debug",
    "eval",
    "script|flush",
    "function",
    "migrate",
    "object",
    "randomkey",
    "swapdb",
    "acl",
)


@dataclass(frozen=True)
class AclUser:
    """What every generated user has: a name, a password, a role, and its ACL line."""

    username: str
    password: str
    role: str

    def setuser_args(self) -> list[str]:
        """The arguments of ``ACL SETUSER`` (e.g. for ``redis.execute_command``)."""
        raise NotImplementedError

    def setuser_line(self) -> str:
        return "ACL SETUSER " + " ".join(self.setuser_args())

    def url(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0) -> str:
        return f"redis://{self.username}:{self.password}@{host}:{port}/{db}"


@dataclass(frozen=True)
class TenantUser(AclUser):
    tenant_id: str

    def setuser_args(self) -> list[str]:
        """The arguments of ``ACL SETUSER`` (e.g. for ``redis.execute_command``)."""
        access = "%R~" if self.role in READ_ONLY_ROLES else "~"
        pattern = access + TenantKeys(self.tenant_id).acl_pattern()
        commands = [f"+{c}" for c in ROLES[self.role]]
        return [
            self.username,
            "reset",
            "on",
            f">{self.password}",
            pattern,
            "resetchannels",
            "-@all",
            *commands,
        ]


def tenant_users(
    tenant_id: str,
    *,
    worker_password: str | None = None,
    publisher_password: str | None = None,
    viewer_password: str | None = None,
) -> list[TenantUser]:
    """The worker, publisher and (read-only, for the web console) viewer users of a tenant
    (random passwords unless given)."""
    validate_tenant_id(tenant_id)
    return [
        TenantUser(
            f"eventbus-{tenant_id}-worker",
            worker_password or secrets.token_urlsafe(24),
            "worker",
            tenant_id,
        ),
        TenantUser(
            f"eventbus-{tenant_id}-publisher",
            publisher_password or secrets.token_urlsafe(24),
            "publisher",
            tenant_id,
        ),
        TenantUser(
            f"eventbus-{tenant_id}-viewer",
            viewer_password or secrets.token_urlsafe(24),
            "viewer",
            tenant_id,
        ),
    ]


# -- the platform (one pool for all tenants) ------------------------------------------------

#: The platform pool reads the tenant registry; the provisioner (the platform's own
#: onboarding code or an operator) writes it. Neither is a tenant's user.
_REGISTRY_READ = ("smembers", "get")
_REGISTRY_WRITE = ("sadd", "srem", "smembers", "incrby", "get", "multi", "exec")


@dataclass(frozen=True)
class PlatformUser(AclUser):
    """A platform user: ``pool`` consumes every tenant's streams (keys ``~t:*``, the worker
    role's commands, the registry read-only); ``provisioner`` only edits the registry."""

    def setuser_args(self) -> list[str]:
        if self.role == "pool":
            patterns = [f"~{every_tenant_pattern()}", f"%R~{platform_pattern()}"]
            commands = tuple(dict.fromkeys(ROLES["worker"] + _REGISTRY_READ))
        else:
            patterns = [f"~{platform_pattern()}"]
            commands = _CONNECTION + _REGISTRY_WRITE
        return [
            self.username,
            "reset",
            "on",
            f">{self.password}",
            *patterns,
            "resetchannels",
            "-@all",
            *(f"+{c}" for c in commands),
        ]


def platform_users(
    *, pool_password: str | None = None, provisioner_password: str | None = None
) -> list[PlatformUser]:
    """The platform pool's user and the registry's provisioner (random passwords unless
    given)."""
    return [
        PlatformUser("eventbus-platform-pool", pool_password or secrets.token_urlsafe(24), "pool"),
        PlatformUser(
            "eventbus-platform-provisioner",
            provisioner_password or secrets.token_urlsafe(24),
            "provisioner",
        ),
    ]
