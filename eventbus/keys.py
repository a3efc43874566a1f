"""Names and keys: the one place that validates names and derives every Redis key.

Every key of tenant T lives under ``t:{T}:`` (key layout 2), the braces written literally:
``{T}`` is the Redis Cluster hash tag, so all of a tenant's keys share one hash slot and
every multi-key Lua script stays in one slot. Names may only use letters, digits, ``_``,
``-`` and ``.``, so no crafted name can contain ``:`` (our separator), glob characters or
hash-tag braces, and one tenant can never address another tenant's keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from eventbus.errors import InvalidName, TenantMismatch

NAME_MAX = 64
#: Stream names get a little more room than other names (``orders.eu-west.priority``...).
STREAM_NAME_MAX = 128
EVENT_ID_MAX = 128
#: The key layout version (docs/wire-format.md). 1: ``t:T:...`` (no hash tag: single node
#: only); 2: ``t:{T}:...`` (the tenant is the hash tag: single node and Redis Cluster).
KEY_LAYOUT = 2

# The character rules as regex classes, written so that Python, ECMA-262 and RE2 read
# them alike: the JSON Schema (eventbus.schemas.json_schema) is built from them too.
#: One character of a tenant, stream, group or consumer name.
NAME_CHAR = "[A-Za-z0-9_.-]"
#: Names made of these alone are refused (they read as paths).
RESERVED_NAMES = (".", "..")
#: One character of an event id: printable ASCII without the space (0x21 to 0x7e).
#: Event ids end up inside a key (the publish dedupe marker); uuid4 strings, ULIDs and
#: "order-42:attempt-1" style ids all fit.
EVENT_ID_CHAR = "[!-~]"

_NAME_RE = re.compile(NAME_CHAR + "+")
_EVENT_ID_RE = re.compile(EVENT_ID_CHAR + "+")


def _check(kind: str, value: object, max_len: int, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise InvalidName(f"{kind} must be a string, got {type(value).__name__} {value!r}")
    if not 1 <= len(value) <= max_len or not pattern.fullmatch(value):
        allowed = (
            "printable ASCII without spaces"
            if pattern is _EVENT_ID_RE
            else "letters, digits, '_', '-', '.'"
        )
        raise InvalidName(f"invalid {kind} {value!r}: use {allowed}, 1 to {max_len} characters")
    if pattern is _NAME_RE and value in RESERVED_NAMES:
        raise InvalidName(f"invalid {kind} {value!r}: '.' and '..' are reserved")
    return value


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise :class:`InvalidName`."""
    return _check("tenant id", value, NAME_MAX, _NAME_RE)


def validate_stream(value: object) -> str:
    return _check("stream name", value, STREAM_NAME_MAX, _NAME_RE)


def validate_group(value: object) -> str:
    return _check("group name", value, NAME_MAX, _NAME_RE)


def validate_consumer(value: object) -> str:
    return _check("consumer name", value, NAME_MAX, _NAME_RE)


def validate_event_id(value: object) -> str:
    return _check("event id", value, EVENT_ID_MAX, _EVENT_ID_RE)


def validate_correlation_id(value: object) -> str:
    """Correlation ids end up inside keys (budget, trace): the event id rule."""
    return _check("correlation id", value, EVENT_ID_MAX, _EVENT_ID_RE)


def check_tenant(expected: str, actual: str, what: str) -> None:
    """The one tenant check: raise :class:`TenantMismatch` unless ``what`` (an event, a DLQ,
    ...) belongs to tenant ``expected``."""
    if actual != expected:
        raise TenantMismatch(f"{what} belongs to tenant {actual!r}, not to tenant {expected!r}")


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (ACL key patterns, SCAN MATCH): ``*``,
    ``?``, ``[``, ``]`` and ``\\`` escaped with a backslash. Braces are literal in Redis
    globs. Valid names hold none of these; this keeps a pattern exact should that change."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


#: The platform's tenant registry (set of tenant ids): outside every tenant's keys, written
#: at provisioning (``eventbus tenants add``), read by platform pools for ``tenant = "*"``.
PLATFORM_TENANTS = "eventbus:{tenants}"  # the tag: the set and its counter share a slot


def platform_tenants() -> str:
    """The platform registry of tenant ids (see README "One pool for all tenants")."""
    return PLATFORM_TENANTS


def platform_tenants_version() -> str:
    """A counter bumped with every change of the registry: pools read it each second and
    the set only when it moved."""
    return PLATFORM_TENANTS + ":version"


def platform_pattern() -> str:
    """The ACL key pattern of the registry's keys (the set and its counter)."""
    return PLATFORM_TENANTS + "*"


def every_tenant_pattern() -> str:
    """The ACL key pattern of every tenant's keys (a platform pool's user)."""
    return "t:*"


