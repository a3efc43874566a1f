"""Publish and read: the tenant's streams, its consumer groups, acks and introspection.

``TenantEventBus`` is the only object that holds a tenant's keys; everything it touches is
derived by :class:`~eventbus.keys.TenantKeys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

import redis
import structlog

from eventbus.errors import (
    EventTooLarge,
    PublishOutcomeUnknown,
    StreamNotFound,
    TenantMismatch,
)
from eventbus.keys import TenantKeys, validate_consumer, validate_group
from eventbus.redis_io import (
    TRANSIENT,
    call_with_retries,
    is_nogroup,
    max_block_ms,
    raw_client,
    s,
    translated,
)
from eventbus.schemas import AgentEvent
from eventbus.scripts import Scripts
from eventbus.settings import BusSettings

log = structlog.get_logger("eventbus.bus")

RawFields = dict[bytes, bytes]
#: Events per publish.lua call: Redis serves nobody else while one runs (~10 us per event).
PUBLISH_CHUNK = 100


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


class RawEntry(NamedTuple):
    """An entry as the consumer reads it: which key, which id, fields as raw bytes."""

    key: str
    message_id: str
    fields: RawFields


def encoded_size(fields: Mapping[str, str]) -> int:
    """Bytes of the fields and values in UTF-8."""
    text = "".join(chain.from_iterable(fields.items()))
    return len(text) if text.isascii() else len(text.encode())


def _decode_lossy(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        )
        for k, v in fields.items()
    }


class TenantEventBus:
    """Publish to and read from one tenant's streams.

    ``redis`` is a plain synchronous ``redis.Redis``; with ``decode_responses=True`` the bus
    uses a sibling connection pool that returns raw bytes, since entries may hold any bytes.
    """

    def __init__(
        self,
        redis: redis.Redis,
        tenant_id: str,
        *,
        maxlen: int | None = None,
        settings: BusSettings | None = None,
    ) -> None:
        self.keys = TenantKeys(tenant_id)
        self.tenant_id = tenant_id
        settings = settings or BusSettings()
        if maxlen is not None:
            settings = BusSettings(**{**settings.__dict__, "maxlen": maxlen})
        self.settings = settings
        self.redis = raw_client(redis)
        self.scripts = Scripts(self.redis)
        self._groups_seen: set[tuple[str, str]] = set()

    # -- publishing --------------------------------------------------------------------

    def _encode(self, event: AgentEvent) -> dict[str, str]:
        if not isinstance(event, AgentEvent):
            raise TypeError(f"publish takes an AgentEvent, got {type(event).__name__}")
        if event.tenant_id != self.tenant_id:
            raise TenantMismatch(
                f"event {event.event_id!r} belongs to tenant {event.tenant_id!r}, "
                f"not to this bus's tenant {self.tenant_id!r}"
            )
        fields = event.to_stream_dict()
        size = encoded_size(fields)
        if size > self.settings.max_event_bytes:
            raise EventTooLarge(
                f"event {event.event_id!r} is {size} bytes encoded, over the limit of "
                f"{self.settings.max_event_bytes}; keep large context outside the bus and "
                "put a reference in context_refs"
            )
        return fields

    def _prepare(
        self, stream: str, events: Sequence[AgentEvent]
    ) -> tuple[str, list[tuple[str, dict[str, str]]]]:
        """Validate and encode every event before anything is sent: (stream key, batch)."""
        encoded = [self._encode(e) for e in events]
        markers = self.keys.dedupe_all(stream, [e.event_id for e in events])
        return self.keys.stream(stream), list(zip(markers, encoded, strict=True))

    def _publish_batch(
        self, stream: str, events: Sequence[AgentEvent], what: str
    ) -> list[tuple[str, bool]]:
        """One round trip: one publish.lua call per chunk of events (Redis serves nobody
        else while a call runs, so a big batch is split), retried on connection errors."""
        stream_key, batch = self._prepare(stream, events)
        st = self.settings
        chunks = [batch[i : i + PUBLISH_CHUNK] for i in range(0, len(batch), PUBLISH_CHUNK)]
        registry = self.keys.registry()
        options = {
            "dedupe_ttl_ms": int(st.dedupe_window_s * 1000),
            "maxlen": st.maxlen,
            "slack": st.trim_slack,
        }

        def once() -> list[tuple[str, bool]]:
            if len(chunks) == 1:
                reply = self.scripts.publish(stream_key, registry, stream, chunks[0], **options)
                return Scripts.parse_publish(reply)
            pipe = self.redis.pipeline(transaction=False)
            for chunk in chunks:
                self.scripts.publish(stream_key, registry, stream, chunk, **options, client=pipe)
            return [pair for reply in pipe.execute() for pair in Scripts.parse_publish(reply)]

        with translated(what):
            try:
                return call_with_retries(once, st.publish_attempts)
            except TRANSIENT as exc:
                raise PublishOutcomeUnknown(events[0].event_id, stream, exc) from exc

    def publish(self, stream: str, event: AgentEvent) -> str:
        """Append ``event`` to the tenant's ``stream``; returns its message id.

        Idempotent by ``event_id`` within the dedupe window: publishing the same event again
        returns the first message id and writes nothing, so connection errors are retried
        (``publish_attempts``); if no reply ever comes, :class:`PublishOutcomeUnknown`.
        """
        ((message_id, written),) = self._publish_batch(stream, [event], f"publish to {stream!r}")
        if not written:
            log.info(
                "publish_deduplicated",
                tenant=self.tenant_id,
                stream=stream,
                event_id=event.event_id,
                message_id=message_id,
            )
        return message_id

    def publish_many(self, stream: str, events: Sequence[AgentEvent]) -> list[str]:
        """Publish several events in one round trip (each idempotent, in order; up to
        ``PUBLISH_CHUNK`` of them atomically together).

        Every event is validated before anything is sent. Returns the message ids.
        """
        if not events:
            return []
        replies = self._publish_batch(stream, events, f"publish_many to {stream!r}")
        return [message_id for message_id, _ in replies]

    # -- groups and reading --------------------------------------------------------------

    def ensure_group(self, stream: str, group: str, *, key: str | None = None) -> bool:
        """Create ``group`` on the stream (and the stream) reading from the very beginning.

        Returns True if it was created now. ``key`` overrides the stream key (retry streams).
        """
        validate_group(group)
        main = key is None
        key = key or self.keys.stream(stream)
        with translated(f"create group {group!r} on {stream!r}"):
            try:
                self.redis.xgroup_create(key, group, id="0", mkstream=True)
                if main:  # listed like published streams (the registry)
                    self.redis.sadd(self.keys.registry(), stream)
            except redis.ResponseError as exc:
                # Under OOM Redis refuses XGROUP CREATE even when the group exists, while
                # reads and acks still work: a worker (re)started then must still consume.
                if "BUSYGROUP" not in str(exc) and not self._group_exists(key, group):
                    raise
                created = False
            else:
                created = True
        self._groups_seen.add((key, group))
        return created

    def _group_exists(self, key: str, group: str) -> bool:
        try:
            groups = self.redis.xinfo_groups(key)
        except redis.ResponseError:  # no such key
            return False
        return any(s(g["name"]) == group for g in groups)

    def subscribe(
        self, stream: str, group: str, consumer: str, count: int = 10, block: int = 5000
    ) -> list[StreamMessage]:
        """Read new entries for ``consumer`` in ``group`` (creating the group from the start).

        Returns ``[StreamMessage(message_id, fields), ...]``, empty when nothing arrived
        within ``block`` ms (clamped below the client's socket timeout). Acknowledge each
        with :meth:`ack`; ``msg.event()`` decodes it.
        """
        validate_consumer(consumer)
        key = self.keys.stream(stream)
        if (key, group) not in self._groups_seen:
            self.ensure_group(stream, group)
        with translated(f"read {stream!r} as {group!r}/{consumer!r}"):
            try:
                entries = self.read_group(group, consumer, {key: ">"}, count=count, block_ms=block)
            except redis.ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                # The group vanished (Redis restarted without persistence, or it was
                # deleted): recreate it from the start of the stream, loudly.
                self.ensure_group(stream, group)
                log.error(
                    "consumer_group_recreated",
                    tenant=self.tenant_id,
                    stream=stream,
                    group=group,
                    consumer=consumer,
                    error=str(exc),
                )
                entries = self.read_group(group, consumer, {key: ">"}, count=count, block_ms=block)
        return [StreamMessage(e.message_id, _decode_lossy(e.fields)) for e in entries]

    def read_group(
        self,
        group: str,
        consumer: str,
        streams: Mapping[str, str],
        *,
        count: int,
        block_ms: int | None,
        acks: Mapping[str, Sequence[str]] | None = None,
    ) -> list[RawEntry]:
        """XREADGROUP over ``{key: id}``; raw entries. Raises redis errors untranslated.

        ``acks`` (``{key: [id, ...]}``) are sent first, in the same round trip.
        """
        block = None if block_ms is None else max_block_ms(self.redis, block_ms)
        wanted: Any = dict(streams)
        if not acks:
            reply = self.redis.xreadgroup(group, consumer, wanted, count=count, block=block)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for key, ids in acks.items():
                pipe.xack(key, group, *ids)
            pipe.xreadgroup(group, consumer, wanted, count=count, block=block)
            reply = pipe.execute()[-1]
        return list(_iter_entries(reply))

    def ack(self, stream: str, group: str, *message_ids: str) -> int:
        """Acknowledge entries of ``stream`` for ``group``; returns how many were pending."""
        if not message_ids:
            return 0
        validate_group(group)
        with translated(f"ack on {stream!r}"):
            return int(self.redis.xack(self.keys.stream(stream), group, *message_ids))

    # -- introspection -------------------------------------------------------------------

    def get_stream_info(self, stream: str) -> dict[str, Any]:
        """XINFO STREAM plus the groups, decoded: length, first/last ids, groups (lag...).

        Raises ``KeyError`` (``StreamNotFound``) if the stream does not exist.
        """
        key = self.keys.stream(stream)
        with translated(f"info of {stream!r}"):
            try:
                info = self.redis.xinfo_stream(key)
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    raise StreamNotFound(
                        f"stream {stream!r} of tenant {self.tenant_id!r} does not exist"
                    ) from exc
                raise
            groups = self.redis.xinfo_groups(key)
        out: dict[str, Any] = {
            "stream": stream,
            "key": key,
            "length": int(info["length"]),
            "last_generated_id": s(info["last-generated-id"]),
            "first_entry_id": s(info["first-entry"][0]) if info.get("first-entry") else None,
            "last_entry_id": s(info["last-entry"][0]) if info.get("last-entry") else None,
            "groups": [
                {
                    "name": s(g["name"]),
                    "consumers": int(g["consumers"]),
                    "pending": int(g["pending"]),
                    "last_delivered_id": s(g["last-delivered-id"]),
                    "lag": None if g.get("lag") is None else int(g["lag"]),
                }
                for g in groups
            ],
        }
        return out

    def get_pending(self, stream: str, group: str, count: int = 100) -> list[PendingEntry]:
        """Pending (delivered, unacknowledged) entries of ``group``, oldest first."""
        validate_group(group)
        with translated(f"pending of {stream!r}/{group!r}"):
            rows = self.redis.xpending_range(
                self.keys.stream(stream), group, min="-", max="+", count=count
            )
        return [
            PendingEntry(
                s(r["message_id"]),
                s(r["consumer"]),
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows
        ]

    def streams(self) -> list[str]:
        """Names of this tenant's streams (from the registry set; no SCAN needed)."""
        with translated("list streams"):
            names = self.redis.smembers(self.keys.registry())
        return sorted(s(n) for n in names)


def _iter_entries(reply: Any) -> Iterable[RawEntry]:
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
