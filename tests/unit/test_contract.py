"""The wire contract: the committed JSON Schema and the decoder accept and refuse the same
events. One table of decoded-form events drives both: a real 2020-12 validator
(``jsonschema``) reads the row as it is, the decoder reads it encoded as a stream entry."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from jsonschema import Draft202012Validator, validators

from eventbus import records
from eventbus.contract import render
from eventbus.errors import DecodeError, UnsupportedVersion
from eventbus.schemas import REQUIRED_FIELDS, AgentEvent, json_schema
from tests.unit.strategies import events

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_FILE = DOCS / "agent-event.schema.json"
WIRE_FORMAT = DOCS / "wire-format.md"

#: The required fields as docs/wire-format.md lists them (written out, not imported, so
#: that the code cannot drop one unnoticed).
DOCUMENTED_REQUIRED = (
    "event_id",
    "version",
    "event_type",
    "timestamp",
    "tenant_id",
    "priority",
    "source_agent_id",
    "call_chain",
    "data",
    "context_refs",
)
JSON_FIELDS = ("call_chain", "context_refs", "data")

GOOD: dict[str, Any] = {
    "event_id": "5f0c7a1e-2b8d-4c57-9a36-0d6f0e2c9b11",
    "version": "1.0",
    "event_type": "task_assigned",
    "timestamp": "2026-11-25T17:07:14.123456+00:00",
    "tenant_id": "acme",
    "priority": "normal",
    "source_agent_id": "planner",
    "call_chain": ["user", "planner"],
    "data": {"topic": "release notes"},
    "context_refs": ["s3://bucket/doc.md"],
}
MISSING = object()  # a row value that removes the field


def event(**changes: Any) -> dict[str, Any]:
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not MISSING}


def ok(name: str, **changes: Any) -> Any:
    return pytest.param(event(**changes), None, id=f"valid: {name}")


def bad(name: str, named: str, **changes: Any) -> Any:
    """An invalid row; ``named`` is what the decoder's error must mention."""
    return pytest.param(event(**changes), named, id=f"invalid: {name}")


