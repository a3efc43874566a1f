"""Consume many subscriptions in one process: a layer above :class:`EventConsumer`.

Each subscription (tenant, stream, group) keeps its own consumer, so delivery is unchanged:
the same intake screen, acks, retries, dead letters, poison-pill blame (own pending entries
are recovered one at a time) and reclaims. This layer only decides *what to read* and *what
to handle next*:

* one blocking XREADGROUP covers the streams of every subscription that shares a group name
  (no polling while idle); on a Redis Cluster (the consumers' client) split by hash slot,
  since a Redis Cluster command takes keys of one slot only;
* entries read wait in per-subscription buffers; the next one to handle is chosen by the
  fair scheduler (:mod:`eventbus.fairness`), charged the handler's run time, and held back
  while its tenant is at its in-flight limit (an :class:`InFlightGate` counts pool-wide);
* while handling, subscriptions whose buffers ran (nearly) dry are read again without
  blocking every ``refill_s`` (longer with more than 100 such subscriptions), so a quiet
  tenant's new event waits about that long behind a noisy tenant's backlog;
* maintenance (due retries, reclaims) runs per subscription when it is due, at most
  ``maintain_per_round`` subscriptions per round, first ones staggered over the interval.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import redis.crc
import structlog

from eventbus.consumer import EventConsumer
from eventbus.errors import BusConnectionError, BusRefused, EventBusError, GroupMissing
from eventbus.fairness import FairScheduler, within_limit
from eventbus.groupstream import RawEntry
from eventbus.handler import Handler
from eventbus.redis_io import error_text, is_cluster

SubscriptionKey = tuple[str, str, str]  # (tenant, stream, group)
#: Maintenance times are rounded up to this grid (s): a due retry is at most this late.
MAINTENANCE_GRID_S = 0.25
#: ... and idle polls further away than this to this one, so an idle worker with many
#: members wakes about once per blocking read.
IDLE_GRID_S = 2.0


class InFlightGate(Protocol):
    """Counts events of a tenant in handlers across a pool (a worker process's view)."""

    def allowed(self, tenant: str, limit: int | None) -> bool:
        """Whether one more may start (a cheap check, may be stale)."""
        ...

    def start(self, tenant: str, limit: int | None) -> bool:
        """Claim a place for one event of ``tenant``; False if that went over ``limit``."""
        ...

    def finish(self) -> None: ...


class LocalGate:
    """An :class:`InFlightGate` for one process alone (a process runs one handler at a
    time, so the limit only matters across processes: see the pool's gate)."""

    def allowed(self, tenant: str, limit: int | None) -> bool:
        return within_limit(limit, 0)

    def start(self, tenant: str, limit: int | None) -> bool:
        return within_limit(limit, 0)

    def finish(self) -> None:
        return None


@dataclass
class Member:
    """One subscription in the multiplexer."""

    key: SubscriptionKey
    consumer: EventConsumer
    handler: Handler
    max_in_flight: int | None = None
    buffer: deque[RawEntry] = field(default_factory=deque)
    leaving: bool = False  # removed: hand over nothing new, finish what is buffered
    slot: int = 0  # its streams' hash slot on a Redis Cluster (0 on one node: any mix)

    @property
    def tenant(self) -> str:
        return self.key[0]


class Multiplexer:
    """Runs many :class:`EventConsumer` (all with this process's consumer name) fairly."""

    def __init__(
        self,
        consumer_name: str,
        *,
        count: int = 100,
        block_ms: int = 2000,
        gate: InFlightGate | None = None,
        refill_s: float = 0.002,
        maintain_per_round: int = 64,
    ) -> None:
        self.consumer_name = consumer_name
        self.count = count
        self.block_ms = block_ms
        self.gate = gate or LocalGate()
        self.refill_s = refill_s
        self.maintain_per_round = maintain_per_round
        self.scheduler = FairScheduler()
        self.members: dict[SubscriptionKey, Member] = {}
        self._by_stream_key: dict[str, Member] = {}
        self._ready: dict[SubscriptionKey, None] = {}  # members with entries buffered
        self._limits: dict[str, int] = {}  # tenant -> its least max_in_flight
        self._due: list[tuple[float, int, SubscriptionKey]] = []  # maintenance heap
        self._due_at: dict[SubscriptionKey, float] = {}
        self._seq = 0
        self._stop_requested = False
        self._last_read = 0.0
        self._failures = 0
        self._tick: tuple[float, Callable[[], object]] | None = None
        self._tick_at = 0.0
        self.log = structlog.get_logger("eventbus.multiplex").bind(consumer=consumer_name)

    # -- membership ------------------------------------------------------------------------

    def add(
        self,
        consumer: EventConsumer,
        handler: Handler,
        *,
        weight: float = 1.0,
        max_in_flight: int | None = None,
        stagger_s: float = 0.0,
    ) -> None:
        """Consume ``consumer``'s subscription too (its first maintenance is put off by a
        random part of ``stagger_s``)."""
        key = (consumer.bus.tenant_id, consumer.stream, consumer.group)
        if key in self.members and not self.members[key].leaving:
            raise ValueError(f"subscription {'/'.join(key)} is already consumed")
        member = Member(key, consumer, handler, max_in_flight)
        if is_cluster(consumer.bus.redis):  # one command there takes keys of one slot
            member.slot = redis.crc.key_slot(consumer.group_stream.main.encode())
        self.members[key] = member
        for stream_key in consumer.group_stream.keys:
            self._by_stream_key[stream_key] = member
        self.scheduler.add(key, weight=weight, tenant=key[0])
        self._set_limits()
        if stagger_s > 0:
            consumer.stagger(random.uniform(0, stagger_s))
        self._schedule(member, 0.0)

    def remove(self, key: SubscriptionKey) -> None:
        """Stop reading for ``key``; entries already read are handled, then it closes."""
        member = self.members.get(key)
        if member is not None:
            member.leaving = True
            if not member.buffer:
                self._drop(member)

    def _drop(self, member: Member) -> None:
        self.members.pop(member.key, None)
        for stream_key in member.consumer.group_stream.keys:
            self._by_stream_key.pop(stream_key, None)
        self.scheduler.remove(member.key)
        self._due_at.pop(member.key, None)
        self._ready.pop(member.key, None)
        self._set_limits()
        member.consumer.close()

    def every(self, interval_s: float, fn: Callable[[], object]) -> None:
        """Call ``fn`` between rounds every ``interval_s`` (blocking reads wait no longer),
        e.g. to add and remove members as tenants come and go."""
        self._tick = (interval_s, fn)
        self._tick_at = time.monotonic() + interval_s

    def _set_limits(self) -> None:
        """Each limited tenant's in-flight limit (the least of its subscriptions')."""
        limits: dict[str, int] = {}
        for m in self.members.values():
            if m.max_in_flight is not None:
                limits[m.tenant] = min(limits.get(m.tenant, m.max_in_flight), m.max_in_flight)
        self._limits = limits

    def stop(self) -> None:
        """Stop reading; handle what is read already, then return from :meth:`run` (a
        flag only: safe from signal handlers)."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Handle events of every member until :meth:`stop`, then the entries already
        read (they are pending on this consumer; a removed subscription would leave them
        to nobody); survives Redis outages."""
        self.log.info("multiplexer_started", subscriptions=len(self.members))
        try:
            while not self._stop_requested or self._buffered():
                try:
                    self.round()
                except (BusConnectionError, BusRefused) as exc:
                    if self._stop_requested:
                        break  # what is read stays pending and is recovered later
                    self._failures += 1
                    self._wait_for_redis(exc)
                    continue
                except EventBusError as exc:
                    self.log.critical("consumer_failed", error=error_text(exc))
                    raise
                if self._failures:
                    self.log.info("redis_reconnected", failed_attempts=self._failures)
                    self._failures = 0
        finally:
            for member in list(self.members.values()):
                member.consumer.close()
            self._stop_requested = False

    def _buffered(self) -> bool:
        return bool(self._ready)

    def round(self) -> int:
        """Maintenance that is due, then one handled event (reading first, blocking only
        when nothing is buffered). Returns how many deliveries it handled. Once stopping,
        only what is buffered is handled."""
        if self._stop_requested:
            return self._handle_next() if self._buffered() else 0
        if self._tick is not None and time.monotonic() >= self._tick_at:
            self._tick_at = time.monotonic() + self._tick[0]
            self._tick[1]()
        done = self._maintain_due()
        if self._stop_requested:
            return done
        if self._buffered():
            # a read of the dry members' streams costs Redis about one step per key:
            # with many members it comes less often
            dry = len(self.members) - len(self._ready)
            if time.monotonic() - self._last_read >= self.refill_s * max(1.0, dry / 100):
                self._read(block_ms=None, dry_only=True)
            return done + self._handle_next()
        self._flush_acks()
        self._read(block_ms=self._block_ms(), dry_only=False)
        return done

    def _allowed(self, tenant: str) -> bool:
        return self.gate.allowed(tenant, self._limits.get(tenant))

    def _handle_next(self) -> int:
        key = self.scheduler.pick(self._ready, self._allowed if self._limits else None)
        if key is None:  # every tenant with events waiting is at its in-flight limit
            time.sleep(0.005)
            return 0
        member = self.members[key]  # type: ignore[index]
        if not self.gate.start(member.tenant, self._limits.get(member.tenant)):
            return 0  # another worker took the last place meanwhile: pick again
        entry = member.buffer.popleft()
        if not member.buffer:
            self._ready.pop(member.key, None)
        began = time.perf_counter()
        try:
            member.consumer.handle_new(entry, member.handler)
        finally:
            self.gate.finish()
            self.scheduler.charge(member.key, time.perf_counter() - began)
        self._schedule(member, member.consumer.maintenance_due_at(), member.consumer.retry_due)
        if member.leaving and not member.buffer:
            self._drop(member)
        return 1

    # -- reading ---------------------------------------------------------------------------

    def _batches(self, members: list[Member]) -> dict[Hashable, list[Member]]:
        """Members whose streams one XREADGROUP can cover: same group (and, on a cluster,
        same hash slot: ``redis.crc.key_slot``)."""
        batches: dict[Hashable, list[Member]] = {}
        for m in members:
            batches.setdefault((m.key[2], m.slot), []).append(m)
        return batches

    def _read(self, *, block_ms: int | None, dry_only: bool) -> None:
        """Read for every member, or (``dry_only``) those whose buffers are (nearly)
        empty: a quarter of ``count`` left is read again, so a busy member does not wait
        for the next refill with nothing in hand."""
        self._last_read = time.monotonic()
        low = self.count // 4
        wanted = [
            m
            for m in self.members.values()
            if not m.leaving and (not dry_only or len(m.buffer) <= low) and m.consumer.ready
        ]
        if not wanted:
            if block_ms:  # nothing to read from: wait for maintenance instead
                time.sleep(min(block_ms, 50) / 1000)
            return
        batches = list(self._batches(wanted).values())
        # several batches cannot share one blocking call: each blocks for a part
        each = None if block_ms is None else max(1, block_ms // len(batches))
        for batch in batches:
            streams = {k: ">" for m in batch for k in m.consumer.group_stream.keys}
            try:
                entries = batch[0].consumer.group_stream.read(
                    self.consumer_name, streams, count=self.count, block_ms=each
                )
            except GroupMissing as exc:
                for m in batch:
                    self._lose(m, exc)
                continue
            for entry in entries:
                member = self._by_stream_key.get(entry.key)
                if member is not None:
                    member.buffer.append(entry)
                    self._ready[member.key] = None
            if entries and each is not None:
                each = None  # something to do: do not block on the other batches

    def _flush_acks(self) -> None:
        for member in self.members.values():
            member.consumer.flush_acks()

    def _block_ms(self) -> int:
        now = time.monotonic()
        until = [self.block_ms / 1000]
        if self._due:
            until.append(self._due[0][0] - now)
        if self._tick is not None:
            until.append(self._tick_at - now)
        return int(max(1, min(until) * 1000))

    # -- maintenance -----------------------------------------------------------------------

    def _schedule(self, member: Member, due_at: float, retry: bool = False) -> None:
        """Make sure ``member`` is maintained at ``due_at`` (or earlier). Times are rounded
        up to a grid (``MAINTENANCE_GRID_S``; ``IDLE_GRID_S`` for idle polls further off,
        never for a scheduled ``retry``): an idle worker with many members wakes for all
        that is due at once, not once per member."""
        if due_at > 0:
            soon = retry or due_at - time.monotonic() < IDLE_GRID_S
            grid = MAINTENANCE_GRID_S if soon else IDLE_GRID_S
            due_at = math.ceil(due_at / grid) * grid
        known = self._due_at.get(member.key)
        if known is not None and known <= due_at:
            return
        self._due_at[member.key] = due_at
        self._seq += 1
        heapq.heappush(self._due, (due_at, self._seq, member.key))

    def _maintain_due(self) -> int:
        done = 0
        now = time.monotonic()
        for _ in range(self.maintain_per_round):
            if not self._due or self._due[0][0] > now or self._stop_requested:
                break
            due_at, _, key = heapq.heappop(self._due)
            member = self.members.get(key)
            if member is None or self._due_at.get(key) != due_at:
                continue  # removed, or a stale entry of the heap
            del self._due_at[key]
            try:
                # entries in the buffer are pending on us: a reclaim's own-pending pass
                # would handle them twice, so it waits until they are handled
                done += member.consumer.maintain(member.handler, reclaim=not member.buffer)
            except GroupMissing as exc:
                self._lose(member, exc)
            except (BusConnectionError, BusRefused):
                self._schedule(member, 0.0)
                raise
            due_at = max(member.consumer.maintenance_due_at(), now + 0.01)
            self._schedule(member, due_at, member.consumer.retry_due)
        return done

    def _lose(self, member: Member, exc: BaseException) -> None:
        member.buffer.clear()  # the group (and its pending list) is gone
        self._ready.pop(member.key, None)
        member.consumer.lose_groups(exc)
        self._schedule(member, 0.0)

    def _wait_for_redis(self, exc: BaseException) -> None:
        delay = min(5.0, 0.1 * 2 ** min(self._failures, 6)) + random.uniform(0, 0.1)
        self.log.warning(
            "redis_unavailable", error=error_text(exc), attempt=self._failures, retry_in_s=delay
        )
        self._ready.clear()
        for member in self.members.values():
            member.buffer.clear()  # pending on us: recovered as own pending entries
            member.consumer.lose_connection()
            self._schedule(member, 0.0)
        deadline = time.monotonic() + delay
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