@dataclass(frozen=True)
class TenantKeys:
    """Key factory for one tenant. The key catalogue:

    ========================================  ======  =====================================
    key                                       type    what
    ========================================  ======  =====================================
    ``t:{T}:events:{S}``                      stream  the events of stream S
    ``t:{T}:events:{S}:dlq``                  stream  dead letters of stream S (all groups)
    ``t:{T}:events:{S}:retry:{G}``            stream  retries that are due, for group G only
    ``t:{T}:sched:{S}:{G}``                   zset    retries waiting for their time (ms)
    ``t:{T}:dedupe:{S}:{event_id}``           string  publish dedupe marker -> message id
    ``t:{T}:done:{S}:{G}:{event_id}``         string  group G finished the event (dedupe.py)
    ``t:{T}:streams``                         set     names of the tenant's streams
    ``t:{T}:audit``                           stream  operators' actions (web console)
    ``t:{T}:budget:{C}``                      hash    request C's budget: events, units
                                                      used; max_events, max_units
    ``t:{T}:spent``                           zset    requests that spent their budget
                                                      (score: mark expires at, ms)
    ``t:{T}:halted``                          hash    halted requests -> halted at (ms)
    ``t:{T}:trace:{C}``                       stream  request C's causal tree (trace.py)
    ========================================  ======  =====================================

    ``{T}`` is written with its braces (``t:{acme}:events:tasks``): the hash tag. ``{S}``,
    ``{G}``, ``{C}`` and ``{event_id}`` stand for the names, without braces. An event id may
    hold braces itself; Redis takes the *first* ``{...}`` as the tag, which is the tenant's.
    """

    tenant_id: str

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)

    @property
    def tag(self) -> str:
        """The tenant's hash tag: every key below hashes to the slot of this text."""
        return "{" + self.tenant_id + "}"

    @property
    def prefix(self) -> str:
        return f"t:{self.tag}:"

    @property
    def events_prefix(self) -> str:
        return f"{self.prefix}events:"

    def acl_pattern(self) -> str:
        """The glob (ACL ``~pattern``, SCAN MATCH) matching exactly this tenant's keys."""
        return glob_escape(self.prefix) + "*"

    @property
    def legacy_prefix(self) -> str:
        """The prefix of this tenant's keys in key layout 1 (``t:T:``, no hash tag)."""
        return f"t:{self.tenant_id}:"

    def legacy_pattern(self) -> str:
        """The glob matching this tenant's layout-1 keys (none match a layout-2 key)."""
        return glob_escape(self.legacy_prefix) + "*"

    def from_legacy(self, key: str) -> str:
        """The layout-2 name of this tenant's layout-1 key (the suffix is unchanged)."""
        if not key.startswith(self.legacy_prefix):
            raise InvalidName(f"{key!r} is not a layout-1 key of tenant {self.tenant_id!r}")
        return self.prefix + key[len(self.legacy_prefix) :]

    def stream(self, stream: str) -> str:
        return f"{self.events_prefix}{validate_stream(stream)}"

    def dlq(self, stream: str) -> str:
        return f"{self.stream(stream)}:dlq"

    def retry_stream(self, stream: str, group: str) -> str:
        return f"{self.stream(stream)}:retry:{validate_group(group)}"

    def schedule(self, stream: str, group: str) -> str:
        return f"{self.prefix}sched:{validate_stream(stream)}:{validate_group(group)}"

    def dedupe(self, stream: str, event_id: str) -> str:
        return f"{self.prefix}dedupe:{validate_stream(stream)}:{validate_event_id(event_id)}"

    def dedupe_all(self, stream: str, event_ids: Iterable[str]) -> list[str]:
        """:meth:`dedupe` of several events of one stream (its name checked once)."""
        prefix = f"{self.prefix}dedupe:{validate_stream(stream)}:"
        return [prefix + validate_event_id(event_id) for event_id in event_ids]

    def done(self, stream: str, group: str, event_id: str) -> str:
        """Marker: group G of stream S has finished the event (see :mod:`eventbus.dedupe`)."""
        return (
            f"{self.prefix}done:{validate_stream(stream)}:{validate_group(group)}:"
            f"{validate_event_id(event_id)}"
        )

    def audit(self) -> str:
        """The audit stream: who replayed or purged which dead letters, and when."""
        return f"{self.prefix}audit"

    def registry(self) -> str:
        """The set of stream names, so operators can list streams without SCAN."""
        return f"{self.prefix}streams"

    def budget(self, correlation_id: str) -> str:
        """Request C's budget and usage (expires with the request)."""
        return f"{self.prefix}budget:{validate_correlation_id(correlation_id)}"

    def spent(self) -> str:
        """The tenant's requests that spent their budget (one key: one read per refresh)."""
        return f"{self.prefix}spent"

    def halted(self) -> str:
        """The tenant's halted requests (one key: one read per refresh)."""
        return f"{self.prefix}halted"

    def trace(self, correlation_id: str) -> str:
        """Request C's trace: one entry per publish and outcome (capped, expires)."""
        return f"{self.prefix}trace:{validate_correlation_id(correlation_id)}"

    def stream_name_of(self, key: str) -> str | None:
        """The stream name of a main stream key of this tenant, or None for other keys."""
        if not key.startswith(self.events_prefix):
            return None
        rest = key[len(self.events_prefix) :]
        return rest if _NAME_RE.fullmatch(rest) else None
