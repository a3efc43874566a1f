"""Atomic transitions: loads the Lua files next to this module, one typed wrapper each.

Each wrapper owns its script's KEYS/ARGV order (documented in the .lua file's header) and
turns the script's status codes into named values (:class:`MoveStatus`). Scripts run with
EVALSHA through redis-py's ``Script`` (reloaded after a server restart). Errors are raised
as redis-py raises them: :mod:`eventbus.groupstream` and :mod:`eventbus.bus` translate.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Any, NamedTuple

from redis.commands.core import Script

from eventbus.redis_io import AnyRedis
from eventbus.redis_io import s as _s

_INCLUDE = "-- @include "


@functools.cache
def load_source(name: str) -> str:
    """The source of ``eventbus/lua/<name>``, with ``-- @include`` lines expanded."""
    text = resources.files("eventbus").joinpath("lua").joinpath(name).read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(_INCLUDE):
            lines.append(load_source(line[len(_INCLUDE) :].strip()))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


class MoveStatus(Enum):
    """What a move script (retry, dead letter) did with a delivery."""

    DONE = "done"  # written and acknowledged
    NOT_OURS = "not_ours"  # no longer pending on this consumer (acked, or claimed by another)
    GONE = "gone"  # pending but deleted from the stream: acknowledged, nothing to move


_STATUS = {0: MoveStatus.NOT_OURS, -1: MoveStatus.GONE}


@dataclass(frozen=True)
class Moved:
    status: MoveStatus
    #: The retry's due time (ms, Redis clock) or the dead letter's id, when DONE.
    value: int | str | None = None


def _moved(reply: Any) -> Moved:
    if isinstance(reply, int) and reply in _STATUS:
        return Moved(_STATUS[reply])
    return Moved(MoveStatus.DONE, reply if isinstance(reply, int) else _s(reply))


class PublishItem(NamedTuple):
    """One event of a publish.lua call, with the keys its request's guards need."""

    marker: str
    fields: Mapping[str, str]
    correlation_id: str = ""  # "" = none: not budgeted, not halted, not traced
    budget: str = ""  # t:{T}:budget:{C} when the event has a correlation id
    trace: str = ""  # t:{T}:trace:{C} when it has one and the trace is on
    record: str = ""  # its trace record up to the message id (see publish.lua)


@dataclass(frozen=True)
class PublishRefused:
    """publish.lua refused the batch (nothing written) because of event ``index`` (0-based)."""

    index: int
    reason: str  # halted, budget_exceeded
    correlation_id: str
    detail: str


@dataclass(frozen=True)
class RequestLimits:
    """The tenant's guard arguments of publish.lua (see its header)."""

    budget_events: int = 0
    budget_units: float = 0.0
    request_ttl_ms: int = 86_400_000
    trace_max: int = 0


_REFUSED = b"REFUSED"


