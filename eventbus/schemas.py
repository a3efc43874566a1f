"""Events: the AgentEvent model and its wire format (one flat string map per stream entry).

Wire format (every value a UTF-8 string; see docs/wire-format.md):
scalars as plain text, ``call_chain``/``context_refs``/``data`` as compact JSON,
``timestamp`` as ISO 8601 with its UTC offset, ``correlation_id``/``parent_event_id``
omitted when None. Field names starting with ``_`` are reserved for the bus. Decoding
never invents a value: the defaults belong to the constructor. :func:`json_schema` states
the same rules for other languages, built from the same constants.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eventbus.errors import DecodeError, UnsupportedVersion
from eventbus.keys import EVENT_ID_CHAR, EVENT_ID_MAX, validate_tenant_id

#: Schema major versions this code can read. A minor bump only adds optional fields.
SUPPORTED_MAJOR_VERSIONS = frozenset({1})
SCHEMA_VERSION = "1.0"
RESERVED_PREFIX = "_"
#: The fields an event may lack (None in Python, absent on the wire); all others are
#: required on the wire (REQUIRED_FIELDS, below the model).
OPTIONAL_FIELDS = frozenset({"correlation_id", "parent_event_id"})

_JSON_FIELDS = ("call_chain", "context_refs", "data")

# The text rules, as regexes that Python, ECMA-262 (JSON Schema) and RE2 read alike:
# [0-9], not \d (which in Python also matches other scripts' digits).
#: A plain decimal number without leading zeros.
NUMBER_PATTERN = "(?:0|[1-9][0-9]*)"
#: ``MAJOR.MINOR`` (the major number captured).
VERSION_PATTERN = f"({NUMBER_PATTERN})\\.{NUMBER_PATTERN}"
#: ISO 8601 / RFC 3339 date and time with seconds and an explicit UTC offset ('Z' or
#: +-HH:MM). Fractions of any length are read and truncated to microseconds.
TIMESTAMP_PATTERN = (
    "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_VERSION_RE = re.compile(VERSION_PATTERN)
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


class EventPriority(str, Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class EventType(str, Enum):
    TASK_ASSIGNED = "task_assigned"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    HANDOFF_REQUEST = "handoff_request"
    HANDOFF_VALIDATED = "handoff_validated"
    HANDOFF_REJECTED = "handoff_rejected"
    CONTEXT_UPDATED = "context_updated"
    AGENT_REGISTERED = "agent_registered"
    AGENT_HEALTH = "agent_health"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)  # json.dumps would build this encoder at every call


def _dumps_strs(values: list[str]) -> str:
    """``_dumps`` of a list of str, as the encoder writes each str, without its set-up."""
    try:
        return "[" + ",".join(map(json.encoder.encode_basestring, values)) + "]"
    except TypeError:  # an item is not a str (the list was changed in place): the encoder
        return _dumps(values)


def _not_json(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON has no infinity
        raise ValueError(f"{text} is out of range")
    return value


# Wire JSON: only what _dumps can write back (no NaN, Infinity, overflowing floats), so a
# decoded ``data`` is plain JSON by construction and needs no second check (see _WIRE).
_WIRE_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
# The scanner decode() runs after skipping whitespace (set in __init__, not in the stubs).
_WIRE_SCAN: Callable[[str, int], tuple[Any, int]] = _WIRE_DECODER.scan_once  # type: ignore[attr-defined]


def _wire_json(text: str) -> Any:
    """``_WIRE_DECODER.decode(text)``, without its two regex passes for the whitespace
    that compact JSON does not have (~1 us per field); the full decode when there is some,
    or to report what is wrong."""
    try:
        value, end = _WIRE_SCAN(text, 0)
        if end == len(text):
            return value
    except StopIteration:
        pass
    return _WIRE_DECODER.decode(text)


#: Validation context of events decoded from the wire (their version is checked already).
_WIRE = {"from_wire": True}


def major_version(version: str) -> int:
    """The major number of a ``"MAJOR.MINOR"`` version string (ValueError if malformed)."""
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise ValueError(f"version must look like '1.0' (MAJOR.MINOR), got {version!r}")
    return int(match[1])


def check_timestamp(value: Any) -> Any:
    """``value`` if it may become an event timestamp: a str matching TIMESTAMP_PATTERN (so
    not an epoch number, a naive or a date-only text, which pydantic alone would take) or
    a datetime whose offset is whole minutes (what isoformat writes as +-HH:MM)."""
    if isinstance(value, str):
        if _TIMESTAMP_RE.fullmatch(value) is None:
            raise ValueError(
                "timestamp must be ISO 8601 with seconds and a UTC offset ('Z' or +-HH:MM), "
                f"e.g. '2026-11-25T17:07:14+00:00'; got {value!r}"
            )
    elif isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is not None and offset % timedelta(minutes=1):
            raise ValueError(f"timestamp offset must be whole minutes, got {offset}")
    else:
        raise ValueError(f"timestamp must be a datetime or an ISO 8601 str, got {value!r}")
    return value


#: The event-id rule of :mod:`eventbus.keys`, checked by pydantic-core itself (its regex
#: ``$`` is the end of the text, as in ``fullmatch``): the decoder checks it at every event.
EventId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=EVENT_ID_MAX, pattern=f"^{EVENT_ID_CHAR}+$"),
]
Timestamp = Annotated[AwareDatetime, BeforeValidator(check_timestamp)]
AgentId = Annotated[str, StringConstraints(min_length=1)]


#: The last tenant id :class:`AgentEvent` found valid: a consumer decodes one tenant's
#: events, so its name is checked once, not at every event.
_VALID_TENANT: list[str | None] = [None]


class AgentEvent(BaseModel):
    """One event between agents: who sent it, through which chain, about what."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    event_id: EventId = Field(default_factory=lambda: str(uuid.uuid4()))
    version: str = SCHEMA_VERSION
    event_type: EventType
    timestamp: Timestamp = Field(default_factory=_utcnow)
    tenant_id: str
    priority: EventPriority = EventPriority.NORMAL
    source_agent_id: AgentId
    #: Agents the work passed through, oldest first; the source is one of them.
    call_chain: list[AgentId] = Field(min_length=1)
    #: Small inline payload (JSON-serialisable). Put large context elsewhere and reference it.
    data: dict[str, Any] = Field(default_factory=dict)
    #: References (URIs, keys) to large context kept outside the bus.
    context_refs: list[str] = Field(default_factory=list)
    #: Optional ids follow the event-id rule too: a correlation id may end up in a key.
    correlation_id: EventId | None = None
    parent_event_id: EventId | None = None

    @field_validator("tenant_id")
    @classmethod
    def _check_tenant(cls, v: str) -> str:
        if v == _VALID_TENANT[0]:  # the tenant of the last event checked: valid
            return v
        _VALID_TENANT[0] = validate_tenant_id(v)
        return v

    @field_validator("version")
    @classmethod
    def _check_version(cls, v: str, info: ValidationInfo) -> str:
        if info.context is _WIRE:
            return v
        major = major_version(v)
        if major not in SUPPORTED_MAJOR_VERSIONS:
            raise ValueError(
                f"unsupported schema version {v!r}: this code reads major "
                f"version(s) {sorted(SUPPORTED_MAJOR_VERSIONS)}"
            )
        return v

    @field_validator("data")
    @classmethod
    def _check_data(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.context is _WIRE:
            return v  # decoded by _WIRE_DECODER: plain JSON that dumps back as it came
        try:
            encoded = _dumps(v)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"data must be JSON-serialisable: {exc}") from exc
        if json.loads(encoded) != v:  # tuples, non-str keys: they would not come back as-is
            raise ValueError(
                "data must be plain JSON (dicts with str keys, lists, str, int, float, bool, "
                "None) so that it comes back unchanged; got something JSON would convert"
            )
        return v

    @model_validator(mode="after")
    def _source_in_chain(self) -> AgentEvent:
        if self.source_agent_id not in self.call_chain:
            raise ValueError(
                f"source_agent_id {self.source_agent_id!r} must appear in "
                f"call_chain {self.call_chain!r}"
            )
        return self

    # -- wire format -------------------------------------------------------------------

    def to_stream_dict(self) -> dict[str, str]:
        """Encode as a flat ``{field: str}`` map, ready for XADD."""
        out = {
            "event_id": self.event_id,
            "version": self.version,
            "event_type": self.event_type.value,
            "timestamp": self.timestamp.isoformat(),
            "tenant_id": self.tenant_id,
            "priority": self.priority.value,
            "source_agent_id": self.source_agent_id,
            "call_chain": _dumps_strs(self.call_chain),
            "data": _dumps(self.data),
            "context_refs": _dumps_strs(self.context_refs),
        }
        if self.correlation_id is not None:  # the optional fields are left out when None
            out["correlation_id"] = self.correlation_id
        if self.parent_event_id is not None:
            out["parent_event_id"] = self.parent_event_id
        return out

    @classmethod
    def from_stream_dict(cls, fields: Mapping[Any, Any]) -> AgentEvent:
        """Decode a stream entry (``str`` or ``bytes`` keys and values).

        Unknown fields (from a newer minor version) and reserved ``_`` fields are ignored;
        nothing is filled in: a missing required field is an error. Raises
        :class:`DecodeError` (or :class:`UnsupportedVersion`) naming what is wrong.
        """
        decoded = _decode_fields(fields)
        _check_version(decoded)  # first: a newer major may have other fields
        if not decoded.keys() >= _REQUIRED:
            missing = ", ".join(repr(n) for n in REQUIRED_FIELDS if n not in decoded)
            raise DecodeError(f"missing required field(s) {missing}")
        names = _FIELD_NAMES if cls is AgentEvent else cls.model_fields
        values: dict[str, Any] = {k: v for k, v in decoded.items() if k in names}
        for name in _JSON_FIELDS:
            if name in values:
                try:
                    values[name] = _wire_json(values[name])
                except ValueError as exc:
                    raise DecodeError(f"field {name!r} is not valid JSON: {exc}") from exc
        try:
            return cls.model_validate(values, context=_WIRE)
        except ValidationError as exc:
            raise DecodeError(describe(exc)) from exc


