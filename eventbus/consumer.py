"""Consume: read a group's deliveries, call the handler, carry out ack / retry / dead-letter.

Each delivery ends in exactly one outcome, made durable before the ack: handled (XACK),
retry scheduled (``ack_and_retry.lua``) or dead-lettered (``ack_and_dead_letter.lua``).
If an outcome cannot be written, the entry stays pending and the same outcome is written
again later (the handler is not called again for it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum
from typing import NamedTuple

import structlog
from tenacity import wait_exponential, wait_random

from eventbus.acks import AckBuffer
from eventbus.bus import TenantEventBus
from eventbus.delivery import Deliveries
from eventbus.dlq import DeadLetterQueue
from eventbus.errors import BusConnectionError, BusRefused, EventBusError, GroupMissing
from eventbus.groupstream import RawEntry
from eventbus.handler import DeliveryObserver, Handler, OutcomeCallback
from eventbus.heartbeat import Heartbeat
from eventbus.keys import check_tenant, validate_consumer, validate_group, validate_stream
from eventbus.outcomes import Outcomes
from eventbus.redis_io import error_text
from eventbus.retry import MAX_RETRIES, RETRY_DELAYS, RetryPolicy, wait_s
from eventbus.settings import ConsumerSettings

# Errors the loop waits out (with backoff) instead of crashing: Redis unreachable, loading
# or busy, or refusing (out of memory, read-only...). Anything else from the bus (a script
# the server rejects) is a bug: it is logged and raised.
_OUTAGES = (BusConnectionError, BusRefused)


class Reclaimed(NamedTuple):
    """An entry taken over from another consumer by :meth:`EventConsumer.reclaim_abandoned`."""

    key: str
    message_id: str
    #: Deliveries so far (the next handling is delivery ``deliveries + 1``).
    deliveries: int


class Phase(Enum):
    """Where the loop is; each round moves it on."""

    CONNECT = "connect"  # the groups must be (re)created before anything else
    RECOVER = "recover"  # entries already pending on this consumer come first
    READ = "read"  # new entries, in batches


class EventConsumer:
    """One consumer of one group on one stream of a tenant.

    ``handler(event)`` is a plain sync callable; an exception is a failed attempt. Failed
    events are retried after ``RETRY_DELAYS`` (server clock, durable in Redis, without
    blocking this consumer) and dead-lettered into ``dlq`` (the tenant's dead-letter queue;
    it must belong to the bus's tenant) after ``MAX_RETRIES`` retries.

    Retries are one :class:`RetryPolicy`: ``policy``, or one built from ``max_retries`` /
    ``retry_delays`` (shorthands, defaulting to the class attributes).
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
        on_outcome: OutcomeCallback | None = None,
    ) -> None:
        self.bus = bus
        self.stream = validate_stream(stream)
        self.group = validate_group(group)
        self.consumer_name = validate_consumer(consumer_name)
        check_tenant(bus.tenant_id, dlq.tenant_id, "the dead-letter queue given to the consumer")
        self.dlq = dlq
        if policy is not None and (max_retries is not None or retry_delays is not None):
            raise ValueError("give a policy or max_retries / retry_delays, not both")
        self.policy = policy or RetryPolicy(
            self.MAX_RETRIES if max_retries is None else max_retries,
            self.RETRY_DELAYS if retry_delays is None else retry_delays,
        )
        self.settings = settings or ConsumerSettings()
        self.group_stream = bus.group(stream, group)
        self.outcomes = Outcomes(self.group_stream, on_outcome)
        self.log = structlog.get_logger("eventbus.consumer").bind(
            tenant=bus.tenant_id, stream=stream, group=group, consumer=consumer_name
        )
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and taking
        # the Event's lock there can deadlock against the interrupted main thread.
        self._stop_requested = False
        self._phase = Phase.CONNECT
        self._lost: BaseException | None = None  # why the groups are being ensured again
        self._promote_at = 0.0
        self._retry_due = False  # _promote_at is a scheduled retry's time, not a poll
        self._reclaim_at = 0.0
        self._acks = AckBuffer(self.group_stream)
        self._heartbeat = Heartbeat(self.group_stream, consumer_name, self.settings.heartbeat_s)
        self.stats: Counter[str] = Counter()
        self._deliveries = Deliveries(
            self,
            self._acks,
            (self._heartbeat, *observers),
            on_retry=self._wake_for_retry,
            on_outcome=on_outcome,
        )
        # 0.1 s doubling up to the cap, plus up to 0.1 s of jitter (workers do not reconnect
        # in lockstep).
        self._reconnect_wait = wait_exponential(
            multiplier=0.1, max=self.settings.reconnect_max_wait_s
        ) + wait_random(0, 0.1)

    # -- public API ----------------------------------------------------------------------

    @property
    def max_retries(self) -> int:
        return self.policy.max_retries

    @property
    def retry_delays(self) -> list[float]:
        return self.policy.delays()

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
                    self._round(handler, None, acks_with_read=True)
                except GroupMissing as exc:
                    self._lose_groups(exc)
                    continue
                except _OUTAGES as exc:
                    failures += 1
                    self._wait_for_redis(exc, failures)
                    continue
                except EventBusError as exc:  # a bug (a script the server rejects): surface
                    self.log.critical("consumer_failed", error=error_text(exc))
                    raise
                if failures:
                    self.log.info("redis_reconnected", failed_attempts=failures)
                    failures = 0
        finally:
            self.close()
            self._stop_requested = False

    def process_batch(self, handler: Handler, *, block_ms: int | None = None) -> int:
        """One round: recover own pending entries, promote due retries, reclaim if it is
        time, then read and handle new entries. Returns how many deliveries it handled."""
        try:
            return self._round(handler, block_ms, acks_with_read=False)
        except GroupMissing as exc:
            self._lose_groups(exc)
            raise

    def reclaim_abandoned(self, idle_time_ms: int = 60_000) -> list[Reclaimed]:
        """Take over entries pending on any consumer for longer than ``idle_time_ms``.

        Poison pills (delivered more than ``max_deliveries`` times) are dead-lettered at
        once; entries deleted from the stream meanwhile are dropped from the pending list
        and logged. Returns the entries now pending on this consumer; the loop handles them
        next (``process_batch`` reads this consumer's pending entries first).
        """
        self._ensure_groups()
        claims = self.outcomes.reclaim(
            lambda: self.consumer_name,
            min_idle_ms=idle_time_ms,
            max_deliveries=self.settings.max_deliveries,
        )
        if claims:
            self.stats["reclaimed"] += len(claims)
            self._phase = Phase.RECOVER
        return [Reclaimed(c.key, c.message_id, c.deliveries) for c in claims]

    # -- steps for a multiplexer (eventbus.multiplex reads for many consumers at once) ---

    def maintain(self, handler: Handler, *, reclaim: bool = True) -> int:
        """Everything of a round but the read of new entries: groups, outcomes to write
        again, own pending entries, due retries and (``reclaim``: when nothing read is
        still waiting to be handled, or it would be taken for own pending) reclaims when
        their time has come. Returns how many deliveries it handled (own pending ones)."""
        self._ensure_groups()
        self._deliveries.write_unwritten()
        self._deliveries.trace.flush()
        done = self._recover(handler) if self._phase is Phase.RECOVER else 0
        now = time.monotonic()
        if now >= self._promote_at:
            self._maintain(self._promote)
        if reclaim and now >= self._reclaim_at:
            self._reclaim_at = now + self.settings.reclaim_interval_s
            self._acks.flush()
            self._maintain(lambda: self.reclaim_abandoned(self.settings.reclaim_idle_ms))
            done += self._recover(handler)
        return done

    @property
    def ready(self) -> bool:
        """Groups ensured and own pending entries handled: new entries may be read."""
        return self._phase is Phase.READ

    def lose_connection(self) -> None:
        """Redis went away: ensure the groups and recover own pending entries next (a
        reply may have been lost with the connection)."""
        self._phase = Phase.CONNECT

    def maintenance_due_at(self) -> float:
        """When :meth:`maintain` next has something to do (monotonic)."""
        if self._phase is not Phase.READ or self._deliveries.has_unwritten():
            return 0.0
        return min(self._promote_at, self._reclaim_at)

    @property
    def retry_due(self) -> bool:
        """Whether :meth:`maintenance_due_at` is a scheduled retry's time (it should be
        kept to the moment), not an idle poll (which may be put off a little)."""
        return (
            self._retry_due
            and self._promote_at <= self._reclaim_at
            and self.maintenance_due_at() > 0
        )

    def stagger(self, offset_s: float) -> None:
        """Push the first promote and reclaim ``offset_s`` on (many consumers in one
        process spread their maintenance instead of doing it all at once)."""
        now = time.monotonic()
        if now + offset_s > self._promote_at:
            self._promote_at, self._retry_due = now + offset_s, False
        self._reclaim_at = max(self._reclaim_at, now + offset_s)

    def handle_new(self, entry: RawEntry, handler: Handler) -> None:
        """Handle one entry read for this consumer by a multiplexer (first delivery)."""
        self._deliveries.handle(entry, 1, handler)
        if self._acks.old():
            self._acks.flush()

    def flush_acks(self) -> None:
        self._acks.flush()

    def lose_groups(self, exc: BaseException) -> None:
        """The groups are gone (NOGROUP): ensure them again before the next step."""
        self._lose_groups(exc)

    def close(self) -> None:
        """What :meth:`process_loop` does on its way out: last acks, trace, heartbeat."""
        try:
            self._acks.flush()
        except EventBusError as exc:
            self.log.warning("final_ack_failed", error=error_text(exc))
        self._deliveries.trace.flush()
        self._heartbeat.close()
        self.log.info("consumer_stopped", **dict(self.stats))

    # -- the round -----------------------------------------------------------------------

    def _round(self, handler: Handler, block_ms: int | None, acks_with_read: bool) -> int:
        self._ensure_groups()
        self._deliveries.write_unwritten()
        self._deliveries.trace.flush()  # outcome notes of the last round (traced requests)
        if self._phase is Phase.RECOVER:
            done = self._recover(handler)
            if done:
                return done
        elif not acks_with_read:
            self._acks.flush()
        now = time.monotonic()
        if now >= self._promote_at:
            self._maintain(self._promote)
        if now >= self._reclaim_at:
            # Also picks up entries a pool's reclaimer assigned to this consumer by name.
            self._reclaim_at = now + self.settings.reclaim_interval_s
            self._acks.flush()  # what is handled must not come back as own pending
            self._maintain(lambda: self.reclaim_abandoned(self.settings.reclaim_idle_ms))
            done = self._recover(handler)
            if done:
                return done
        return self._read_and_handle(handler, block_ms, flush=not acks_with_read)

    def _ensure_groups(self) -> None:
        if self._phase is Phase.CONNECT:
            self.group_stream.ensure(cause=self._lost)
            self._lost = None
            self._phase = Phase.RECOVER  # a reply may have been lost with the connection

    def _lose_groups(self, exc: BaseException) -> None:
        self._phase = Phase.CONNECT
        self._lost = exc
        self._acks.clear()  # the pending list is gone with the group
        self._deliveries.forget_unwritten()

    def _read_and_handle(self, handler: Handler, block_ms: int | None, flush: bool) -> int:
        block = self.settings.block_ms if block_ms is None else block_ms
        until_promote_ms = int((self._promote_at - time.monotonic()) * 1000)
        block = max(1, min(block, until_promote_ms))
        acks = self._acks.take()
        try:  # the acks in hand go first, in the same round trip
            entries = self.group_stream.read_new(
                self.consumer_name, count=self.settings.count, block_ms=block, acks=acks
            )
        except BusConnectionError:
            self._acks.put_back(acks)
            raise
        done = 0
        for entry in entries:
            if self._stop_requested:
                break  # the rest stay pending on this consumer and are resumed later
            self._deliveries.handle(entry, 1, handler)
            done += 1
            if self._acks.old():
                self._acks.flush()
        if flush:
            self._acks.flush()
        return done

    def _recover(self, handler: Handler) -> int:
        """Handle the entries already delivered to this consumer (after a restart, a lost
        connection or a reclaim), one at a time.

        Why one at a time: a worker that dies in a handler leaves its whole batch pending.
        Reading the batch again would count a delivery for every entry in it at each crash,
        and after ``max_deliveries`` crashes the innocent batch-mates of a poison pill would
        be dead-lettered with it. Read singly, each read counts a delivery for the one entry
        that is then in the handler, so a crash is blamed on that entry alone: the pill
        reaches ``max_deliveries`` and is dead-lettered; its batch-mates are handled.
        """
        self._acks.flush()
        done = 0
        for key in self.group_stream.keys:
            after = "0"
            while not self._stop_requested:
                entries = self.group_stream.read_own(self.consumer_name, key, after, count=1)
                if not entries:
                    break
                entry = entries[0]
                after = entry.message_id
                if self._deliveries.is_unwritten(key, entry.message_id):
                    continue  # its outcome is decided: written again, not handled again
                deliveries = self.group_stream.delivery_count(
                    self.consumer_name, key, entry.message_id
                )
                self._deliveries.handle(entry, deliveries, handler)
                self._acks.flush()
                done += 1
        self._phase = Phase.READ
        if done:
            self.log.info("own_pending_handled", count=done)
        return done

    def _maintain(self, step: Callable[[], object]) -> None:
        """Run a maintenance step (promote retries, reclaim); if Redis refuses its writes
        (out of memory, read-only), skip it this round so reads and acks go on."""
        try:
            step()
        except BusRefused as exc:
            self._promote_at = time.monotonic() + self.settings.retry_poll_ms / 1000
            self._retry_due = False
            self.log.warning("maintenance_refused", error=error_text(exc))

    def _wake_for_retry(self, delay_s: float) -> None:
        due_at = time.monotonic() + delay_s
        if due_at <= self._promote_at:
            self._promote_at, self._retry_due = due_at, True

    def _promote(self) -> None:
        moved, wait_ms = self.group_stream.promote_due(self.settings.promote_limit)
        poll_s = self.settings.retry_poll_ms / 1000
        self._retry_due = 0 <= wait_ms / 1000 <= poll_s  # else the poll comes first
        self._promote_at = time.monotonic() + (wait_ms / 1000 if self._retry_due else poll_s)
        if moved:
            self.log.debug("retries_promoted", count=moved)

    # -- reconnects ----------------------------------------------------------------------

    def _wait_for_redis(self, exc: BaseException, failures: int) -> None:
        delay = wait_s(self._reconnect_wait, failures)
        self._phase = Phase.CONNECT  # then own pending first: a reply may have been lost
        self.log.warning(
            "redis_unavailable", error=error_text(exc), attempt=failures, retry_in_s=delay
        )
        deadline = time.monotonic() + delay
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
