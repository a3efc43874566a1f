"""Operator CLI, input side: build AgentEvents from flags or from JSON lines on stdin.

Pure (no Redis): every problem is a :class:`InputError` whose one-line message names the
field, and for stdin the line number, so the CLI can print it as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any, TypeVar

from pydantic import ValidationError

from eventbus.entries import encoded_size
from eventbus.schemas import AgentEvent, EventPriority, EventType, describe

E = TypeVar("E", bound=Enum)


class InputError(ValueError):
    """An event given on the command line or on stdin is not valid."""


def parse_enum(enum_cls: type[E], text: str) -> E:
    """An enum member by name (``TASK_ASSIGNED``) or value (``task_assigned``), any case."""
    wanted = text.strip().lower()
    for member in enum_cls:
        if wanted in (member.name.lower(), str(member.value).lower()):
            return member
    names = ", ".join(m.name for m in enum_cls)
    raise InputError(f"unknown {_label(enum_cls)} {text!r} (choose from {names})")


def _label(enum_cls: type[Enum]) -> str:
    return {EventType: "event type", EventPriority: "priority"}.get(enum_cls, enum_cls.__name__)


def build_event(values: dict[str, Any], *, max_bytes: int) -> AgentEvent:
    """Validate AgentEvent fields (enums by name or value) and the encoded size."""
    values = dict(values)
    if isinstance(values.get("event_type"), str):
        values["event_type"] = parse_enum(EventType, values["event_type"])
    if isinstance(values.get("priority"), str):
        values["priority"] = parse_enum(EventPriority, values["priority"])
    try:
        event = AgentEvent.model_validate(values)
    except ValidationError as exc:
        raise InputError(describe(exc)) from None
    size = encoded_size(event.to_stream_dict())
    if size > max_bytes:
        raise InputError(
            f"event is {size} bytes encoded, over the limit of {max_bytes}; keep large "
            "context outside the bus and reference it with context_refs"
        )
    return event


def parse_data(text: str) -> dict[str, Any]:
    """The ``--data`` flag: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--data is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"--data must be a JSON object, got {type(value).__name__}")
    return value


def parse_line(number: int, line: str, tenant: str, *, max_bytes: int) -> AgentEvent:
    """One stdin line: a JSON object of AgentEvent fields; tenant_id defaults to ``tenant``."""
    try:
        values = json.loads(line)
    except ValueError as exc:
        raise InputError(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise InputError(f"line {number}: expected a JSON object, got {type(values).__name__}")
    values.setdefault("tenant_id", tenant)
    if values["tenant_id"] != tenant:
        raise InputError(
            f"line {number}: event is for tenant {values['tenant_id']!r}, not {tenant!r} "
            "(one run publishes for one tenant)"
        )
    try:
        return build_event(values, max_bytes=max_bytes)
    except InputError as exc:
        raise InputError(f"line {number}: {exc}") from None


def read_batches(
    lines: Iterable[bytes | str], tenant: str, *, batch_size: int, max_bytes: int
) -> Iterator[list[AgentEvent]]:
    """Validated batches of events from JSON lines (UTF-8; blank lines skipped).

    A batch is yielded only when all its lines are valid, so a bad line stops the run
    before anything of its batch is published.
    """
    batch: list[AgentEvent] = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise InputError(f"line {number}: not valid UTF-8 ({exc})") from None
        if not line.strip():
            continue
        batch.append(parse_line(number, line, tenant, max_bytes=max_bytes))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