ROWS = [
    ok("the example event"),
    ok("optional ids present", correlation_id="corr-1", parent_event_id="order-42:attempt-1"),
    ok("optional ids null (absent on the wire)", correlation_id=None, parent_event_id=None),
    ok("newer minor version with an extra field", version="1.7", added_in_1_7="new"),
    ok("minor version 10", version="1.10"),
    ok("reserved bus field", _retry_count="2"),
    ok("empty data and context_refs", data={}, context_refs=[]),
    ok("nested data", data={"a": [1, 2.5, None, True, {"b": "c"}]}),
    ok("source is the only agent", source_agent_id="cli", call_chain=["cli"]),
    ok("agent ids are free text", source_agent_id='ü ,"[]', call_chain=['ü ,"[]']),
    ok("last event type", event_type="agent_health"),
    ok("priority critical", priority="critical"),
    ok("priority low", priority="low"),
    # event ids: 1 to 128 printable ASCII characters, no space
    ok("event id of 1 character", event_id="e"),
    ok("event id of 128 characters", event_id="e" * 128),
    ok("event id with every kind of printable", event_id="!~:{}*?\"'\\/"),
    ok("correlation id of 128 characters", correlation_id="c" * 128),
    # tenant ids: 1 to 64 of A-Z a-z 0-9 _ - . (not . or ..)
    ok("tenant id of 1 character", tenant_id="a"),
    ok("tenant id of 64 characters", tenant_id="t" * 64),
    ok("tenant id of three dots", tenant_id="..."),
    ok("tenant id with every allowed kind", tenant_id="Acme_EU-west.2"),
    # timestamps: seconds and an explicit offset
    ok("timestamp in Z", timestamp="2026-11-25T17:07:14Z"),
    ok("timestamp with a negative offset", timestamp="2026-11-25T17:07:14-23:59"),
    ok("timestamp with -00:00", timestamp="2026-11-25T17:07:14-00:00"),
    ok("timestamp with 1 fraction digit", timestamp="2026-11-25T17:07:14.5+05:30"),
    ok("timestamp with nanoseconds", timestamp="2026-11-25T17:07:14.123456789Z"),
    ok("timestamp at the edges of the clock", timestamp="9999-12-31T23:59:59+00:00"),
    #
    *(bad(f"{name} missing", name, **{name: MISSING}) for name in DOCUMENTED_REQUIRED),
    bad("empty event id", "event_id", event_id=""),
    bad("event id of 129 characters", "event_id", event_id="e" * 129),
    bad("event id with a space", "event_id", event_id="order 42"),
    bad("event id with a tab", "event_id", event_id="order\t42"),
    bad("event id with a non-ASCII letter", "event_id", event_id="caf\u00e9"),
    bad("event id with a final newline", "event_id", event_id="order-42\n"),
    bad("correlation id with a space", "correlation_id", correlation_id="corr 1"),
    bad("correlation id of 129 characters", "correlation_id", correlation_id="c" * 129),
    bad("empty correlation id", "correlation_id", correlation_id=""),
    bad("parent event id with a final newline", "parent_event_id", parent_event_id="p\n"),
    bad("empty tenant id", "tenant_id", tenant_id=""),
    bad("tenant id of 65 characters", "tenant_id", tenant_id="t" * 65),
    bad("tenant id with a colon", "tenant_id", tenant_id="a:b"),
    bad("tenant id with a glob", "tenant_id", tenant_id="*"),
    bad("tenant id '.'", "tenant_id", tenant_id="."),
    bad("tenant id '..'", "tenant_id", tenant_id=".."),
    bad("tenant id with a final newline", "tenant_id", tenant_id="acme\n"),
    bad("version without minor", "version", version="1"),
    bad("version with empty minor", "version", version="1."),
    bad("version without major", "version", version=".0"),
    bad("version with a patch number", "version", version="1.0.0"),
    bad("version with a leading zero", "version", version="01.0"),
    bad("minor with a leading zero", "version", version="1.01"),
    bad("version with a prefix", "version", version="v1.0"),
    bad("version with another script's digit", "version", version="\u0661.0"),
    bad("version with a final newline", "version", version="1.0\n"),
    bad("newer major version", "version", version="2.0"),
    bad("older major version", "version", version="0.9"),
    bad("unknown event type", "event_type", event_type="nope"),
    bad("event type by its Python name", "event_type", event_type="TASK_ASSIGNED"),
    bad("unknown priority", "priority", priority="urgent"),
    bad("empty priority", "priority", priority=""),
    bad("priority in upper case", "priority", priority="NORMAL"),
    bad("naive timestamp", "timestamp", timestamp="2026-11-25T17:07:14"),
    bad("epoch timestamp", "timestamp", timestamp="1700000000"),
    bad("date only", "timestamp", timestamp="2026-11-25"),
    bad("timestamp without seconds", "timestamp", timestamp="2026-11-25T17:07Z"),
    bad("timestamp with a space for T", "timestamp", timestamp="2026-11-25 17:07:14Z"),
    bad("timestamp in lower case", "timestamp", timestamp="2026-11-25t17:07:14z"),
    bad("offset without a colon", "timestamp", timestamp="2026-11-25T17:07:14+0000"),
    bad("offset with seconds", "timestamp", timestamp="2026-11-25T17:07:14+00:00:30"),
    bad("offset of 24 hours", "timestamp", timestamp="2026-11-25T17:07:14+24:00"),
    bad("hour 24", "timestamp", timestamp="2026-11-25T24:00:00Z"),
    bad("month 13", "timestamp", timestamp="2026-13-01T00:00:00Z"),
    bad("leap second", "timestamp", timestamp="2026-12-31T23:59:60Z"),
    bad("empty fraction", "timestamp", timestamp="2026-11-25T17:07:14.Z"),
    bad("timestamp with a final newline", "timestamp", timestamp="2026-11-25T17:07:14Z\n"),
    bad("empty source agent", "source_agent_id", source_agent_id="", call_chain=[""]),
    bad("empty call chain", "call_chain", call_chain=[]),
    bad("empty agent in the chain", "call_chain", call_chain=["", "planner"]),
    bad("call chain as a string", "call_chain", call_chain="planner"),
    bad("call chain of numbers", "call_chain", call_chain=[1, "planner"]),
    bad("data as an array", "data", data=[1, 2]),
    bad("data as a string", "data", data="text"),
    bad("data null", "data", data=None),
    bad("context refs as a string", "context_refs", context_refs="s3://bucket/doc.md"),
    bad("context refs of numbers", "context_refs", context_refs=[1]),
]

#: Rules a JSON Schema cannot state: the schema accepts these, the decoder refuses them.
DECODER_ONLY = [
    bad("source agent not in the chain", "source_agent_id", source_agent_id="intruder"),
    bad("day that does not exist", "timestamp", timestamp="2026-02-30T00:00:00Z"),
    bad("year 0", "timestamp", timestamp="0000-01-01T00:00:00Z"),
]


def to_wire(row: dict[str, Any]) -> dict[str, str]:
    """The stream entry of a decoded-form event: JSON fields as compact JSON, ``None``
    as an absent field, everything else must already be a string."""
    out: dict[str, str] = {}
    for name, value in row.items():
        if name in JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        elif value is not None:
            assert isinstance(value, str), f"{name}={value!r} has no wire form"
            out[name] = value
    return out


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


