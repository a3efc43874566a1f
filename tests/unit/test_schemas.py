"""AgentEvent: validation, the flat wire format and its exact round trip (no Redis)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventbus.errors import DecodeError, UnsupportedVersion
from eventbus.schemas import AgentEvent, EventPriority, EventType
from tests.unit.strategies import events


def make(**overrides: Any) -> AgentEvent:
    values: dict[str, Any] = {
        "event_type": EventType.TASK_ASSIGNED,
        "tenant_id": "acme",
        "source_agent_id": "planner",
        "call_chain": ["user", "planner"],
    }
    values.update(overrides)
    return AgentEvent(**values)


def wire(**overrides: Any) -> dict[str, str]:
    fields = make().to_stream_dict()
    fields.update(overrides)
    return fields


# -- creating and validating ----------------------------------------------------------


def test_create_fills_defaults_and_keeps_given_values() -> None:
    event = make(data={"task": "summarise"}, priority="high")

    assert event.version == "1.0"
    assert event.priority is EventPriority.HIGH
    assert event.event_type is EventType.TASK_ASSIGNED
    assert event.timestamp.tzinfo is not None
    assert event.data == {"task": "summarise"}
    assert event.context_refs == []
    assert event.correlation_id is None and event.parent_event_id is None
    assert len(event.event_id) == 36  # a uuid4 string


def test_two_events_get_distinct_event_ids() -> None:
    assert make().event_id != make().event_id


def test_timestamp_text_with_an_offset_is_read_as_that_instant() -> None:
    event = make(timestamp="2026-11-25T17:07:14.5Z", correlation_id="order-42:attempt-1")

    assert event.timestamp == datetime(2026, 11, 25, 17, 7, 14, 500000, tzinfo=timezone.utc)
    assert event.correlation_id == "order-42:attempt-1"


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"call_chain": []}, "call_chain", "at least 1 item"),
        ({"call_chain": ["user", ""], "source_agent_id": "user"}, "call_chain.1", "1 character"),
        ({"source_agent_id": "intruder"}, "", "must appear in call_chain"),
        ({"source_agent_id": ""}, "source_agent_id", "at least 1 character"),
        ({"tenant_id": "a:b"}, "tenant_id", "'a:b'"),
        ({"tenant_id": "*"}, "tenant_id", "'*'"),
        ({"tenant_id": ""}, "tenant_id", "''"),
        ({"tenant_id": "x" * 65}, "tenant_id", "1 to 64 characters"),
        ({"timestamp": datetime(2024, 1, 1, 12, 0)}, "timestamp", "timezone"),
        ({"data": {"tags": {"a", "b"}}}, "data", "JSON-serialisable"),
        ({"data": {"score": float("nan")}}, "data", "JSON-serialisable"),
        ({"data": {"score": float("inf")}}, "data", "JSON-serialisable"),
        ({"data": {"pair": (1, 2)}}, "data", "comes back unchanged"),
        ({"data": {"by_id": {1: "x"}}}, "data", "comes back unchanged"),
        ({"event_type": "nope"}, "event_type", "task_assigned"),
        ({"priority": "urgent"}, "priority", "critical"),
        ({"version": "2.0"}, "version", "unsupported schema version '2.0'"),
        ({"version": "one"}, "version", "must look like '1.0'"),
        ({"version": "01.0"}, "version", "MAJOR.MINOR"),
        ({"version": "\u0661.0"}, "version", "MAJOR.MINOR"),  # an Arabic-Indic digit one
        ({"event_id": "has space"}, "event_id", "'has space'"),
        ({"event_id": "x" * 129}, "event_id", "at most 128 characters"),
        ({"correlation_id": "has space"}, "correlation_id", "'has space'"),
        ({"correlation_id": ""}, "correlation_id", "at least 1 character"),
        ({"parent_event_id": "caf\u00e9"}, "parent_event_id", "'caf\u00e9'"),
        ({"timestamp": "1700000000"}, "timestamp", "ISO 8601"),
        ({"timestamp": "2024-01-01T12:00:00"}, "timestamp", "UTC offset"),
        ({"timestamp": 1700000000}, "timestamp", "a datetime or an ISO 8601 str"),
        (
            {"timestamp": datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30)))},
            "timestamp",
            "whole minutes",
        ),
        ({"unknown": 1}, "unknown", "Extra inputs are not permitted"),
    ],
)
def test_invalid_event_raises_validation_error_naming_the_problem(
    overrides: dict[str, Any], field: str, hint: str
) -> None:
    with pytest.raises(ValidationError) as info:
        make(**overrides)

    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(p) for p in errors[0]["loc"]) == field
    assert hint in str(info.value)


def test_assignment_is_validated_too() -> None:
    event = make()
    with pytest.raises(ValidationError, match="tenant_id"):
        event.tenant_id = "other:tenant"
    assert event.tenant_id == "acme"


# -- the wire format ------------------------------------------------------------------


def test_to_stream_dict_gives_only_str_values_with_json_fields() -> None:
    event = make(
        data={"n": 1, "nested": {"ok": True, "list": [1.5, None]}},
        context_refs=["s3://bucket/ctx.json"],
        correlation_id="corr-1",
    )

    fields = event.to_stream_dict()

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    assert json.loads(fields["call_chain"]) == ["user", "planner"]
    assert json.loads(fields["data"]) == event.data
    assert json.loads(fields["context_refs"]) == ["s3://bucket/ctx.json"]
    assert fields["timestamp"] == event.timestamp.isoformat()
    assert fields["correlation_id"] == "corr-1"
    assert "parent_event_id" not in fields  # None is omitted, not written as "None"


def test_from_stream_dict_accepts_str_and_bytes_keys_and_values() -> None:
    event = make(data={"text": "héllo ✓"})
    fields = event.to_stream_dict()
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    mixed = {
        (k.encode() if i % 2 else k): (v if i % 2 else v.encode())
        for i, (k, v) in enumerate(fields.items())
    }

    assert AgentEvent.from_stream_dict(fields) == event
    assert AgentEvent.from_stream_dict(as_bytes) == event
    assert AgentEvent.from_stream_dict(mixed) == event


def test_from_stream_dict_ignores_reserved_and_unknown_minor_version_fields() -> None:
    fields = wire(version="1.7", _retry_count="2", _dlq_reason="x", added_in_1_7="new")

    event = AgentEvent.from_stream_dict(fields)

    assert event.version == "1.7"
    assert "added_in_1_7" not in event.model_dump()


def test_unknown_major_version_is_unsupported_version_before_anything_else_is_parsed() -> None:
    # The rest of the entry is garbage too: the version must be rejected first.
    fields = wire(version="2.0", call_chain="{not json", timestamp="yesterday")
    del fields["event_type"]

    with pytest.raises(UnsupportedVersion, match=r"'2\.0'") as info:
        AgentEvent.from_stream_dict(fields)

    assert isinstance(info.value, DecodeError)
    assert info.value.__cause__ is None  # nothing below it was attempted


@pytest.mark.parametrize("name", ["event_id", "timestamp", "priority", "data", "context_refs"])
def test_decoding_never_fills_in_a_missing_field_the_constructor_would_default(
    name: str,
) -> None:
    fields = wire()
    del fields[name]

    with pytest.raises(DecodeError) as info:
        AgentEvent.from_stream_dict(fields)

    assert str(info.value) == f"missing required field(s) '{name}'"


def test_a_decode_error_lists_every_missing_field_in_field_order() -> None:
    fields = {"version": "1.0", "event_type": "task_assigned", "tenant_id": "acme"}

    with pytest.raises(DecodeError) as info:
        AgentEvent.from_stream_dict(fields)

    assert str(info.value) == (
        "missing required field(s) 'event_id', 'timestamp', 'priority', 'source_agent_id', "
        "'call_chain', 'data', 'context_refs'"
    )


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda f: f.pop("event_type"), "event_type"),
        (lambda f: f.pop("call_chain"), "call_chain"),
        (lambda f: f.pop("version"), "version"),
        (lambda f: f.update(version="1"), "1.0"),
        (lambda f: f.update(call_chain='["user",'), "call_chain"),
        (lambda f: f.update(data="{'single': 'quotes'}"), "data"),
        (lambda f: f.update(context_refs="nope"), "context_refs"),
        (lambda f: f.update(data="[1, 2]"), "data"),
        (lambda f: f.update(timestamp="2024-01-01T00:00:00"), "timestamp"),
        (lambda f: f.update(timestamp="1700000000"), "timestamp"),
        (lambda f: f.update(correlation_id="has space"), "correlation_id"),
        (lambda f: f.update(version="1.0.0"), "MAJOR.MINOR"),
        (lambda f: f.update(tenant_id="a:b"), "tenant_id"),
        (lambda f: f.update(event_type="unheard_of"), "event_type"),
    ],
)
def test_bad_entry_raises_decode_error_naming_the_field(mutate: Any, named: str) -> None:
    fields = wire()
    mutate(fields)

    with pytest.raises(DecodeError, match=named):
        AgentEvent.from_stream_dict(fields)


@pytest.mark.parametrize("bad", ["a:b", ".", "x" * 65])
def test_a_bad_tenant_is_refused_right_after_a_good_one(bad: str) -> None:
    # A good tenant id is checked once and remembered; the next one is checked again.
    for _ in range(2):
        assert AgentEvent.from_stream_dict(wire()).tenant_id == "acme"
    with pytest.raises(DecodeError, match="tenant_id"):
        AgentEvent.from_stream_dict(wire(tenant_id=bad))
    with pytest.raises(ValidationError, match="tenant_id"):
        make(tenant_id=bad)
    assert AgentEvent.from_stream_dict(wire()).tenant_id == "acme"


def test_non_utf8_bytes_raise_decode_error_naming_the_field() -> None:
    fields: dict[str | bytes, str | bytes] = {k.encode(): v.encode() for k, v in wire().items()}
    fields[b"call_chain"] = b'["\xff\xfe"]'

    with pytest.raises(DecodeError, match="call_chain.*UTF-8"):
        AgentEvent.from_stream_dict(fields)


@pytest.mark.parametrize("data", ['{"score": NaN}', '{"score": -Infinity}', '{"big": 1e999}'])
def test_wire_data_json_cannot_write_back_is_a_decode_error(data: str) -> None:
    with pytest.raises(DecodeError, match="data"):
        AgentEvent.from_stream_dict(wire(data=data))


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        AgentEvent.from_stream_dict({})


# -- exact round trip (property) ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(event=events(), as_bytes=st.booleans())
def test_every_field_survives_the_wire_round_trip_exactly(
    event: AgentEvent, as_bytes: bool
) -> None:
    fields = event.to_stream_dict()
    raw = {k.encode(): v.encode() for k, v in fields.items()} if as_bytes else fields

    back = AgentEvent.from_stream_dict(raw)

    assert back == event
    # == compares datetimes as instants and 1 == 1.0: check offsets and JSON types too.
    assert back.timestamp.utcoffset() == event.timestamp.utcoffset()
    assert back.timestamp.replace(tzinfo=None) == event.timestamp.replace(tzinfo=None)
    assert back.to_stream_dict() == fields
    assert back.correlation_id == event.correlation_id
    assert back.parent_event_id == event.parent_event_id
