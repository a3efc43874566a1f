"""Periodic jobs next to the workers: the reclaimer and the DLQ sweeper.

Each runs in its own thread on a drift-corrected interval; a failing tick is logged and
the next one runs on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.handler import OutcomeCallback
from eventbus.outcomes import Outcomes
from workers.pool.settings import PoolSettings


class PeriodicJob(threading.Thread):
    """Calls ``tick`` every ``interval_s`` (drift-corrected) until :meth:`stop`."""

    def __init__(self, name: str, interval_s: float, tick: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self._tick = tick
        self._stop_event = threading.Event()
        self.log = structlog.get_logger("workers.pool.jobs").bind(job=name)
        #: When the last tick ended (monotonic; a failed tick counts: the job is alive).
        self.last_tick = time.monotonic()

    def run(self) -> None:
        start = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self._tick()
            except Exception as exc:  # isolate a failing tick
                self.log.error("job_tick_failed", error=f"{type(exc).__name__}: {exc}")
            self.last_tick = time.monotonic()
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
        self,
        bus: TenantEventBus,
        settings: PoolSettings,
        live_names: Callable[[], Sequence[str]],
        on_outcome: OutcomeCallback | None = None,
    ) -> None:
        self.settings = settings
        self.live_names = live_names
        self.group = bus.group(settings.stream, settings.group)
        self.outcomes = Outcomes(self.group, on_outcome)
        self._turn = 0

    def tick(self) -> int:
        names = list(self.live_names())
        if not names:
            return 0
        self.group.ensure()  # Redis may have restarted without its data: logged loudly

        def next_worker() -> str:  # chunks go round the live workers
            self._turn += 1
            return names[self._turn % len(names)]

        claims = self.outcomes.reclaim(
            next_worker,
            min_idle_ms=self.settings.reclaim_idle_ms,
            max_deliveries=self.settings.max_deliveries,
        )
        return len(claims)


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
        self.dlq = dlq
        self.settings = settings
        self.live_names = live_names
        self.group = bus.group(settings.stream, settings.group)
        self.log = self.group.log.bind(job="sweeper")

    def tick(self) -> dict[str, int]:
        st = self.settings
        dlq_deleted = self.dlq.apply_retention(
            st.stream,
            max_age_s=st.dlq_max_age_s,
            max_len=st.dlq_max_len,
            min_age_s=st.dlq_min_age_s,
        )
        trimmed = self.group.trim_acked(st.maxlen)
        removed = self.group.remove_idle_consumers(
            self.live_names(), min_idle_ms=st.consumer_idle_ms
        )
        counts = self.group.counts()
        done = {
            "dlq_deleted": dlq_deleted,
            "trimmed": trimmed,
            "consumers_removed": len(removed),
            **counts,
        }
        self.log.info("sweep", **done)
        return done
