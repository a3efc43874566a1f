"""One worker process: one consumer of the group, its own blocking Redis client, the
handler loaded here. Started by the supervisor (spawn: a fresh interpreter, nothing
inherited but the settings and its slot's shared state)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple, Protocol

import structlog

from eventbus import DeadLetterQueue, EventConsumer, TenantEventBus
from eventbus.errors import EventBusError
from eventbus.handler import DeliveryObserver
from eventbus.logs import configure_logging
from eventbus.metrics import STAGE_PUBLISH, ConsumerMetrics, Tally, use_multiprocess_dir
from eventbus.redis_io import connect
from workers.pool.config import Subscription
from workers.pool.loader import HandlerLoadError, load_handler
from workers.pool.settings import PoolSettings

EXIT_HANDLER_LOAD = 3
PR_SET_PDEATHSIG = 1
# Not SIGTERM: Linux sends the parent-death signal once per thread of the child (threads
# inherit the setting), and a second TERM means "hard stop" here. USR1 only asks to drain.
PARENT_DEATH_SIGNAL = signal.SIGUSR1


@dataclass
class SlotState:
    """Shared between a worker and the supervisor (created by the supervisor)."""

    # Plain shared memory without locks (no semaphores to leak): one writer, one reader,
    # and a torn read of `current` only matters while busy_since says "busy".
    busy_since: Any  # c_double: time.monotonic() when the handler started; 0 = idle
    # c_char array: b"tenant\nstream\ngroup\nkey\nmessage_id\nretry_count" in hand; at a
    # worker's start, the entry its predecessor died on in a handler (else b"")
    current: Any
    ready_flag: Any  # c_bool: set once the worker is connected and its groups exist
    # c_char array: the tenant whose event is in the handler (b"" = none), read by the
    # other workers for max_in_flight; the supervisor clears it when the worker dies
    in_flight: Any = None

    @property
    def ready(self) -> bool:
        return bool(self.ready_flag.value)

    def delivery(self) -> InHand | None:
        parts = self.current.value.decode().split("\n")
        if len(parts) != 6:
            return None
        return InHand(*parts[:5], int(parts[5]))  # type: ignore[call-arg]


class InHand(NamedTuple):
    """The delivery a worker's handler is working on (for the hung-handler watch and the
    crash blame)."""

    tenant: str
    stream: str
    group: str
    key: str
    message_id: str
    retry_count: int


class SlotReporter:
    """A delivery observer that tells the supervisor what the handler is working on (to
    kill a hung handler, and to blame the entry in hand when the worker dies)."""

    def __init__(self, slot: SlotState, tenant: str, stream: str, group: str) -> None:
        self.slot = slot
        self.prefix = f"{tenant}\n{stream}\n{group}\n"

    def started(self, key: str, message_id: str, retry_count: int) -> None:
        self.slot.current.value = f"{self.prefix}{key}\n{message_id}\n{retry_count}".encode()[:1023]
        self.slot.busy_since.value = time.monotonic()

    def finished(self) -> None:
        self.slot.busy_since.value = 0.0


def _die_with_parent() -> None:
    """Ask Linux to signal us when the supervisor dies (also polled, see below)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Stoppable(Protocol):
    """What the signal handlers and the parent watch stop: a consumer or a multiplexer."""

    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


def _watch_parent(
    parent_pid: int, loop: Stoppable, log: structlog.typing.FilteringBoundLogger
) -> None:
    while not loop.stopping:
        if os.getppid() != parent_pid:
            log.error("supervisor_gone", parent_pid=parent_pid)
            loop.stop()
            return
        time.sleep(0.5)


def start_worker(
    log: structlog.typing.FilteringBoundLogger, loop: Stoppable, parent_pid: int
) -> bool:
    """Signals stop ``loop`` (a second TERM: at once), and so does the supervisor's death.
    False if the supervisor is gone already."""
    stops = 0

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stops
        stops += 1
        if stops > 1:
            os._exit(128 + signum)  # second TERM: hard stop, the entry stays pending
        loop.stop()

    def on_parent_death(signum: int, frame: FrameType | None) -> None:
        loop.stop()  # finish the event in hand, like a first TERM (may come repeatedly)

    signal.signal(PARENT_DEATH_SIGNAL, on_parent_death)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.getppid() != parent_pid:  # the supervisor died before we got here
        return False
    threading.Thread(target=_watch_parent, args=(parent_pid, loop, log), daemon=True).start()
    return True


