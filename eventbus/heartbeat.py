"""Keeps a long-running delivery claimed: a side thread that resets its idle time.

``XCLAIM <self> 0 <id> JUSTID`` resets the idle time without counting a delivery, so the
reclaimer never hands an event that is still being handled to a second worker.
"""

from __future__ import annotations

import threading

import structlog

from eventbus.errors import EventBusError
from eventbus.groupstream import GroupStream

log = structlog.get_logger("eventbus.heartbeat")


class Heartbeat:
    """One side thread, started with the first delivery, that wakes every ``interval_s`` and
    refreshes the delivery in hand at that moment: one in hand for a whole interval is
    refreshed at least once per interval. ``started``/``finished`` run per event and only
    store a reference (no lock, no wake-up)."""

    def __init__(self, group: GroupStream, consumer: str, interval_s: float) -> None:
        self._group = group
        self._consumer = consumer
        self._interval_s = interval_s
        self._current: tuple[str, str] | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self, key: str, message_id: str, retry_count: int) -> None:
        self._current = (key, message_id)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"eventbus-heartbeat-{self._consumer}", daemon=True
            )
            self._thread.start()

    def finished(self) -> None:
        self._current = None

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed.wait(self._interval_s):
            current = self._current
            if current is None:
                continue
            key, message_id = current
            try:
                self._group.refresh_claim(self._consumer, key, message_id)
            except EventBusError as exc:
                log.warning("heartbeat_failed", message_id=message_id, error=str(exc))
