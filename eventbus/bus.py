"""Publish and read: the tenant's streams, its consumer groups, acks and introspection.

``TenantEventBus`` publishes and creates groups for one tenant; what a consumer group does
(reads, acks, moves) lives in :class:`~eventbus.groupstream.GroupStream`, which the bus
hands out. Every key comes from :class:`~eventbus.keys.TenantKeys`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog

from eventbus import tracing
from eventbus.durability import ensure_replicated
from eventbus.entries import (  # noqa: F401  (StreamMessage, PendingEntry: public here)
    PendingEntry,
    StreamMessage,
    encoded_size,
)
from eventbus.errors import (
    GUARD_ERRORS,
    EventTooLarge,
    GroupMissing,
    PublishOutcomeUnknown,
)
from eventbus.groupstream import GroupStream, create_group
from eventbus.guards import Violation, chain_text, check_chain
from eventbus.introspect import Introspection
from eventbus.keys import TenantKeys, check_tenant, validate_consumer, validate_group
from eventbus.records import REASON_HALTED
from eventbus.redis_io import (
    TRANSIENT,
    AnyRedis,
    bus_client,
    call_with_retries,
    is_cluster,
    lossy_fields,
    transient,
    translated,
)
from eventbus.requests import Budget, Requests
from eventbus.schemas import AgentEvent
from eventbus.scripts import PublishItem, PublishRefused, RequestLimits, Scripts
from eventbus.settings import BusSettings
from eventbus.trace import published_record as record

log = structlog.get_logger("eventbus.bus")

#: Events per publish.lua call: Redis serves nobody else while one runs (~10 us per event).
PUBLISH_CHUNK = 100


class TenantEventBus(Introspection):
    """Publish to and read from one tenant's streams.

    ``redis`` is a plain synchronous ``redis.Redis`` or a ``redis.cluster.RedisCluster``
    (all of a tenant's keys share one hash slot), with any settings: the bus talks
    through a sibling connection pool with the same server and credentials that returns raw
    bytes (entries may hold any bytes) and does no retries of its own, so that the bus's
    retry layer is the only one: a publish is retried on connection errors for
    ``settings.retry_budget_s`` (2 s) in all, then raises.
    """

    def __init__(
        self,
        redis: AnyRedis,
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
        self._limits = self._request_limits()  # publish.lua's guard arguments
        self.redis = bus_client(redis)
        self.scripts = Scripts.of(self.redis)
        self._groups: dict[tuple[str, str], GroupStream] = {}
        #: Publishes refused by the agent guards, by reason (hop_limit, cycle, ...).
        self.refusals: Counter[str] = Counter()
        #: Budgets, halts and resumes of the tenant's requests (correlation ids).
        self.requests = Requests(self)

    def group(self, stream: str, group: str) -> GroupStream:
        """The mechanism object of ``group`` on ``stream`` (one per pair, kept)."""
        found = self._groups.get((stream, group))
        if found is None:
            found = self._groups[(stream, group)] = GroupStream(self, stream, group)
        return found

    # -- publishing --------------------------------------------------------------------

    def _encode(self, event: AgentEvent) -> dict[str, str]:
        if not isinstance(event, AgentEvent):
            raise TypeError(f"publish takes an AgentEvent, got {type(event).__name__}")
        check_tenant(self.tenant_id, event.tenant_id, f"event {event.event_id!r}")
        st = self.settings
        violation = check_chain(event.call_chain, st.max_hops, st.max_visits)
        if violation is not None:
            raise self.refused(event, violation)
        fields = event.to_stream_dict()
        tracing.inject(fields)  # traceparent / tracestate of the current span, if any
        size = encoded_size(fields)
        if size > self.settings.max_event_bytes:
            raise EventTooLarge(
                f"event {event.event_id!r} is {size} bytes encoded, over the limit of "
                f"{self.settings.max_event_bytes}; keep large context outside the bus and "
                "put a reference in context_refs"
            )
        return fields

    def refused(
        self, event: AgentEvent, violation: Violation, published: Sequence[str] = ()
    ) -> Exception:
        """Log and count a guard's refusal of ``event``; returns the error to raise."""
        self.refusals[violation.reason] += 1
        log.info(  # info: the caller gets the error too (and the CLI prints one line)
            "publish_refused",
            tenant=self.tenant_id,
            reason=violation.reason,
            event_id=event.event_id,
            correlation_id=event.correlation_id,
            call_chain=chain_text(event.call_chain),
        )
        error = GUARD_ERRORS[violation.reason]
        return error(
            f"event {event.event_id!r} refused: {violation.message}",
            event_id=event.event_id,
            published=tuple(published),
        )

    def _prepare(self, stream: str, events: Sequence[AgentEvent]) -> list[PublishItem]:
        """Validate and encode every event before anything is sent."""
        encoded = [self._encode(e) for e in events]
        markers = self.keys.dedupe_all(stream, [e.event_id for e in events])
        trace = self.settings.trace
        items = []
        request_keys: dict[str, tuple[str, str]] = {}  # a batch is mostly one request
        for event, marker, fields in zip(events, markers, encoded, strict=True):
            cid = event.correlation_id
            if cid is None:
                items.append(PublishItem(marker, fields))
                continue
            found = request_keys.get(cid)
            if found is None:
                trace_key = self.keys.trace(cid) if trace else ""
                found = request_keys[cid] = (self.keys.budget(cid), trace_key)
            budget, trace_key = found
            note = record(event, stream) if trace else ""
            items.append(PublishItem(marker, fields, cid, budget, trace_key, note))
        return items

    def _request_limits(self) -> RequestLimits:
        st = self.settings
        return RequestLimits(
            budget_events=st.budget_events,
            budget_units=st.budget_units,
            request_ttl_ms=int(st.request_ttl_s * 1000),
            trace_max=st.trace_max_events if st.trace else 0,
        )

    def _publish_batch(
        self,
        stream: str,
        events: Sequence[AgentEvent],
        what: str,
        min_replicas: int | None = None,
        replica_timeout_ms: int | None = None,
    ) -> list[tuple[str, bool]]:
        """One publish.lua call per chunk of events (Redis serves nobody else while a call
        runs, so a big batch is split), retried on connection errors. Chunks go in one
        round trip, or one after the other when events carry correlation ids (a guard may
        refuse a chunk: the later ones must not be written then). Then, with
        ``min_replicas`` (default: the settings'), WAIT for that many replicas."""
        durability = self.settings
        if min_replicas is not None or replica_timeout_ms is not None:  # checked like settings
            durability = replace(
                durability,
                min_replicas=durability.min_replicas if min_replicas is None else min_replicas,
                replica_timeout_ms=replica_timeout_ms or durability.replica_timeout_ms,
            )
        batch = self._prepare(stream, events)
        done = self._publish_prepared(stream, events, batch, what)
        if durability.min_replicas > 0:
            ensure_replicated(
                self.redis,
                stream,
                batch[-1].marker,
                [message_id for message_id, _ in done],
                int(durability.min_replicas),
                int(durability.replica_timeout_ms),
                ttl_ms=int(durability.dedupe_window_s * 1000),
            )
        return done

    def _publish_prepared(
        self, stream: str, events: Sequence[AgentEvent], batch: list[PublishItem], what: str
    ) -> list[tuple[str, bool]]:
        st = self.settings
        chunks = [batch[i : i + PUBLISH_CHUNK] for i in range(0, len(batch), PUBLISH_CHUNK)]
        tenant_keys = (
            self.keys.stream(stream),
            self.keys.registry(),
            self.keys.halted(),
            self.keys.spent(),
        )
        options: dict[str, Any] = {
            "dedupe_ttl_ms": int(st.dedupe_window_s * 1000),
            "maxlen": st.maxlen,
            "slack": st.trim_slack,
            "limits": self._limits,
        }
        guarded = any(item.correlation_id for item in batch)

        def call(chunk: list[PublishItem], client: Any = None) -> Any:
            return self.scripts.publish(tenant_keys, stream, chunk, **options, client=client)

        def once() -> tuple[list[tuple[str, bool]], tuple[int, PublishRefused] | None]:
            # several chunks in one round trip; not on a cluster: a cluster pipeline does not
            # reload a script a node lacks (NOSCRIPT), a single call does (Script)
            if len(chunks) > 1 and not guarded and not is_cluster(self.redis):
                pipe = self.redis.pipeline(transaction=False)
                for chunk in chunks:
                    call(chunk, pipe)
                replies = [Scripts.parse_publish(reply) for reply in pipe.execute()]
            else:
                replies = []
                for chunk in chunks:
                    replies.append(Scripts.parse_publish(call(chunk)))
                    if isinstance(replies[-1], PublishRefused):
                        break
            done: list[tuple[str, bool]] = []
            for n, reply in enumerate(replies):
                if isinstance(reply, PublishRefused):
                    return done, (n * PUBLISH_CHUNK + reply.index, reply)
                done += reply
            return done, None

        with translated(what):
            try:
                done, refused = call_with_retries(once, st.retry_budget_s)
            except TRANSIENT as exc:
                if not transient(exc):
                    raise  # a command over several hash slots: a bug (ScriptError)
                raise PublishOutcomeUnknown(events[0].event_id, stream, exc) from exc
        if refused is not None:
            index, refusal = refused
            message = f"request {refusal.correlation_id!r} "
            if refusal.reason == REASON_HALTED:
                message += "is halted ('eventbus resume' lifts it)"
            else:
                message += f"has spent its budget ({refusal.detail})"
            self.requests.recent[refusal.correlation_id] = refusal.reason
            published = [message_id for message_id, _ in done]
            raise self.refused(events[index], Violation(refusal.reason, message), published)
        return done

    def publish(
        self,
        stream: str,
        event: AgentEvent,
        *,
        min_replicas: int | None = None,
        replica_timeout_ms: int | None = None,
    ) -> str:
        """Append ``event`` to the tenant's ``stream``; returns its message id.

        Idempotent by ``event_id`` within the dedupe window: publishing the same event again
        returns the first message id and writes nothing, so connection errors are retried
        (for ``retry_budget_s``, 2 s); if no reply comes, :class:`PublishOutcomeUnknown`.

        ``min_replicas`` (default ``settings.min_replicas``, 0 = off): return only once that
        many replicas have the write (``WAIT``, up to ``replica_timeout_ms``), else raise
        :class:`ReplicationTimeout` (written on the master, may be lost on its failover).
        """
        ((message_id, written),) = self._publish_batch(
            stream, [event], f"publish to {stream!r}", min_replicas, replica_timeout_ms
        )
        if not written:
            log.info(
                "publish_deduplicated",
                tenant=self.tenant_id,
                stream=stream,
                event_id=event.event_id,
                message_id=message_id,
            )
        return message_id

    def publish_many(
        self,
        stream: str,
        events: Sequence[AgentEvent],
        *,
        min_replicas: int | None = None,
        replica_timeout_ms: int | None = None,
    ) -> list[str]:
        """Publish several events in one round trip (each idempotent, in order; up to
        ``PUBLISH_CHUNK`` of them atomically together).

        Every event is validated before anything is sent. Returns the message ids.
        ``min_replicas`` / ``replica_timeout_ms``: as for :meth:`publish` (one WAIT for
        the whole batch).
        """
        if not events:
            return []
        replies = self._publish_batch(
            stream, events, f"publish_many to {stream!r}", min_replicas, replica_timeout_ms
        )
        return [message_id for message_id, _ in replies]

    # -- agent guards: requests ----------------------------------------------------------

    def set_budget(
        self, correlation_id: str, *, events: int | None = None, units: float | None = None
    ) -> Budget:
        """Give request ``correlation_id`` its own budget of events and/or cost units."""
        return self.requests.set_budget(correlation_id, events=events, units=units)

    def halt(self, correlation_id: str) -> bool:
        """Halt a request across every stream and pool of the tenant (within about 1 s)."""
        return self.requests.halt(correlation_id)

    def resume(self, correlation_id: str) -> bool:
        """Undo :meth:`halt`; replay its dead letters (reason ``halted``) to go on."""
        return self.requests.resume(correlation_id)

    # -- groups and reading --------------------------------------------------------------

    def ensure_group(self, stream: str, group: str, *, key: str | None = None) -> bool:
        """Create ``group`` on the stream (and the stream) reading from the very beginning.

        Returns True if it was created now. ``key`` overrides the stream key (retry streams).
        """
        validate_group(group)
        registry = (self.keys.registry(), stream) if key is None else None
        with translated(f"create group {group!r} on {stream!r}"):
            return create_group(self.redis, key or self.keys.stream(stream), group, registry)

    def subscribe(
        self, stream: str, group: str, consumer: str, count: int = 10, block: int = 5000
    ) -> list[StreamMessage]:
        """Read new entries for ``consumer`` in ``group`` (creating the group from the start).

        Returns ``[StreamMessage(message_id, fields), ...]``, empty when nothing arrived
        within ``block`` ms (clamped below the client's socket timeout). Acknowledge each
        with :meth:`ack`; ``msg.event()`` decodes it.
        """
        validate_consumer(consumer)
        gs = self.group(stream, group)
        gs.ensure_once()
        try:
            entries = gs.read(consumer, {gs.main: ">"}, count=count, block_ms=block)
        except GroupMissing as exc:  # recreated from the start of the stream, loudly
            gs.ensure(cause=exc)
            entries = gs.read(consumer, {gs.main: ">"}, count=count, block_ms=block)
        return [StreamMessage(e.message_id, lossy_fields(e.fields)) for e in entries]

    def ack(self, stream: str, group: str, *message_ids: str) -> int:
        """Acknowledge entries of ``stream`` for ``group``; returns how many were pending."""
        if not message_ids:
            return 0
        validate_group(group)
        with translated(f"ack on {stream!r}"):
            return int(self.redis.xack(self.keys.stream(stream), group, *message_ids))
