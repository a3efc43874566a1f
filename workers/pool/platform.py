"""A platform pool's worker: many subscriptions (tenants x streams) in one process through
:class:`~eventbus.multiplex.Multiplexer`, the pool-wide in-flight limit kept in the slots'
shared memory, and the tenants of ``"*"`` subscriptions found in the platform registry.

In-flight limit (``max_in_flight``, events of one tenant in handlers across the pool): each
worker runs one handler at a time, so the pool's count of a tenant is the number of slots
whose ``in_flight`` names it. A worker claims by writing the tenant into its own slot and
then counting; over the limit it clears its slot and picks again (two workers racing may
both back off, never both go over). A killed worker's slot is cleared by the supervisor
when it reaps it, so a crash leaks no place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

import structlog

from eventbus import DeadLetterQueue, EventConsumer, TenantEventBus
from eventbus.errors import EventBusError
from eventbus.handler import DeliveryObserver, Handler
from eventbus.metrics import STAGE_PUBLISH, ConsumerMetrics, Tallies, use_multiprocess_dir
from eventbus.multiplex import Multiplexer
from eventbus.platform import TenantRegistry
from eventbus.redis_io import AnyRedis, connect
from eventbus.settings import ConsumerSettings
from workers.pool.config import Subscription, expand
from workers.pool.loader import HandlerLoadError, load_handler
from workers.pool.settings import PoolSettings
from workers.pool.worker import (
    EXIT_HANDLER_LOAD,
    SlotReporter,
    SlotState,
    clock_offset_s,
    start_worker,
)

#: Entries read per stream per read: small, so a worker holds few events of one tenant
#: that the others could have handled, and a graceful stop finishes them quickly.
PLATFORM_COUNT = 10
#: How often the tenants of ``"*"`` subscriptions are looked up (a GET of the registry's
#: counter; SMEMBERS when it moved).
DISCOVERY_INTERVAL_S = 1.0


#: Idle maintenance of each subscription in a platform pool, at most this far apart (a
#: worker may hold a thousand). Retries a worker schedules wake it at their time anyway;
#: the poll only finds retries whose scheduling worker died. Entries the supervisor's
#: reclaimer hands to this worker are picked up at the reclaim interval.
PLATFORM_RETRY_POLL_MS = 30_000
PLATFORM_RECLAIM_INTERVAL_S = 120.0


def platform_consumer_settings(given: ConsumerSettings, members: int) -> ConsumerSettings:
    """A member's settings in a worker of ``members`` subscriptions: idle work per
    subscription is spread thinner the more there are (0.1 s of reclaim interval and
    30 ms of retry poll per subscription, never below the pool's own settings)."""
    return replace(
        given,
        count=min(given.count, PLATFORM_COUNT),
        retry_poll_ms=max(given.retry_poll_ms, min(PLATFORM_RETRY_POLL_MS, 30 * members)),
        reclaim_interval_s=max(
            given.reclaim_interval_s, min(PLATFORM_RECLAIM_INTERVAL_S, 0.1 * members)
        ),
    )


class SlotGate:
    """The pool-wide in-flight count of a tenant, from every slot's shared memory."""

    def __init__(self, mine: SlotState, peers: Sequence[SlotState]) -> None:
        self.mine = mine
        self.peers = [p for p in peers if p.in_flight is not None]

    def _count(self, tenant: bytes) -> int:
        return sum(1 for p in self.peers if p.in_flight.value == tenant)

    def allowed(self, tenant: str, limit: int | None) -> bool:
        return limit is None or self._count(tenant.encode()) < limit

    def start(self, tenant: str, limit: int | None) -> bool:
        raw = tenant.encode()
        self.mine.in_flight.value = raw
        if limit is not None and self._count(raw) > limit:
            self.mine.in_flight.value = b""
            return False
        return True

    def finish(self) -> None:
        self.mine.in_flight.value = b""


class PlatformWorker:
    """Keeps a multiplexer's members in step with the subscriptions (and the registry)."""

    def __init__(
        self,
        settings: PoolSettings,
        name: str,
        client: AnyRedis,
        slot: SlotState,
        peers: Sequence[SlotState],
        handlers: dict[str, Handler],
        metrics: PlatformTallies | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.name = name
        self.client = client
        self.slot = slot
        self.handlers = handlers
        gate = SlotGate(slot, peers) if slot.in_flight is not None else None
        self.mux = Multiplexer(
            name,
            count=min(settings.batch_size, PLATFORM_COUNT),
            block_ms=settings.block_ms,
            gate=gate,
        )
        self.buses: dict[str, TenantEventBus] = {}
        self.consumer_settings = settings.consumer_settings()
        wildcard = any(s.every_tenant for s in settings.subscriptions)
        self.registry = TenantRegistry(client) if wildcard else None
        self._version = -1
        self._tenants: list[str] = []
        # The subscription whose handler killed this slot's previous worker, if it did
        # (the supervisor leaves the entry in the slot only then; slots.CrashBlame).
        died_on = slot.delivery()
        self.suspect = died_on[:3] if died_on is not None else None
        self.log = structlog.get_logger("workers.pool.platform").bind(consumer=name)

    def bus(self, tenant: str) -> TenantEventBus:
        found = self.buses.get(tenant)
        if found is None:
            found = self.buses[tenant] = TenantEventBus(
                self.client, tenant, settings=self.settings.bus_settings(tenant)
            )
        return found

    def sync(self) -> None:
        """Add the subscriptions not yet consumed, remove those gone (after their
        buffered entries are handled)."""
        if self.registry is not None:
            try:
                version = self.registry.version()
                if self.mux.members and version == self._version:
                    return  # the registry has not changed
                self._tenants = self.registry.tenants()
                self._version = version
            except EventBusError as exc:  # keep what we have; the loop handles the outage
                self.log.warning("tenant_discovery_failed", error=str(exc))
                return
        tenants = self._tenants
        wanted = {
            (s.tenant, s.stream, s.group): s for s in expand(self.settings.subscriptions, tenants)
        }
        first = not self.mux.members
        self.consumer_settings = platform_consumer_settings(
            self.settings.consumer_settings(), len(wanted)
        )
        order = list(wanted.items())
        if first and self.suspect is not None:
            # Own pending entries are recovered in the order members are added: the other
            # subscriptions' entries the dead worker had read are handled (and acked)
            # before the suspect's entry is delivered again, and maybe kills us again.
            order.sort(key=lambda item: item[0] == self.suspect)
        for key, sub in order:
            if key not in self.mux.members:
                self._add(sub)
                if not first:
                    self.log.info(
                        "subscription_added", tenant=sub.tenant, stream=sub.stream, group=sub.group
                    )
        for key in [k for k in self.mux.members if k not in wanted]:
            self.mux.remove(key)
            self.log.info("subscription_removed", tenant=key[0], stream=key[1], group=key[2])

    def _add(self, sub: Subscription) -> None:
        st = self.settings
        # the supervisor's hung-handler watch and crash blame read what is in hand
        observers: list[DeliveryObserver] = [
            SlotReporter(self.slot, sub.tenant, sub.stream, sub.group)
        ]
        watcher = None
        if self.metrics is not None:
            watcher = self.metrics.watcher(sub, self.bus(sub.tenant))
            observers.append(watcher)
        consumer = EventConsumer(
            self.bus(sub.tenant),
            sub.stream,
            sub.group,
            self.name,
            DeadLetterQueue(self.client, sub.tenant),
            policy=st.retry_policy(),
            settings=self.consumer_settings,
            observers=observers,
            on_outcome=watcher.outcome if watcher is not None else None,
        )
        self.mux.add(
            consumer,
            self.handlers[sub.handler],
            weight=sub.weight,
            max_in_flight=sub.max_in_flight,
            stagger_s=self.consumer_settings.reclaim_interval_s,
        )


class PlatformTallies:
    """A platform worker's metrics: one :class:`~eventbus.metrics.Tally` per subscription
    (labelled with its tenant, stream and group), kept when a subscription leaves and
    comes back, all flushed by one thread (not one per subscription)."""

    def __init__(self) -> None:
        self.tallies = Tallies()
        self.watchers: list[ConsumerMetrics] = []
        self.clock_offset_s = 0.0  # Redis time minus ours (latency from entry ids)
        self._following: set[str] = set()  # tenants whose bus refusals are counted

    def watcher(self, sub: Subscription, bus: TenantEventBus) -> ConsumerMetrics:
        tally = self.tallies.get(sub.tenant, sub.stream, sub.group)
        if sub.tenant not in self._following:  # one bus per tenant: count it once
            self._following.add(sub.tenant)
            tally.follow(bus.refusals, "guard_refusal", STAGE_PUBLISH)
        watcher = ConsumerMetrics(tally, self.clock_offset_s)
        self.watchers.append(watcher)
        return watcher

    def set_clock_offset(self, offset_s: float) -> None:
        self.clock_offset_s = offset_s
        for watcher in self.watchers:
            watcher.clock_offset_s = offset_s


def run_platform_worker(
    settings: PoolSettings,
    name: str,
    parent_pid: int,
    slot: SlotState,
    peers: Sequence[SlotState],
    metrics_dir: str | None = None,
    index: int = 0,
) -> None:
    """Entry point of a platform pool's worker (see :func:`workers.pool.worker.run_worker`);
    with ``metrics_dir``, counts go to slot ``index``'s multiprocess files there."""
    log = structlog.get_logger("workers.pool.worker").bind(consumer=name, pid=os.getpid())
    handlers: dict[str, Handler] = {}
    for sub in settings.subscriptions:
        try:
            handlers.setdefault(sub.handler, load_handler(sub.handler))
        except HandlerLoadError as exc:
            log.error("handler_load_failed", error=str(exc))
            raise SystemExit(EXIT_HANDLER_LOAD) from None
    metrics = None
    if metrics_dir is not None:
        use_multiprocess_dir(metrics_dir, f"slot{index}")  # before any metric exists
        metrics = PlatformTallies()
    client = connect(settings.redis_url, cluster=settings.redis_cluster, client_name=name)
    worker = PlatformWorker(settings, name, client, slot, peers, handlers, metrics)
    if not start_worker(log, worker.mux, parent_pid):
        return
    delay = 0.1
    while not worker.mux.stopping:
        try:
            TenantRegistry(client).ping()
            break
        except EventBusError as exc:  # unreachable or loading: wait, like one consumer
            log.warning("redis_not_ready", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    worker.sync()
    if worker.registry is not None:
        worker.mux.every(DISCOVERY_INTERVAL_S, worker.sync)
    if metrics is not None:
        members = list(worker.mux.members.values())
        if members:
            metrics.set_clock_offset(clock_offset_s(members[0].consumer))
        metrics.tallies.start_flusher()
    slot.ready_flag.value = True
    log.info("worker_started", subscriptions=len(worker.mux.members))
    try:
        worker.mux.run()
    finally:
        if metrics is not None:
            metrics.tallies.close()
    log.info("worker_stopped")
