"""Periodic jobs next to the workers: the reclaimer and the DLQ sweeper, over every
group the pool consumes (a platform pool's spread over ticks, bounded work per tick).

Each runs in its own thread on a drift-corrected interval; a failing tick is logged and
the next one runs on time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.groupstream import GroupStream
from eventbus.handler import OutcomeCallback
from eventbus.outcomes import Outcomes
from eventbus.platform import TenantRegistry
from eventbus.redis_io import AnyRedis
from workers.pool.config import Subscription, expand
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


class PoolGroups:
    """What a pool consumes, as the supervisor's jobs see it: one
    :class:`~eventbus.groupstream.GroupStream` per concrete subscription, the tenants of
    ``"*"`` subscriptions read from the platform registry (at most once a second)."""

    def __init__(self, client: AnyRedis, settings: PoolSettings) -> None:
        self.client = client
        self.settings = settings
        self._buses: dict[str, TenantEventBus] = {}
        self._registry = TenantRegistry(client)
        self._tenants: list[str] = []
        self._version = -1
        self._read_at = 0.0

    @property
    def platform(self) -> bool:
        """Several subscriptions or ``"*"``: jobs spread their work (see :class:`Rotation`)."""
        subs = self.settings.subscriptions
        return len(subs) > 1 or self.wildcard

    @property
    def wildcard(self) -> bool:
        return any(s.every_tenant for s in self.settings.subscriptions)

    def bus(self, tenant: str) -> TenantEventBus:
        found = self._buses.get(tenant)
        if found is None:
            found = self._buses[tenant] = TenantEventBus(
                self.client, tenant, settings=self.settings.bus_settings(tenant)
            )
        return found

    def group(self, tenant: str, stream: str, group: str) -> GroupStream:
        return self.bus(tenant).group(stream, group)

    def subscriptions(self) -> list[Subscription]:
        if self.wildcard and time.monotonic() - self._read_at >= 1.0:
            version = self._registry.version()
            if version != self._version:
                self._tenants = self._registry.tenants()
                self._version = version
            self._read_at = time.monotonic()
        return expand(self.settings.subscriptions, self._tenants)

    def groups(self) -> list[GroupStream]:
        return [self.group(s.tenant, s.stream, s.group) for s in self.subscriptions()]


class Rotation:
    """The groups one tick works on: all of them in a pool of one subscription; in a
    platform pool, the next slice, sized so each group comes round once per ``every_s``
    while ticks come every ``tick_s`` (bounded work per tick, spread evenly)."""

    def __init__(self, groups: PoolGroups, every_s: float, tick_s: float) -> None:
        self.pool = groups
        self.share = min(1.0, tick_s / every_s)
        self._next = 0

    def next_slice(self) -> tuple[list[GroupStream], bool]:
        """(groups for this tick, whether the rotation came full circle with it)."""
        groups = self.pool.groups()
        if not groups:
            return [], True
        size = max(1, math.ceil(len(groups) * self.share))
        start = self._next % len(groups)
        chosen = groups[start : start + size]
        self._next = start + len(chosen)
        return chosen, self._next >= len(groups)


def tick_s(groups: PoolGroups, interval_s: float) -> float:
    """A job's tick: its interval, or at most 1 s in a platform pool (work spread)."""
    return min(interval_s, 1.0) if groups.platform else interval_s


#: Told of the reclaimer's outcomes with the subscription: (what, reason, (tenant, stream,
#: group)).
GroupOutcomeCallback = Callable[[str, str, tuple[str, str, str]], None]