class Scripts:
    """The bus's Lua scripts, registered on one client."""

    def __init__(self, client: AnyRedis) -> None:
        self._publish = client.register_script(load_source("publish.lua"))
        self._charge = client.register_script(load_source("charge.lua"))
        self._trace_read = client.register_script(load_source("trace_read.lua"))
        self._ack_and_retry = client.register_script(load_source("ack_and_retry.lua"))
        self._promote_due = client.register_script(load_source("promote_due.lua"))
        self._ack_and_dead_letter = client.register_script(load_source("ack_and_dead_letter.lua"))
        self._replay = client.register_script(load_source("replay.lua"))
        self._reclaim = client.register_script(load_source("reclaim.lua"))
        self._trim_acked = client.register_script(load_source("trim_acked.lua"))
        self._delete_idle_consumer = client.register_script(load_source("delete_idle_consumer.lua"))

    @classmethod
    def of(cls, client: AnyRedis) -> Scripts:
        """The scripts registered on ``client``: one set per client, shared by its buses."""
        found = _REGISTERED.get(client)
        if found is None:
            found = _REGISTERED[client] = cls(client)
        return found

    @staticmethod
    def _call(script: Script, keys: Sequence[str], args: Sequence[Any], client: Any) -> Any:
        return script(keys=list(keys), args=list(args), client=client)

    def publish(
        self,
        tenant_keys: Sequence[str],
        stream: str,
        events: Sequence[PublishItem],
        *,
        dedupe_ttl_ms: int,
        maxlen: int,
        slack: int,
        limits: RequestLimits,
        client: Any = None,
    ) -> Any:
        """Publish ``events`` (in order) in one call. ``tenant_keys``: stream, registry,
        halted, spent. Returns the raw reply for :meth:`parse_publish` (or queues the call
        on a pipeline)."""
        keys = list(tenant_keys)
        args: list[Any] = [dedupe_ttl_ms, maxlen, slack, stream]
        args += [limits.budget_events, limits.budget_units, limits.request_ttl_ms]
        args.append(limits.trace_max)
        for item in events:
            keys.append(item.marker)
            if item.correlation_id:
                keys.append(item.budget)
                if limits.trace_max:
                    keys.append(item.trace)
            args += (2 * len(item.fields), item.correlation_id, item.record)
            for pair in item.fields.items():
                args += pair
        return self._call(self._publish, keys, args, client)

    @staticmethod
    def parse_publish(reply: Any) -> list[tuple[str, bool]] | PublishRefused:
        """``[(message_id, written)]`` per event (written is False for a duplicate), or
        the refusal of the whole call."""
        if reply and reply[0] in (_REFUSED, "REFUSED"):
            _, index, reason, cid, detail = reply
            return PublishRefused(int(index) - 1, _s(reason), _s(cid), _s(detail))
        return [(_s(i), w == 1) for i, w in zip(reply[0::2], reply[1::2], strict=True)]

    def charge(
        self,
        budget_key: str,
        spent_key: str,
        correlation_id: str,
        units: float,
        *,
        budget_units: float,
        request_ttl_ms: int,
    ) -> tuple[float, bool]:
        """Add ``units`` to a request's usage: (units used now, the budget is spent)."""
        args = [units, budget_units, request_ttl_ms, correlation_id]
        used, spent = self._call(self._charge, (budget_key, spent_key), args, None)
        return float(used), int(spent) == 1

    def trace_read(self, trace_key: str, start: str, count: int) -> tuple[str, str, int]:
        """A chunk of a trace as one JSON text: (json, last entry id, entries read)."""
        text, last, n = self._call(self._trace_read, (trace_key,), [start, count], None)
        return _s(text), _s(last), int(n)

    def ack_and_retry(
        self,
        source_key: str,
        schedule_key: str,
        *,
        group: str,
        message_id: str,
        consumer: str,
        delay_ms: int,
        retry_count: int,
    ) -> Moved:
        """Schedule a retry and ack; DONE carries the due time (ms, Redis clock)."""
        args = [group, message_id, consumer, delay_ms, retry_count]
        return _moved(self._call(self._ack_and_retry, (source_key, schedule_key), args, None))

    def promote_due(self, schedule_key: str, retry_stream_key: str, limit: int) -> tuple[int, int]:
        """Move due retries; returns (moved, ms until the next one is due or -1)."""
        moved, wait_ms = self._call(
            self._promote_due, (schedule_key, retry_stream_key), [limit], None
        )
        return int(moved), int(wait_ms)

    def ack_and_dead_letter(
        self,
        source_key: str,
        dlq_key: str,
        *,
        group: str,
        message_id: str,
        consumer: str,
        metadata: dict[str, str],
    ) -> Moved:
        """Copy to the DLQ and ack; DONE carries the dead letter's id."""
        args: list[Any] = [group, message_id, consumer]
        for k, v in metadata.items():
            args += (k, v)
        return _moved(self._call(self._ack_and_dead_letter, (source_key, dlq_key), args, None))

    def replay(self, dlq_key: str, target_key: str, dlq_id: str) -> str | None:
        reply = self._call(self._replay, (dlq_key, target_key), [dlq_id], None)
        return None if reply is None else _s(reply)

    def reclaim(
        self,
        stream_key: str,
        *,
        group: str,
        consumer: str,
        min_idle_ms: int,
        start: str,
        count: int,
    ) -> tuple[str, list[tuple[str, int]], list[str]]:
        """XAUTOCLAIM JUSTID with delivery counts: (next_start, [(id, count)], deleted ids)."""
        nxt, claimed, deleted = self._call(
            self._reclaim,
            (stream_key,),
            [group, consumer, min_idle_ms, start, count],
            None,
        )
        return _s(nxt), [(_s(i), int(n)) for i, n in claimed], [_s(d) for d in deleted]

    def trim_acked(self, stream_key: str, maxlen: int) -> int:
        """Trim acknowledged history to about ``maxlen``; returns entries removed."""
        return int(self._call(self._trim_acked, (stream_key,), [maxlen], None))

    def delete_idle_consumer(
        self, stream_key: str, *, group: str, consumer: str, min_idle_ms: int
    ) -> bool:
        """Remove ``consumer`` if it has nothing pending and is idle; True if removed."""
        reply = self._call(
            self._delete_idle_consumer, (stream_key,), [group, consumer, min_idle_ms], None
        )
        return int(reply) == 1


_REGISTERED: weakref.WeakKeyDictionary[AnyRedis, Scripts] = weakref.WeakKeyDictionary()