@pytest.mark.parametrize(("row", "named"), ROWS)
def test_the_schema_accepts_exactly_the_valid_rows(
    validator: Draft202012Validator, row: dict[str, Any], named: str | None
) -> None:
    errors = list(validator.iter_errors(row))

    assert (errors == []) == (named is None), [e.message for e in errors]


@pytest.mark.parametrize(("row", "named"), ROWS)
def test_the_decoder_accepts_exactly_the_valid_rows_and_names_the_field(
    row: dict[str, Any], named: str | None
) -> None:
    if named is None:
        decoded = AgentEvent.from_stream_dict(to_wire(row))
        # Every field as given (unknown ones dropped); the timestamp is read as an instant.
        expected = {name: row.get(name) for name in AgentEvent.model_fields}
        del expected["timestamp"]
        assert decoded.model_dump(mode="json", exclude={"timestamp"}) == expected
        return
    with pytest.raises(DecodeError) as info:
        AgentEvent.from_stream_dict(to_wire(row))
    assert named in str(info.value)


@pytest.mark.parametrize(("row", "named"), DECODER_ONLY)
def test_rules_only_the_decoder_checks(
    validator: Draft202012Validator, row: dict[str, Any], named: str
) -> None:
    assert list(validator.iter_errors(row)) == []
    with pytest.raises(DecodeError, match=named):
        AgentEvent.from_stream_dict(to_wire(row))


def test_a_newer_major_version_is_unsupported_not_just_invalid() -> None:
    with pytest.raises(UnsupportedVersion):
        AgentEvent.from_stream_dict(to_wire(event(version="2.0")))


@settings(max_examples=100, deadline=None)
@given(an_event=events())
def test_every_event_the_model_makes_is_valid_under_the_schema(
    validator: Draft202012Validator, an_event: AgentEvent
) -> None:
    dumped = an_event.model_dump(mode="json")

    assert list(validator.iter_errors(dumped)) == []
    assert AgentEvent.from_stream_dict(to_wire(dumped)) == an_event


# -- the schema document --------------------------------------------------------------


def test_committed_json_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render(), (
        "docs/agent-event.schema.json is stale: regenerate it with "
        "`python -m eventbus.schemas > docs/agent-event.schema.json`"
    )
    assert json.loads(render()) == json_schema()


def test_the_schema_declares_2020_12_and_is_valid_in_it() -> None:
    schema = json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert validators.validator_for(schema) is Draft202012Validator
    Draft202012Validator.check_schema(schema)


def test_required_fields_are_the_documented_ones_in_code_schema_and_doc() -> None:
    doc_rows = re.findall(
        r"^\| `(\w+)` \| (yes|no) \|", WIRE_FORMAT.read_text(encoding="utf-8"), re.M
    )

    assert REQUIRED_FIELDS == DOCUMENTED_REQUIRED
    assert tuple(json_schema()["required"]) == DOCUMENTED_REQUIRED
    assert tuple(name for name, req in doc_rows if req == "yes") == DOCUMENTED_REQUIRED
    assert {name for name, req in doc_rows if req == "no"} == {
        "correlation_id",
        "parent_event_id",
    }
    assert set(AgentEvent.model_fields) == {name for name, _ in doc_rows}


def test_the_schema_allows_unknown_properties_for_newer_minor_versions() -> None:
    assert json_schema()["additionalProperties"] is True


# -- the document ---------------------------------------------------------------------


def test_every_dead_letter_reason_is_documented() -> None:
    section = (
        WIRE_FORMAT.read_text(encoding="utf-8")
        .split("## Dead-letter reasons", 1)[1]
        .split("\n## ", 1)[0]
    )
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))

    reasons = {v for k, v in vars(records).items() if k.startswith("REASON_")}
    assert "wrong_tenant" in reasons
    assert documented == reasons


def test_the_redis_cli_example_is_a_valid_event() -> None:
    text = WIRE_FORMAT.read_text(encoding="utf-8")
    command = re.search(r"^redis-cli XADD .*?(?<!\\)$", text, re.M | re.S)
    assert command is not None
    args = shlex.split(command[0].replace("\\\n", " "))
    pairs = args[4:]  # redis-cli XADD key '*' then field value ...
    entry = dict(zip(pairs[::2], pairs[1::2], strict=True))

    event = AgentEvent.from_stream_dict(entry)

    assert event.event_id == "demo-1" and set(entry) == set(DOCUMENTED_REQUIRED)