def run_worker(
    settings: PoolSettings,
    index: int,
    parent_pid: int,
    slot: SlotState,
    metrics_dir: str | None = None,
    peers: Sequence[SlotState] = (),
) -> None:
    """Entry point of a worker process. With ``metrics_dir``, counts and timings go to the
    slot's multiprocess files there (kept across respawns of the slot). A pool of one
    subscription runs one :class:`EventConsumer`; several (or ``"*"``) run a multiplexer
    (:mod:`workers.pool.platform`), with ``peers`` (every slot) for in-flight limits."""
    # The supervisor blocks these while it starts us, and the mask survives fork + exec.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    _die_with_parent()
    configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
    subs = settings.subscriptions
    if len(subs) == 1 and not subs[0].every_tenant:
        _run_single(settings, subs[0], index, parent_pid, slot, metrics_dir)
        return
    from workers.pool.platform import run_platform_worker

    run_platform_worker(
        settings, settings.consumer_name(index), parent_pid, slot, peers, metrics_dir, index
    )


def _run_single(
    settings: PoolSettings,
    sub: Subscription,
    index: int,
    parent_pid: int,
    slot: SlotState,
    metrics_dir: str | None,
) -> None:
    name = settings.consumer_name(index)
    log = structlog.get_logger("workers.pool.worker").bind(
        tenant=sub.tenant, stream=sub.stream, group=sub.group, consumer=name, pid=os.getpid()
    )
    try:
        handler = load_handler(sub.handler)
    except HandlerLoadError as exc:
        log.error("handler_load_failed", error=str(exc))
        raise SystemExit(EXIT_HANDLER_LOAD) from None

    client = connect(settings.redis_url, cluster=settings.redis_cluster, client_name=name)
    bus = TenantEventBus(client, sub.tenant, settings=settings.bus_settings(sub.tenant))
    # The supervisor reads the slot to kill hung handlers and, when a worker dies in a
    # handler, to blame the entry in hand (slots.CrashBlame): two shared-memory writes
    # per event.
    observers: list[DeliveryObserver] = [SlotReporter(slot, sub.tenant, sub.stream, sub.group)]
    tally = _metrics_tally(sub, index, metrics_dir)
    watcher = ConsumerMetrics(tally) if tally is not None else None
    if tally is not None:  # the handlers' publishes that a guard refused
        tally.follow(bus.refusals, "guard_refusal", STAGE_PUBLISH)
    if watcher is not None:
        observers.append(watcher)
    consumer = EventConsumer(
        bus,
        sub.stream,
        sub.group,
        name,
        DeadLetterQueue(client, sub.tenant),
        policy=settings.retry_policy(),
        settings=settings.consumer_settings(),
        observers=observers,
        on_outcome=watcher.outcome if watcher is not None else None,
    )
    if not start_worker(log, consumer, parent_pid):
        return
    _wait_ready(bus, sub, consumer, log)
    if watcher is not None and tally is not None:
        watcher.clock_offset_s = clock_offset_s(consumer)
        tally.start_flusher()
    slot.ready_flag.value = True
    log.info("worker_started", handler=sub.handler)
    try:
        consumer.process_loop(handler)
    finally:
        if tally is not None:
            tally.close()
    log.info("worker_stopped")


def _metrics_tally(sub: Subscription, index: int, metrics_dir: str | None) -> Tally | None:
    if metrics_dir is None:
        return None
    use_multiprocess_dir(metrics_dir, f"slot{index}")  # before any metric exists
    return Tally(sub.tenant, sub.stream, sub.group)


def clock_offset_s(consumer: EventConsumer) -> float:
    """Redis time minus ours, for latencies from entry ids (0 if Redis cannot tell now)."""
    try:
        before = time.time()
        server = consumer.group_stream.server_time_s()
        return server - (before + time.time()) / 2
    except EventBusError:
        return 0.0


def _wait_ready(
    bus: TenantEventBus,
    sub: Subscription,
    consumer: EventConsumer,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Create the groups, retrying while Redis is not there yet."""
    delay = 0.1
    while not consumer.stopping:
        try:
            bus.ensure_group(sub.stream, sub.group)
            return
        except Exception as exc:  # unreachable or loading: wait, the supervisor waits too
            log.warning("redis_not_ready", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