_FIELD_NAMES = frozenset(AgentEvent.model_fields)
#: Fields every entry carries (docs/wire-format.md), in the model's order.
REQUIRED_FIELDS = tuple(name for name in AgentEvent.model_fields if name not in OPTIONAL_FIELDS)
_REQUIRED = frozenset(REQUIRED_FIELDS)


def _check_version(decoded: Mapping[str, str]) -> None:
    version = decoded.get("version")
    if version is None:
        raise DecodeError("missing required field(s) 'version'")
    try:
        major = major_version(version)
    except ValueError as exc:
        raise DecodeError(str(exc)) from exc
    if major not in SUPPORTED_MAJOR_VERSIONS:
        raise UnsupportedVersion(
            f"unsupported schema version {version!r} (event_id="
            f"{decoded.get('event_id')!r}); this code reads major version(s) "
            f"{sorted(SUPPORTED_MAJOR_VERSIONS)}"
        )


def _decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    try:  # what the consumer reads: bytes, valid UTF-8
        return {k.decode(): v.decode() for k, v in fields.items()}
    except (AttributeError, UnicodeDecodeError):
        pass  # str, or a bad entry: field by field, to name what is wrong
    out: dict[str, str] = {}
    for key, value in fields.items():
        try:
            k = key.decode() if isinstance(key, bytes) else key
            v = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError as exc:
            raise DecodeError(f"field {key!r} is not valid UTF-8: {exc}") from exc
        if not isinstance(k, str) or not isinstance(v, str):
            raise DecodeError(f"field {key!r} must be str or bytes, got {type(value).__name__}")
        out[k] = v
    return out


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line, ``invalid event: field: problem; field: problem``,
    naming the bad value (cut at 40 characters) where pydantic's message does not."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        given = err.get("input")
        if isinstance(given, (str, int, float)) and repr(given) not in msg and loc:
            if isinstance(given, str) and len(given) > 40:
                given = given[:40] + "…"
            msg += f" (got {given!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid event: " + "; ".join(parts)


#: W3C trace context fields an entry may carry (written by ``publish`` when a span is
#: active, or by any producer; see eventbus.tracing and docs/wire-format.md). Wire-only:
#: not part of the model, not ``_``-prefixed because foreign producers may write them.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a decoded event: see :mod:`eventbus.contract`."""
    from eventbus.contract import json_schema as build  # it imports this module

    return build()


if __name__ == "__main__":  # python -m eventbus.schemas > docs/agent-event.schema.json
    import sys

    from eventbus.contract import render

    sys.stdout.write(render())
