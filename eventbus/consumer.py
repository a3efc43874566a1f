"""Consume: read a group's deliveries, call the handler, carry out ack / retry / dead-letter.

Each delivery ends in exactly one outcome, made durable before the ack: handled (XACK),
retry scheduled (``ack_and_retry.lua``) or dead-lettered (``ack_and_dead_letter.lua``).
If an outcome cannot be written, the entry stays pending and is recovered later.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import redis
import structlog
from tenacity import RetryCallState, wait_exponential, wait_random

from eventbus import handler as handlers
from eventbus.acks import AckBuffer
from eventbus.bus import RawEntry, TenantEventBus
from eventbus.dlq import (
    DeadLetterQueue,
)
from eventbus.errors import EventBusError, TenantMismatch
from eventbus.handler import DeliveryObserver, Handler, HandlerContext
from eventbus.heartbeat import Heartbeat
from eventbus.intake import Rejected, poison, screen
from eventbus.keys import validate_consumer, validate_group, validate_stream
from eventbus.outcomes import Outcome, Outcomes
from eventbus.records import FailureInfo, retry_count_of
from eventbus.redis_io import REFUSALS, TRANSIENT, error_text, is_nogroup, s
from eventbus.retry import MAX_RETRIES, RETRY_DELAYS, RetryPolicy
from eventbus.schemas import AgentEvent
from eventbus.settings import ConsumerSettings

# Errors the loop waits out (with backoff) instead of crashing: Redis unreachable or loading,
# or refusing (out of memory, read-only...).
_RECOVERABLE: tuple[type[BaseException], ...] = (*TRANSIENT, EventBusError)


class Reclaimed(NamedTuple):
    """An entry taken over from another consumer by :meth:`EventConsumer.reclaim_abandoned`."""

    key: str
    message_id: str
    #: Deliveries so far (the next handling is delivery ``deliveries + 1``).
    deliveries: int


class EventConsumer:
    """One consumer of one group on one stream of a tenant.

    ``handler(event)`` is a plain sync callable; an exception is a failed attempt. Failed
    events are retried after ``RETRY_DELAYS`` (server clock, durable in Redis, without
    blocking this consumer) and dead-lettered after ``MAX_RETRIES`` retries.
    """

    MAX_RETRIES: int = MAX_RETRIES
    RETRY_DELAYS: Sequence[float] = list(RETRY_DELAYS)

    def __init__(
        self,
        bus: TenantEventBus,
        stream: str,
        group: str,
        consumer_name: str,
        dlq: DeadLetterQueue,
        *,
        max_retries: int | None = None,
        retry_delays: Sequence[float] | None = None,
        policy: RetryPolicy | None = None,
        settings: ConsumerSettings | None = None,
        observers: Sequence[DeliveryObserver] = (),
    ) -> None:
        self.bus = bus
        self.stream = validate_stream(stream)
        self.group = validate_group(group)
        self.consumer_name = validate_consumer(consumer_name)
        if dlq.tenant_id != bus.tenant_id:
            raise TenantMismatch(
                f"dead-letter queue of tenant {dlq.tenant_id!r} given to a consumer of "
                f"tenant {bus.tenant_id!r}"
            )
        self.dlq = dlq
        self.settings = settings or ConsumerSettings()
        self.max_retries = self.MAX_RETRIES if max_retries is None else max_retries
        self.retry_delays = list(self.RETRY_DELAYS if retry_delays is None else retry_delays)
        self._policy = policy
        self._policy_cache: tuple[tuple[int, tuple[float, ...]], RetryPolicy] | None = None
        _ = self.policy  # validate the retry settings now, not at the first failure

        keys = bus.keys
        self._main = keys.stream(stream)
        self._retry = keys.retry_stream(stream, group)
        self._schedule = keys.schedule(stream, group)
        self._r = bus.redis
        self._scripts = bus.scripts
        self.outcomes = Outcomes(bus, stream, group)
        self.log = structlog.get_logger("eventbus.consumer").bind(
            tenant=bus.tenant_id, stream=stream, group=group, consumer=consumer_name
        )
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and taking
        # the Event's lock there can deadlock against the interrupted main thread.
        self._stop_requested = False
        self._ready = False
        self._was_ready = False  # groups were seen once: creating them again is news
        self._own_pending_checked = False
        self._next_promote = 0.0
        self._next_reclaim = 0.0
        self._acks = AckBuffer(self._r, group)
        self._heartbeat = Heartbeat(self._r, group, consumer_name, self.settings.heartbeat_s)
        self._observers: tuple[DeliveryObserver, ...] = (self._heartbeat, *observers)
        # 0.1 s doubling up to the cap, plus up to 0.1 s of jitter (workers do not reconnect
        # in lockstep); written with strategies that every tenacity >= 8.2 has.
        self._reconnect_wait = wait_exponential(
            multiplier=0.1, max=self.settings.reconnect_max_wait_s
        ) + wait_random(0, 0.1)
        self.stats: Counter[str] = Counter()

    # -- public API ----------------------------------------------------------------------

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy: the one given, or built from max_retries / retry_delays."""
        if self._policy is not None:
            return self._policy
        key = (self.max_retries, tuple(self.retry_delays))
        if self._policy_cache is None or self._policy_cache[0] != key:
            self._policy_cache = (key, RetryPolicy(self.max_retries, self.retry_delays))
        return self._policy_cache[1]

    def stop(self) -> None:
        """Ask the loop to stop after the event in hand (safe from signal handlers/threads:
        it only sets a flag)."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def process_loop(self, handler: Handler) -> None:
        """Handle events until :meth:`stop`; survives Redis restarts and dropped links."""
        self.log.info("consumer_started", retry_delays_s=self.policy.delays())
        failures = 0
        try:
            while not self._stop_requested:
                try:
                    self._process(handler, None, acks_with_read=True)
                except redis.ResponseError as exc:
                    if is_nogroup(exc):
                        self._recreate_groups(exc)
                        continue
                    failures += 1  # refused (OOM, READONLY...): back off, never crash
                    self._wait_for_redis(exc, failures)
                    continue
                except _RECOVERABLE as exc:
                    failures += 1
                    self._wait_for_redis(exc, failures)
                    continue
                if failures:
                    self.log.info("redis_reconnected", failed_attempts=failures)
                    failures = 0
        finally:
            try:
                self._acks.flush()
            except redis.RedisError as exc:
                self.log.warning("final_ack_failed", error=error_text(exc))
            self._heartbeat.close()
            self.log.info("consumer_stopped", **dict(self.stats))
            self._stop_requested = False

    def process_batch(self, handler: Handler, *, block_ms: int | None = None) -> int:
        """One round: recover own pending entries, promote due retries, reclaim if it is
        time, then read and handle new entries. Returns how many deliveries it handled."""
        return self._process(handler, block_ms, acks_with_read=False)

    def _process(self, handler: Handler, block_ms: int | None, acks_with_read: bool) -> int:
        """process_batch; the loop leaves the acks of a batch to go with the next read."""
        self._ensure_ready()
        if not acks_with_read or not self._own_pending_checked:
            self._acks.flush()
        elif time.monotonic() >= self._next_reclaim:
            self._acks.flush()  # what is handled must not come back as own pending
        if not self._own_pending_checked:
            done = self._handle_own_pending(handler)
            self._own_pending_checked = True
            if done:
                return done
        now = time.monotonic()
        if now >= self._next_promote:
            self._maintain(self._promote)
        if now >= self._next_reclaim:
            # Also picks up entries a pool's reclaimer assigned to this consumer by name.
            self._next_reclaim = now + self.settings.reclaim_interval_s
            self._maintain(lambda: self.reclaim_abandoned(self.settings.reclaim_idle_ms))
            done = self._handle_own_pending(handler)
            if done:
                return done
        block = self.settings.block_ms if block_ms is None else block_ms
        until_promote_ms = int((self._next_promote - time.monotonic()) * 1000)
        block = max(1, min(block, until_promote_ms))
        acks = self._acks.take()
        try:  # the acks in hand go first, in the same round trip
            entries = self.bus.read_group(
                self.group,
                self.consumer_name,
                {self._main: ">", self._retry: ">"},
                count=self.settings.count,
                block_ms=block,
                acks=acks,
            )
        except TRANSIENT:
            self._acks.put_back(acks)
            raise
        return self._handle_entries(entries, handler, None, flush=not acks_with_read)

    def reclaim_abandoned(self, idle_time_ms: int = 60_000) -> list[Reclaimed]:
        """Take over entries pending on any consumer for longer than ``idle_time_ms``.

        Poison pills (delivered more than ``max_deliveries`` times) are dead-lettered at
        once; entries deleted from the stream meanwhile are dropped from the pending list
        and logged. Returns the entries now pending on this consumer; the loop handles them
        next (``process_batch`` reads this consumer's pending entries first).
        """
        self._ensure_ready()
        out: list[Reclaimed] = []
        for key in (self._main, self._retry):
            start = "0-0"
            while True:
                start, claimed, deleted = self._scripts.reclaim(
                    key,
                    group=self.group,
                    consumer=self.consumer_name,
                    min_idle_ms=idle_time_ms,
                    start=start,
                    count=self.settings.count,
                )
                for message_id in deleted:
                    self.log.warning("reclaim_entry_deleted", message_id=message_id, key=key)
                for message_id, deliveries in claimed:
                    if deliveries > self.settings.max_deliveries:
                        self._dead_letter_poison(key, message_id, deliveries)
                    else:
                        out.append(Reclaimed(key, message_id, deliveries))
                if start == "0-0":
                    break
        if out:
            self.stats["reclaimed"] += len(out)
            self.log.warning("reclaimed", count=len(out), idle_ms=idle_time_ms)
            self._own_pending_checked = False
        return out

    # -- reading -------------------------------------------------------------------------

    def _ensure_ready(self, cause: BaseException | None = None) -> None:
        if self._ready:
            return
        created = self.bus.ensure_group(self.stream, self.group)
        created = self.bus.ensure_group(self.stream, self.group, key=self._retry) or created
        if created and self._was_ready:  # it existed before: it vanished meanwhile
            self.log.error(
                "consumer_group_recreated",
                error=error_text(cause) if cause else "group missing after reconnecting",
                warning="the group or stream vanished (Redis restarted without persistence, "
                "or they were deleted): unacknowledged entries may be lost; reading from "
                "the start",
            )
        self._ready = self._was_ready = True

    def _recreate_groups(self, exc: BaseException) -> None:
        self._ready = False
        self._acks.clear()
        self._ensure_ready(cause=exc)

    def _handle_own_pending(self, handler: Handler) -> int:
        """Handle entries already delivered to this consumer (after a restart or reclaim)."""
        done = 0
        for key in (self._main, self._retry):
            after = "0"
            while not self._stop_requested:
                entries = self.bus.read_group(
                    self.group,
                    self.consumer_name,
                    {key: after},
                    count=self.settings.count,
                    block_ms=None,
                )
                if not entries:
                    break
                counts = self._delivery_counts(key, entries)
                done += self._handle_entries(entries, handler, counts)
                after = entries[-1].message_id
        if done:
            self.log.info("own_pending_handled", count=done)
        return done

    def _delivery_counts(self, key: str, entries: list[RawEntry]) -> dict[str, int]:
        rows = self._r.xpending_range(
            key,
            self.group,
            min=entries[0].message_id,
            max=entries[-1].message_id,
            count=len(entries),
            consumername=self.consumer_name,
        )
        return {s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _maintain(self, step: Callable[[], object]) -> None:
        """Run a maintenance step (promote retries, reclaim); if Redis refuses its writes
        (out of memory, read-only), skip it this round so reads and acks go on."""
        try:
            step()
        except REFUSALS as exc:
            self._next_promote = time.monotonic() + self.settings.retry_poll_ms / 1000
            self.log.warning("maintenance_refused", error=error_text(exc))

    def _promote(self) -> None:
        moved, wait_ms = self._scripts.promote_due(
            self._schedule, self._retry, self.settings.promote_limit
        )
        poll_s = self.settings.retry_poll_ms / 1000
        wait_s = poll_s if wait_ms < 0 else min(poll_s, wait_ms / 1000)
        self._next_promote = time.monotonic() + wait_s
        if moved:
            self.log.debug("retries_promoted", count=moved)

    # -- handling ------------------------------------------------------------------------

    def _handle_entries(
        self,
        entries: list[RawEntry],
        handler: Handler,
        counts: dict[str, int] | None,
        flush: bool = True,
    ) -> int:
        done = 0
        for entry in entries:
            if self._stop_requested:
                break  # the rest stay pending on this consumer and are resumed later
            deliveries = counts.get(entry.message_id, 1) if counts else 1
            if deliveries > 1 or entry.key == self._retry:
                # A redelivery or a retry may be what killed or hung a worker before: ack
                # what is done first, or the events before it are handled again at a crash.
                self._acks.flush()
            self._handle_one(entry, deliveries, handler)
            done += 1
            if self._acks.old():
                self._acks.flush()
        if flush:
            self._acks.flush()
        return done

    def _handle_one(self, entry: RawEntry, deliveries: int, handler: Handler) -> None:
        retry_count = retry_count_of(entry.fields)
        verdict = screen(
            entry.fields,
            deliveries,
            max_deliveries=self.settings.max_deliveries,
            max_bytes=self.bus.settings.max_event_bytes,
            tenant_id=self.bus.tenant_id,
        )
        if isinstance(verdict, Rejected):
            self._dead_letter(entry, verdict.reason, retry_count, verdict.failure)
            return
        self._run_handler(entry, verdict, deliveries, retry_count, handler)

    def _run_handler(
        self,
        entry: RawEntry,
        event: AgentEvent,
        deliveries: int,
        retry_count: int,
        handler: Handler,
    ) -> None:
        def context() -> HandlerContext:
            return HandlerContext(
                message_id=entry.message_id,
                stream=self.stream,
                group=self.group,
                consumer=self.consumer_name,
                delivery_count=deliveries,
                retry_count=retry_count,
                log=self._event_log(entry, event, retry_count),
                bus=self.bus,
            )

        for observer in self._observers:
            observer.started(entry.key, entry.message_id, retry_count)
        try:
            handlers.call(handler, event, context)
        except Exception as exc:  # a failed attempt; BaseException (exit) leaves it pending
            self._finished()
            self._on_failure(entry, event, retry_count, exc)
            return
        except BaseException:
            self._finished()
            raise
        self._finished()
        self._acks.add(entry.key, entry.message_id)
        self.stats["handled"] += 1
        self.log.debug(
            "event_handled",
            event_id=event.event_id,
            correlation_id=event.correlation_id,
            attempt=retry_count + 1,
            message_id=entry.message_id,
        )

    def _finished(self) -> None:
        for observer in self._observers:
            observer.finished()

    def _event_log(self, entry: RawEntry, event: AgentEvent, retry_count: int) -> Any:
        return self.log.bind(
            event_id=event.event_id,
            correlation_id=event.correlation_id,
            attempt=retry_count + 1,
            message_id=entry.message_id,
        )

    def _on_failure(
        self, entry: RawEntry, event: AgentEvent, retry_count: int, exc: Exception
    ) -> None:
        self.stats["failed"] += 1
        outcome = self.outcomes.fail(
            entry.key,
            entry.message_id,
            self.consumer_name,
            retry_count=retry_count,
            failure=FailureInfo.from_exception(exc),
            policy=self.policy,
            log=self._event_log(entry, event, retry_count),
            error=exc,
        )
        self._count(outcome)
        if outcome.result == "retried":
            wake = time.monotonic() + outcome.delay_s
            self._next_promote = min(self._next_promote, wake)

    def _count(self, outcome: Outcome) -> None:
        if outcome.result in ("retried", "dead_lettered"):
            self.stats[outcome.result] += 1

    # -- dead letters --------------------------------------------------------------------

    def _dead_letter_poison(
        self, key: str, message_id: str, deliveries: int, retry_count: int = 0
    ) -> None:
        rejected = poison(deliveries, self.settings.max_deliveries)
        entry = RawEntry(key, message_id, {})
        self._dead_letter(entry, rejected.reason, retry_count, rejected.failure)

    def _dead_letter(
        self, entry: RawEntry, reason: str, retry_count: int, failure: FailureInfo
    ) -> None:
        outcome = self.outcomes.dead_letter(
            entry.key,
            entry.message_id,
            self.consumer_name,
            reason=reason,
            retry_count=retry_count,
            failure=failure,
            log=self.log.bind(message_id=entry.message_id),
        )
        self._count(outcome)

    # -- reconnects -------------------------------------------------------------

    def _wait_for_redis(self, exc: BaseException, failures: int) -> None:
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = failures
        delay = float(self._reconnect_wait(state))
        self._ready = self._ready and failures < 2
        self.log.warning(
            "redis_unavailable", error=error_text(exc), attempt=failures, retry_in_s=delay
        )
        deadline = time.monotonic() + delay
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
