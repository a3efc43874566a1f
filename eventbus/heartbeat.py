"""Keeps a long-running delivery claimed: a side thread that resets its idle time.

``XCLAIM <self> 0 <id> JUSTID`` resets the idle time without counting a delivery, so the
reclaimer never hands an event that is still being handled to a second worker.
"""

from __future__ import annotations

import threading

import redis
import structlog

log = structlog.get_logger("eventbus.heartbeat")


class Heartbeat:
    """One reusable side thread; ``claim(key, id)`` while handling, ``release()`` after."""

    def __init__(self, client: redis.Redis, group: str, consumer: str, interval_s: float) -> None:
        self._client = client
        self._group = group
        self._consumer = consumer
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._current: tuple[str, str] | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.beats = 0

    def started(self, key: str, message_id: str, retry_count: int) -> None:
        self.claim(key, message_id)

    def finished(self) -> None:
        self.release()

    def claim(self, key: str, message_id: str) -> None:
        with self._lock:
            self._current = (key, message_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"eventbus-heartbeat-{self._consumer}", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def release(self) -> None:
        with self._lock:
            self._current = None

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            # Sleep one interval, then refresh whatever delivery is in hand at that moment.
            while not self._closed and self._current is not None:
                if self._wake.wait(self._interval_s):
                    self._wake.clear()
                    continue  # a new delivery started: restart its interval
                with self._lock:
                    current = self._current
                if current is None:
                    break
                key, message_id = current
                try:
                    self._client.xclaim(
                        key, self._group, self._consumer, 0, [message_id], justid=True
                    )
                    self.beats += 1
                except redis.RedisError as exc:
                    log.warning("heartbeat_failed", message_id=message_id, error=str(exc))
