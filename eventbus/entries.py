"""Entries and replies (pure shapes): what a read returns, decoded from redis-py's replies
(RESP2 lists or RESP3 dicts), for the bus, the groups and their callers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

from eventbus.redis_io import s
from eventbus.schemas import AgentEvent

RawFields = dict[bytes, bytes]
Acks = Mapping[str, Sequence[str]]  # {key: [message id, ...]} to acknowledge


class RawEntry(NamedTuple):
    """A delivery as the consumer reads it: which key, which id, fields as raw bytes."""

    key: str
    message_id: str
    fields: RawFields


class Claim(NamedTuple):
    """An entry taken over by :meth:`GroupStream.reclaim`."""

    key: str
    message_id: str
    #: Deliveries so far (the next handling is delivery ``deliveries + 1``).
    deliveries: int
    #: The consumer it now belongs to.
    consumer: str


class StreamMessage(NamedTuple):
    """One entry read by :meth:`TenantEventBus.subscribe`."""

    message_id: str
    #: The entry's fields, decoded as UTF-8 (undecodable bytes become U+FFFD).
    fields: dict[str, str]

    def event(self) -> AgentEvent:
        """Decode into an :class:`AgentEvent` (raises ``DecodeError``)."""
        return AgentEvent.from_stream_dict(self.fields)


class PendingEntry(NamedTuple):
    message_id: str
    consumer: str
    idle_ms: int
    deliveries: int


def encoded_size(fields: Mapping[str, str]) -> int:
    """Bytes of the fields and values in UTF-8."""
    text = "".join(chain.from_iterable(fields.items()))
    return len(text) if text.isascii() else len(text.encode())


def group_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """One XINFO GROUPS row, decoded: name, consumers, pending, last_delivered_id, lag."""
    return {
        "name": s(row["name"]),
        "consumers": int(row["consumers"]),
        "pending": int(row["pending"]),
        "last_delivered_id": s(row["last-delivered-id"]),
        "lag": None if row.get("lag") is None else int(row["lag"]),
    }


def iter_entries(reply: Any) -> Iterable[RawEntry]:
    """Flatten an XREADGROUP reply (RESP2 list or RESP3 dict) into RawEntry rows."""
    if not reply:
        return
    items = reply.items() if isinstance(reply, dict) else reply
    for key, entries in items:
        k = s(key)
        for message_id, fields in entries:
            if fields is None:  # deleted while pending (history reads)
                continue
            yield RawEntry(k, s(message_id), dict(fields))
