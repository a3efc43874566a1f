"""Operator CLI, output side: tables for people and stable JSON shapes for machines.

Everything here returns strings or dicts; only ``workers.cli`` prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from eventbus.dlq import DeadLetter
from eventbus.errors import DecodeError, TenantMismatch
from eventbus.keys import check_tenant
from eventbus.redis_io import lossy_fields
from eventbus.requests import Budget
from eventbus.schemas import AgentEvent
from eventbus.trace import Trace, walk

ERROR_WIDTH = 60  # characters of a dead letter's error shown in the list table


def dumps(value: Any) -> str:
    """One line of JSON (UTF-8 kept readable)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A plain text table; columns whose index is in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def duration(ms: int | None) -> str:
    """850ms, 2.3s, 4m05s, 3h02m, 2d04h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    secs = ms / 1000
    if secs < 60:
        return f"{secs:.1f}s"
    m, sec = divmod(int(secs), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


# -- stats -------------------------------------------------------------------------------

_STATS_HEADERS = (
    "STREAM", "LENGTH", "DLQ", "GROUP", "LAG", "PENDING", "CONSUMERS",
    "SCHEDULED", "RETRY-BACKLOG", "RETRY-PENDING",
)  # fmt: skip


def stats_text(doc: Mapping[str, Any]) -> str:
    """The ``stats`` tables: one row per stream and group, then one per consumer."""
    streams = doc["streams"]
    if not streams:
        return f"tenant {doc['tenant']!r} has no streams"
    rows: list[list[str]] = []
    consumer_rows: list[list[str]] = []
    for st in streams:
        length = str(st["length"]) if st["exists"] else "(gone)"
        head = [st["stream"], length, str(st["dlq"])]
        if not st["groups"]:
            rows.append(head + ["-"] * 7)
        for g in st["groups"]:
            retries = g["retries"] or {}
            rows.append(
                head
                + [
                    g["group"],
                    _num(g["lag"]),
                    str(g["pending"]),
                    str(len(g["consumers"])),
                    _num(retries.get("scheduled")),
                    _num(retries.get("backlog")),
                    _num(retries.get("pending")),
                ]
            )
            for c in g["consumers"]:
                consumer_rows.append(
                    [st["stream"], g["group"], c["name"], str(c["pending"]), duration(c["idle_ms"])]
                )
    out = [f"tenant {doc['tenant']!r}", "", table(_STATS_HEADERS, rows, {1, 2, *range(4, 10)})]
    if consumer_rows:
        headers = ("STREAM", "GROUP", "CONSUMER", "PENDING", "IDLE")
        out += ["", table(headers, consumer_rows, {3, 4})]
    return "\n".join(out)


# -- dead letters ------------------------------------------------------------------------


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """One ``dlq list --json`` entry (no traceback, no fields: see ``letter_full``)."""
    return {
        "dlq_id": letter.dlq_id,
        "failed_at": letter.failed_at.isoformat(),
        "reason": letter.reason,
        "group": letter.group,
        "consumer": letter.consumer,
        "retry_count": letter.retry_count,
        "original_message_id": letter.original_message_id,
        "event_id": letter.event.event_id if letter.event else letter.fields.get("event_id"),
        "event_type": letter.event.event_type.value if letter.event else None,
        "error_type": letter.error_type,
        "error": letter.error,
        "decode_error": letter.decode_error,
    }


def letter_full(letter: DeadLetter) -> dict[str, Any]:
    """The ``dlq show --json`` document: the summary plus traceback and the event fields."""
    return {
        **letter_summary(letter),
        "original_stream": letter.original_stream,
        "traceback": letter.traceback,
        "fields": letter.fields,
    }


def dlq_text(stream: str, letters: Sequence[DeadLetter], total: int) -> str:
    if not letters:
        return f"no dead letters in the DLQ of stream {stream!r}"
    rows = []
    for letter in letters:
        d = letter_summary(letter)
        error = " ".join(f"{d['error_type'] or 'Error'}: {d['error'] or ''}".split())
        if len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 1] + "…"
        rows.append(
            [
                d["dlq_id"],
                letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
                d["reason"],
                d["group"] or "-",
                str(d["retry_count"]),
                d["event_type"] or "?",
                d["event_id"] or "?",
                error,
            ]
        )
    headers = (
        "DLQ ID", "FAILED AT (UTC)", "REASON", "GROUP", "RETRIES", "EVENT TYPE", "EVENT ID",
        "ERROR",
    )  # fmt: skip
    footer = f"{len(letters)} of {total} dead letter(s) of stream {stream!r}"
    return table(headers, rows, {4}) + "\n\n" + footer


def letter_text(letter: DeadLetter) -> str:
    """Everything about one dead letter, for people."""
    d = letter_full(letter)
    labels = [
        ("dlq id", d["dlq_id"]),
        ("stream", d["original_stream"]),
        ("message id", d["original_message_id"]),
        ("failed at", d["failed_at"]),
        ("reason", d["reason"]),
        ("group", d["group"]),
        ("consumer", d["consumer"]),
        ("retry count", d["retry_count"]),
        ("event id", d["event_id"]),
        ("event type", d["event_type"]),
        ("error", f"{d['error_type']}: {d['error']}" if d["error_type"] else d["error"]),
        ("decode error", d["decode_error"]),
    ]
    out = [
        f"{label + ':':<14}" + str("-" if value is None else value).replace("\n", "\n" + " " * 14)
        for label, value in labels
    ]
    out += ["", "traceback:"]
    out += ["  " + ln for ln in (d["traceback"] or "(none)").rstrip("\n").splitlines()]
    out += ["", "fields:"]
    out += [f"  {k}: {v}" for k, v in d["fields"].items()]
    return "\n".join(out)


# -- tail --------------------------------------------------------------------------------


def tail_record(message_id: str, fields: Mapping[Any, Any], tenant: str) -> dict[str, Any]:
    """One ``tail`` line: ``{"message_id", "event"}``, or for an entry that is not a valid
    event of this tenant ``{"message_id", "fields", "error"}`` (fields decoded lossily)."""
    try:
        event = AgentEvent.from_stream_dict(fields)
        check_tenant(tenant, event.tenant_id, f"event {event.event_id!r}")
    except (DecodeError, TenantMismatch) as exc:
        return {"message_id": message_id, "fields": lossy_fields(fields), "error": str(exc)}
    return {"message_id": message_id, "event": event.model_dump(mode="json")}


def budget_text(b: Budget) -> str:
    """``request 'r': 3 of 100 events, 12.5 of 1000 units [spent] [halted]``."""

    def used(n: float, limit: float, what: str) -> str:
        shown = f"{n:g}"
        return f"{shown} of {limit:g} {what}" if limit else f"{shown} {what} (no limit)"

    flags = "".join(f" [{name}]" for name, on in (("spent", b.spent), ("halted", b.halted)) if on)
    events = used(b.events, b.max_events, "events")
    units = used(b.units, b.max_units, "units")
    return f"request {b.correlation_id!r}: {events}, {units}{flags}"


def trace_text(tree: Trace) -> str:
    """The request's tree, one event per line, children indented under their parent."""
    doc = tree.as_dict()
    head = (
        f"request {tree.correlation_id!r}: {doc['events']} events, agents "
        f"{', '.join(doc['agents']) or '-'}, {doc['first']} .. {doc['last']}"
    )
    lines = [head]
    for depth, node in walk(tree.roots):
        when = _iso_time(node.time_ms)
        outcome = node.status
        if node.retries:
            outcome += f", retried {node.retries}x"
        if node.replays:
            outcome += f", replayed {node.replays}x"
        if node.handled_by:
            outcome += f" ({', '.join(node.handled_by)})"
        what = f"{node.agent or '?'} {node.event_type or '?'} -> {node.stream or '?'}"
        lines.append(f"{'  ' * depth}- {when} {what} [{node.event_id}] {outcome}")
    return "\n".join(lines)


def _iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# -- errors ------------------------------------------------------------------------------

_PASSWORD_USERINFO = re.compile(r"^([a-z]+://[^:@/]*):[^@/]*@")
_PASSWORD_QUERY = re.compile(r"([?&]password=)[^&#]*")
_REFUSED = re.compile(r"Error -?\d+ connecting to \S+?\. (.+?)\.?$")


def redact(url: str) -> str:
    """The URL with its password (in the user info or a ``password=`` query) as ``***``."""
    url = _PASSWORD_USERINFO.sub(r"\1:***@", url)
    return _PASSWORD_QUERY.sub(r"\1***", url)


def reason(exc: BaseException) -> str:
    """``Connection refused`` out of redis-py's ``Error 111 connecting to h:p. ...``."""
    text = str(exc)
    match = _REFUSED.match(text)
    return match.group(1) if match else text or type(exc).__name__
