"""The wire contract for other languages (pure): the JSON Schema of a decoded event,
built from the constants and patterns the decoder in :mod:`eventbus.schemas` checks, so
the two cannot drift. docs/agent-event.schema.json is its output
(``python -m eventbus.contract > docs/agent-event.schema.json``; a test compares them).
"""

from __future__ import annotations

import json
from typing import Any

from eventbus.keys import EVENT_ID_CHAR, EVENT_ID_MAX, NAME_CHAR, NAME_MAX, RESERVED_NAMES
from eventbus.schemas import (
    NUMBER_PATTERN,
    REQUIRED_FIELDS,
    SUPPORTED_MAJOR_VERSIONS,
    TIMESTAMP_PATTERN,
    TRACEPARENT,
    TRACESTATE,
    EventPriority,
    EventType,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _text(pattern: str, refused: tuple[str, ...] = (), **keywords: Any) -> dict[str, Any]:
    """A string that ``pattern`` matches whole, other than the ``refused`` values. In
    Python, Java and PCRE regexes ``$`` also matches before a final newline, so "no
    newline" is said too (ECMA-262 and RE2 agree)."""
    newline: dict[str, Any] = {"pattern": "\n"}
    not_ = {"anyOf": [newline, {"enum": list(refused)}]} if refused else newline
    return {"type": "string", **keywords, "pattern": f"^{pattern}$", "not": not_}


def json_schema() -> dict[str, Any]:
    """JSON Schema of an event in its decoded form (``data`` an object, ``call_chain`` an
    array). It says every rule the decoder checks except two a schema cannot say:
    ``source_agent_id`` appears in ``call_chain``, and the date exists in the calendar."""
    majors = sorted(SUPPORTED_MAJOR_VERSIONS)
    optional_id = {"anyOf": [{"$ref": "#/$defs/event_id"}, {"type": "null"}]}
    agent_id = {"type": "string", "minLength": 1}
    return {
        "$schema": DIALECT,
        "title": "AgentEvent",
        "description": (
            f"An event of schema version {' or '.join(f'{m}.x' for m in majors)}, decoded "
            "from its stream entry (docs/wire-format.md). Other properties are allowed: a "
            "newer minor version may add optional ones, and '_' ones are the bus's."
        ),
        "type": "object",
        "required": list(REQUIRED_FIELDS),
        "additionalProperties": True,
        "properties": {
            "event_id": {"$ref": "#/$defs/event_id"},
            "version": _text(f"(?:{'|'.join(map(str, majors))})\\.{NUMBER_PATTERN}"),
            "event_type": {"type": "string", "enum": [t.value for t in EventType]},
            "timestamp": _text(TIMESTAMP_PATTERN, format="date-time"),
            "tenant_id": _text(NAME_CHAR + "+", RESERVED_NAMES, minLength=1, maxLength=NAME_MAX),
            "priority": {"type": "string", "enum": [p.value for p in EventPriority]},
            "source_agent_id": {**agent_id, "description": "must appear in call_chain"},
            "call_chain": {"type": "array", "minItems": 1, "items": agent_id},
            "data": {"type": "object"},
            "context_refs": {"type": "array", "items": {"type": "string"}},
            "correlation_id": optional_id,
            "parent_event_id": optional_id,
            TRACEPARENT: _text(
                "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}",
                description="W3C trace context of the publisher's span (optional)",
            ),
            TRACESTATE: {
                "type": "string",
                "description": "W3C tracestate that goes with traceparent (optional)",
            },
        },
        "$defs": {
            "event_id": _text(EVENT_ID_CHAR + "+", minLength=1, maxLength=EVENT_ID_MAX),
        },
    }


def render() -> str:
    """The schema as committed in docs/agent-event.schema.json."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
