"""One worker process: one consumer of the group, its own blocking Redis client, the
handler loaded here. Started by the supervisor (spawn: a fresh interpreter, nothing
inherited but the settings and its slot's shared state)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog

from eventbus import DeadLetterQueue, EventConsumer, TenantEventBus
from eventbus.errors import EventBusError
from eventbus.handler import DeliveryObserver
from eventbus.logs import configure_logging
from eventbus.metrics import STAGE_PUBLISH, ConsumerMetrics, Tally, use_multiprocess_dir
from eventbus.redis_io import connect
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
    current: Any  # c_char array: b"key\nmessage_id\nretry_count" of the delivery in hand
    ready_flag: Any  # c_bool: set once the worker is connected and its groups exist

    @property
    def ready(self) -> bool:
        return bool(self.ready_flag.value)

    def delivery(self) -> tuple[str, str, int] | None:
        raw = self.current.value.decode()
        parts = raw.split("\n")
        if len(parts) != 3:
            return None
        return parts[0], parts[1], int(parts[2])


class SlotReporter:
    """A delivery observer that tells the supervisor what the handler is working on."""

    def __init__(self, slot: SlotState) -> None:
        self.slot = slot

    def started(self, key: str, message_id: str, retry_count: int) -> None:
        self.slot.current.value = f"{key}\n{message_id}\n{retry_count}".encode()[:1023]
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


def _watch_parent(
    parent_pid: int, consumer: EventConsumer, log: structlog.typing.FilteringBoundLogger
) -> None:
    while not consumer.stopping:
        if os.getppid() != parent_pid:
            log.error("supervisor_gone", parent_pid=parent_pid)
            consumer.stop()
            return
        time.sleep(0.5)


def run_worker(
    settings: PoolSettings,
    index: int,
    parent_pid: int,
    slot: SlotState,
    metrics_dir: str | None = None,
) -> None:
    """Entry point of a worker process. With ``metrics_dir``, counts and timings go to the
    slot's multiprocess files there (kept across respawns of the slot)."""
    # The supervisor blocks these while it starts us, and the mask survives fork + exec.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    _die_with_parent()
    configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
    name = settings.consumer_name(index)
    log = structlog.get_logger("workers.pool.worker").bind(
        tenant=settings.tenant,
        stream=settings.stream,
        group=settings.group,
        consumer=name,
        pid=os.getpid(),
    )
    try:
        handler = load_handler(settings.handler)
    except HandlerLoadError as exc:
        log.error("handler_load_failed", error=str(exc))
        raise SystemExit(EXIT_HANDLER_LOAD) from None

    client = connect(settings.redis_url, cluster=settings.redis_cluster, client_name=name)
    bus = TenantEventBus(client, settings.tenant, settings=settings.bus_settings())
    observers: list[DeliveryObserver] = []
    # The supervisor only reads the slot to kill hung handlers: no timeout, no reports
    # (two shared-memory writes per event saved).
    if settings.handler_timeout_s > 0:
        observers.append(SlotReporter(slot))
    tally = _metrics_tally(settings, index, metrics_dir)
    watcher = ConsumerMetrics(tally) if tally is not None else None
    if tally is not None:  # the handlers' publishes that a guard refused
        tally.follow(bus.refusals, "guard_refusal", STAGE_PUBLISH)
    if watcher is not None:
        observers.append(watcher)
    consumer = EventConsumer(
        bus,
        settings.stream,
        settings.group,
        name,
        DeadLetterQueue(client, settings.tenant),
        policy=settings.retry_policy(),
        settings=settings.consumer_settings(),
        observers=observers,
        on_outcome=watcher.outcome if watcher is not None else None,
    )
    stops = 0

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stops
        stops += 1
        if stops > 1:
            os._exit(128 + signum)  # second TERM: hard stop, the entry stays pending
        consumer.stop()

    def on_parent_death(signum: int, frame: FrameType | None) -> None:
        consumer.stop()  # finish the event in hand, like a first TERM (may come repeatedly)

    signal.signal(PARENT_DEATH_SIGNAL, on_parent_death)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.getppid() != parent_pid:  # the supervisor died before we got here
        return
    threading.Thread(target=_watch_parent, args=(parent_pid, consumer, log), daemon=True).start()
    _wait_ready(bus, settings, consumer, log)
    if watcher is not None and tally is not None:
        watcher.clock_offset_s = _clock_offset_s(consumer)
        tally.start_flusher()
    slot.ready_flag.value = True
    log.info("worker_started", handler=settings.handler)
    try:
        consumer.process_loop(handler)
    finally:
        if tally is not None:
            tally.close()
    log.info("worker_stopped")


def _metrics_tally(settings: PoolSettings, index: int, metrics_dir: str | None) -> Tally | None:
    if metrics_dir is None:
        return None
    use_multiprocess_dir(metrics_dir, f"slot{index}")  # before any metric exists
    return Tally(settings.tenant, settings.stream, settings.group)


def _clock_offset_s(consumer: EventConsumer) -> float:
    """Redis time minus ours, for latencies from entry ids (0 if Redis cannot tell now)."""
    try:
        before = time.time()
        server = consumer.group_stream.server_time_s()
        return server - (before + time.time()) / 2
    except EventBusError:
        return 0.0


def _wait_ready(
    bus: TenantEventBus,
    settings: PoolSettings,
    consumer: EventConsumer,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Create the groups, retrying while Redis is not there yet."""
    delay = 0.1
    while not consumer.stopping:
        try:
            bus.ensure_group(settings.stream, settings.group)
            return
        except Exception as exc:  # unreachable or loading: wait, the supervisor waits too
            log.warning("redis_not_ready", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
