"""Periodic jobs next to the workers: the reclaimer and the DLQ sweeper.

Each runs in its own thread on a drift-corrected interval; a failing tick is logged and
the next one runs on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import structlog

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.intake import poison
from eventbus.outcomes import Outcomes
from eventbus.redis_io import is_nogroup, s
from workers.pool.settings import PoolSettings


class PeriodicJob(threading.Thread):
    """Calls ``tick`` every ``interval_s`` (drift-corrected) until :meth:`stop`."""

    def __init__(self, name: str, interval_s: float, tick: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self._tick = tick
        self._stop_event = threading.Event()
        self.log = structlog.get_logger("workers.pool.jobs").bind(job=name)
        self.ticks = 0
        self.last_ok = time.monotonic()

    def run(self) -> None:
        start = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self._tick()
                self.last_ok = time.monotonic()
            except Exception as exc:  # isolate a failing tick
                self.log.error("job_tick_failed", error=f"{type(exc).__name__}: {exc}")
            self.ticks += 1
            # Drift correction: ticks stay on the grid start + k * interval.
            now = time.monotonic()
            skipped = int((now - start) / self.interval_s)
            next_at = start + (skipped + 1) * self.interval_s
            self._stop_event.wait(max(0.0, next_at - now))

    def stop(self) -> None:
        self._stop_event.set()


class Reclaimer:
    """Moves entries left pending (idle too long) on dead or stuck consumers to live
    workers of the pool, and dead-letters poison pills (delivered too often)."""

    def __init__(
        self, bus: TenantEventBus, settings: PoolSettings, live_names: Callable[[], Sequence[str]]
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.live_names = live_names
        self.outcomes = Outcomes(bus, settings.stream, settings.group)
        self.keys = (
            bus.keys.stream(settings.stream),
            bus.keys.retry_stream(settings.stream, settings.group),
        )
        self.log = structlog.get_logger("workers.reclaimer").bind(
            tenant=settings.tenant, stream=settings.stream, group=settings.group
        )
        self._turn = 0
        self._groups_existed = False  # set once the groups were there: recreating is news

    def tick(self) -> int:
        names = list(self.live_names())
        if not names:
            return 0
        st = self.settings
        created = self.bus.ensure_group(st.stream, st.group)  # Redis may have restarted
        created = self.bus.ensure_group(st.stream, st.group, key=self.keys[1]) or created
        if created and self._groups_existed:  # as loud as when a worker recreates them
            self.log.error(
                "consumer_group_recreated",
                warning="the group or stream vanished (Redis restarted without persistence, "
                "or they were deleted): unacknowledged entries may be lost; reading from "
                "the start",
            )
        self._groups_existed = True
        moved = 0
        for key in self.keys:
            start = "0-0"
            while True:
                target = names[self._turn % len(names)]
                self._turn += 1
                start, claimed, deleted = self.bus.scripts.reclaim(
                    key,
                    group=self.settings.group,
                    consumer=target,
                    min_idle_ms=self.settings.reclaim_idle_ms,
                    start=start,
                    count=100,
                )
                for message_id in deleted:
                    self.log.warning("reclaim_entry_deleted", message_id=message_id)
                for message_id, deliveries in claimed:
                    if deliveries > self.settings.max_deliveries:
                        self._poison(key, message_id, target, deliveries)
                    else:
                        moved += 1
                if claimed:
                    self.log.warning("reclaimed", count=len(claimed), consumer=target)
                if start == "0-0":
                    break
        return moved

    def _poison(self, key: str, message_id: str, owner: str, deliveries: int) -> None:
        rejected = poison(deliveries, self.settings.max_deliveries)
        self.outcomes.dead_letter(
            key,
            message_id,
            owner,
            reason=rejected.reason,
            retry_count=0,
            failure=rejected.failure,
            log=self.log.bind(message_id=message_id),
        )


class Sweeper:
    """DLQ retention, safe trimming of acknowledged history, removal of idle consumer
    names with nothing pending, and a line of counts for the stream."""

    def __init__(
        self,
        bus: TenantEventBus,
        dlq: DeadLetterQueue,
        settings: PoolSettings,
        live_names: Callable[[], Sequence[str]],
    ) -> None:
        self.bus = bus
        self.dlq = dlq
        self.settings = settings
        self.live_names = live_names
        self.main = bus.keys.stream(settings.stream)
        self.retry = bus.keys.retry_stream(settings.stream, settings.group)
        self.log = structlog.get_logger("workers.sweeper").bind(
            tenant=settings.tenant, stream=settings.stream, group=settings.group
        )

    def tick(self) -> dict[str, int]:
        st = self.settings
        dlq_deleted = self.dlq.apply_retention(
            st.stream,
            max_age_s=st.dlq_max_age_s,
            max_len=st.dlq_max_len,
            min_age_s=st.dlq_min_age_s,
        )
        trimmed = 0
        if st.maxlen > 0:
            trimmed += self.bus.scripts.trim_acked(self.main, st.maxlen)
        trimmed += self.bus.scripts.trim_acked(self.retry, 0)
        removed = self._remove_idle_consumers()
        counts = self.counts()
        self.log.info(
            "sweep",
            dlq_deleted=dlq_deleted,
            trimmed=trimmed,
            consumers_removed=removed,
            **counts,
        )
        return {
            "dlq_deleted": dlq_deleted,
            "trimmed": trimmed,
            "consumers_removed": removed,
            **counts,
        }

    def _remove_idle_consumers(self) -> int:
        live = set(self.live_names())
        removed = 0
        r = self.bus.redis
        for key in (self.main, self.retry):
            if not r.exists(key):
                continue
            try:
                consumers = r.xinfo_consumers(key, self.settings.group)
            except redis.ResponseError as exc:
                if is_nogroup(exc):  # the workers have not created the group yet
                    continue
                raise
            for c in consumers:
                name = s(c["name"])
                if name in live or int(c["pending"]) > 0:
                    continue
                if self.bus.scripts.delete_idle_consumer(
                    key,
                    group=self.settings.group,
                    consumer=name,
                    min_idle_ms=self.settings.consumer_idle_ms,
                ):
                    removed += 1
                    self.log.info("consumer_removed", consumer=name, key=key)
        return removed

    def counts(self) -> dict[str, int]:
        r = self.bus.redis
        st = self.settings
        lag = pending = 0
        for key in (self.main, self.retry):
            if not r.exists(key):
                continue
            for g in r.xinfo_groups(key):
                if s(g["name"]) == st.group:
                    lag += int(g.get("lag") or 0)
                    pending += int(g["pending"])
        return {
            "backlog": lag,
            "pending": pending,
            "scheduled_retries": int(r.zcard(self.bus.keys.schedule(st.stream, st.group))),
            "dlq_size": self.dlq.count(st.stream),
        }