class Reclaimer:
    """Moves entries left pending (idle too long) on dead or stuck consumers to live
    workers of the pool, and dead-letters poison pills (delivered too often)."""

    def __init__(
        self,
        groups: PoolGroups,
        live_names: Callable[[], Sequence[str]],
        on_outcome: GroupOutcomeCallback | None = None,
    ) -> None:
        self.settings = groups.settings
        self.live_names = live_names
        self.on_outcome = on_outcome
        self.interval_s = tick_s(groups, self.settings.reclaim_interval_s)
        self.rotation = Rotation(groups, self.settings.reclaim_interval_s, self.interval_s)
        self._turn = 0

    def tick(self) -> int:
        names = list(self.live_names())
        if not names:
            return 0

        def next_worker() -> str:  # chunks go round the live workers
            self._turn += 1
            return names[self._turn % len(names)]

        claimed = 0
        for group in self.rotation.next_slice()[0]:
            group.ensure()  # Redis may have restarted without its data: logged loudly
            claims = Outcomes(group, self._told(group)).reclaim(
                next_worker,
                min_idle_ms=self.settings.reclaim_idle_ms,
                max_deliveries=self.settings.max_deliveries,
            )
            claimed += len(claims)
        return claimed

    def _told(self, group: GroupStream) -> OutcomeCallback | None:
        count = self.on_outcome
        if count is None:
            return None
        where = (group.tenant_id, group.stream, group.group)
        return lambda what, reason: count(what, reason, where)


#: A platform pool's sweep line names a subscription only when its backlog is at least
#: this, or its DLQ grew since the last sweep.
UNUSUAL_LAG = 1000


class Sweeper:
    """DLQ retention, safe trimming of acknowledged history, removal of idle consumer
    names with nothing pending, and a line of counts: per stream in a pool of one
    subscription; in a platform pool, totals and only the unusual subscriptions."""

    def __init__(self, groups: PoolGroups, live_names: Callable[[], Sequence[str]]) -> None:
        self.pool = groups
        self.settings = groups.settings
        self.live_names = live_names
        self.interval_s = tick_s(groups, self.settings.sweep_interval_s)
        self.rotation = Rotation(groups, self.settings.sweep_interval_s, self.interval_s)
        self._dlq_sizes: dict[tuple[str, str, str], int] = {}
        self._round: list[tuple[GroupStream, dict[str, int]]] = []
        self.log = structlog.get_logger("workers.pool.jobs").bind(job="sweeper")

    def sweep(self, group: GroupStream) -> dict[str, int]:
        st = self.settings
        dlq = DeadLetterQueue(self.pool.client, group.tenant_id)
        dlq_deleted = dlq.apply_retention(
            group.stream,
            max_age_s=st.dlq_max_age_s,
            max_len=st.dlq_max_len,
            min_age_s=st.dlq_min_age_s,
        )
        trimmed = group.trim_acked(st.maxlen)
        removed = group.remove_idle_consumers(self.live_names(), min_idle_ms=st.consumer_idle_ms)
        return {
            "dlq_deleted": dlq_deleted,
            "trimmed": trimmed,
            "consumers_removed": len(removed),
            **group.counts(),
        }

    def tick(self) -> dict[str, int]:
        chosen, full_circle = self.rotation.next_slice()
        if not chosen:
            return {}
        if not self.pool.platform:
            one = self.sweep(chosen[0])
            chosen[0].log.bind(job="sweeper").info("sweep", **one)
            return one
        self._round.extend((g, self.sweep(g)) for g in chosen)
        if not full_circle:
            return {}
        swept, self._round = self._round, []
        totals: dict[str, int] = {}
        unusual: dict[str, dict[str, int]] = {}
        for group, counts in swept:
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            key = (group.tenant_id, group.stream, group.group)
            grew = counts["dlq_size"] - self._dlq_sizes.get(key, counts["dlq_size"])
            self._dlq_sizes[key] = counts["dlq_size"]
            if counts["backlog"] >= UNUSUAL_LAG or grew > 0:
                unusual[f"{key[0]}/{key[1]}/{key[2]}"] = {
                    "backlog": counts["backlog"],
                    "dlq_growth": grew,
                }
        self.log.info("sweep", subscriptions=len(swept), unusual=unusual, **totals)
        return totals
