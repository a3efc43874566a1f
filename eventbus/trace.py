"""The causal tree of a request: publish.lua records each event's place (event id,
parent, source agent, type, stream, message id) in ``t:{T}:trace:{C}``; consumers and
the DLQ add what became of it (handled, retried, dead-lettered, replayed). Here: the
consumers' writer and the reader that rebuilds the tree (``eventbus trace``)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from eventbus.errors import EventBusError
from eventbus.redis_io import error_text, translated

if TYPE_CHECKING:
    from eventbus.bus import TenantEventBus
    from eventbus.schemas import AgentEvent

log = structlog.get_logger("eventbus.trace")

# What a trace entry records (field ``k``).
PUBLISHED = "published"
HANDLED = "handled"
RETRIED = "retried"
DEAD_LETTERED = "dead_lettered"
REPLAYED = "replayed"

#: Entries read per XRANGE when a tree is rebuilt.
READ_CHUNK = 10_000


@dataclass(slots=True)
class TraceNode:
    """One event of a request and what became of it."""

    event_id: str
    parent_event_id: str | None = None
    agent: str = ""
    event_type: str = ""
    stream: str = ""
    message_id: str = ""
    time_ms: int = 0
    published: bool = False  # False: seen only through an outcome (its publish was cut)
    handled_by: list[str] = field(default_factory=list)  # groups
    retries: int = 0
    dead_letters: list[str] = field(default_factory=list)  # reasons, in order
    replays: int = 0
    children: list[TraceNode] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``handled``, ``in_dlq`` (reason), ``halted``, ``retrying`` or ``queued``."""
        if self.dead_letters and self.replays < len(self.dead_letters):
            last = self.dead_letters[-1]
            return "halted" if last == "halted" else f"in_dlq ({last})"
        if self.handled_by:
            return "handled"
        return "retrying" if self.retries else "queued"

    def as_dict(self) -> dict[str, Any]:
        """This node and its subtree (built without recursion: trees may be deep)."""
        top = self._fields()
        stack = [(self, top)]
        while stack:
            node, doc = stack.pop()
            for child in node.children:
                child_doc = child._fields()
                doc["children"].append(child_doc)
                stack.append((child, child_doc))
        return top

    def _fields(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "parent_event_id": self.parent_event_id,
            "agent": self.agent,
            "event_type": self.event_type,
            "stream": self.stream,
            "message_id": self.message_id,
            "time": _iso(self.time_ms),
            "status": self.status,
            "handled_by": self.handled_by,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "replays": self.replays,
            "children": [],
        }


@dataclass
class Trace:
    correlation_id: str
    roots: list[TraceNode]
    nodes: dict[str, TraceNode]

    @property
    def agents(self) -> list[str]:
        return sorted({n.agent for n in self.nodes.values() if n.agent})

    def as_dict(self) -> dict[str, Any]:
        times = [n.time_ms for n in self.nodes.values() if n.time_ms]
        return {
            "correlation_id": self.correlation_id,
            "events": len(self.nodes),
            "agents": self.agents,
            "first": _iso(min(times)) if times else None,
            "last": _iso(max(times)) if times else None,
            "roots": [r.as_dict() for r in self.roots],
        }


def walk(roots: list[TraceNode]) -> Iterator[tuple[int, TraceNode]]:
    """(depth, node) of every node, depth first in publish order (no recursion)."""
    stack = [(0, r) for r in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, c) for c in reversed(node.children))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _time_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def published_record(event: AgentEvent, stream: str) -> str:
    """The trace record of a publish up to its message id, which publish.lua appends
    (with the closing '"]')."""
    parts = (event.event_id, event.parent_event_id or "", event.source_agent_id, stream)
    eid, parent, agent, name = (_json_str(p) for p in parts)
    kind = event.event_type.value  # an enum value: plain lowercase ASCII
    return f'["{PUBLISHED}",{eid},{parent},{agent},"{kind}",{name},"'


def _json_str(text: str) -> str:
    """``text`` as a JSON string; most ids need no escaping (the fast path)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def build_tree(correlation_id: str, entries: Iterable[tuple[str, Sequence[str]]]) -> Trace:
    """The tree of ``entries`` (trace entry id, record), oldest first. Pure.

    Records (a trace entry holds a JSON array of them, all at the entry's time):
    ``[published, event id, parent id or "", agent, type, stream, message id]``
    (publish.lua) or ``[kind, event id, stream, group, detail]`` (outcomes). An event whose
    parent is not in the trace (the request's first event, or a parent cut by the size
    cap) is a root. Children are in publish order."""
    nodes: dict[str, TraceNode] = {}
    for entry_id, rec in entries:
        kind, event_id = rec[0], rec[1]
        node = nodes.get(event_id)
        if node is None:
            ms = int(entry_id.partition("-")[0])
            if kind == PUBLISHED:  # the usual case: one constructor call
                parent = rec[2] or None
                nodes[event_id] = TraceNode(
                    event_id, parent, rec[3], rec[4], rec[5], rec[6], ms, True
                )
                continue
            node = nodes[event_id] = TraceNode(event_id, time_ms=ms)
        if kind == PUBLISHED:
            if not node.published:
                node.published = True
                node.parent_event_id = rec[2] or None
                node.agent, node.event_type, node.stream, node.message_id = rec[3:7]
                node.time_ms = _time_ms(entry_id)
        elif kind == HANDLED:
            node.handled_by.append(rec[3])
        elif kind == RETRIED:
            node.retries += 1
        elif kind == DEAD_LETTERED:
            node.dead_letters.append(rec[4])
        elif kind == REPLAYED:
            node.replays += 1
    roots = []
    for node in nodes.values():  # insertion order is publish order
        up = nodes.get(node.parent_event_id or "")
        if up is None or up is node:
            roots.append(node)
        else:
            up.children.append(node)
    return Trace(correlation_id, roots, nodes)


def read_trace(bus: TenantEventBus, correlation_id: str) -> Trace:
    """Rebuild request ``correlation_id``'s tree from Redis (empty if it has no trace:
    never traced, or expired)."""
    key = bus.keys.trace(correlation_id)
    entries: list[tuple[str, list[str]]] = []
    start = "-"
    with _no_gc(), translated(f"read the trace of request {correlation_id!r}"):
        while True:
            text, last, n = bus.scripts.trace_read(key, start, READ_CHUNK)
            for at, records in json.loads(text):
                entries += [(at, rec) for rec in records]
            if n < READ_CHUNK:
                break
            start = "(" + last
        return build_tree(correlation_id, entries)


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a block that makes many containers and frees
    none (a tree of 10,000 nodes: its passes over the growing heap were most of the
    rebuild's time, 100-300 ms instead of 30)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def read_trace_plain(bus: TenantEventBus, correlation_id: str) -> Trace:
    """:func:`read_trace` with plain ``XRANGE`` reads, no script: for a read-only user
    (the web console's viewer role may run no script at all). Same tree; more client
    work per entry (one reply map and one ``json.loads`` each)."""
    key = bus.keys.trace(correlation_id)
    entries: list[tuple[str, list[str]]] = []
    start = "-"
    with _no_gc(), translated(f"read the trace of request {correlation_id!r}"):
        while True:
            rows: Any = bus.redis.xrange(key, min=start, max="+", count=READ_CHUNK)
            for raw_id, fields in rows:
                at = raw_id.decode()
                entries += [(at, rec) for rec in json.loads(fields.get(b"v", b"[]"))]
            if len(rows) < READ_CHUNK:
                break
            start = "(" + rows[-1][0].decode()
        return build_tree(correlation_id, entries)


class TraceWriter:
    """A consumer's outcome notes, written in one pipeline per round (best effort: a
    trace is for people, so a failed write is logged and dropped, never retried). Only
    requests that have a trace get notes (XADD NOMKSTREAM)."""

    def __init__(self, bus: TenantEventBus, stream: str, group: str) -> None:
        self._bus = bus
        self._stream = stream
        self._group = group
        self.on = bus.settings.trace
        self._notes: list[tuple[str, list[str]]] = []

    def note(self, event: AgentEvent | None, kind: str, detail: str = "") -> None:
        if not self.on or event is None or event.correlation_id is None:
            return
        record = [kind, event.event_id, self._stream, self._group, detail]
        self._notes.append((self._bus.keys.trace(event.correlation_id), record))

    def flush(self) -> None:
        if not self._notes:
            return
        notes, self._notes = self._notes, []
        write(self._bus, notes)


def write(bus: TenantEventBus, notes: list[tuple[str, list[str]]]) -> None:
    """Append outcome notes to the traces that exist: one entry per trace (its records in
    one JSON array), one pipeline; failures are logged."""
    st = bus.settings
    ttl_ms = int(st.request_ttl_s * 1000)
    by_key: dict[str, list[list[str]]] = {}
    for key, record in notes:
        by_key.setdefault(key, []).append(record)
    try:
        with translated("write trace notes"):
            pipe = bus.redis.pipeline(transaction=False)
            for key, records in by_key.items():
                pipe.xadd(
                    key,
                    {"v": _dumps(records)},
                    maxlen=st.trace_max_events,
                    approximate=True,
                    nomkstream=True,
                )
                pipe.pexpire(key, ttl_ms)
            pipe.execute()
    except EventBusError as exc:
        log.warning("trace_write_failed", notes=len(notes), error=error_text(exc))
