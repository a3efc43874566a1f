"""Moving parts of the fault tests: a pool with the recording handler, a publisher thread
that records every acknowledged publish, and fault helpers (kill workers, time to recover).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eventbus import AgentEvent, EventBusError, TenantEventBus
from tests.conftest import wait_for
from tests.faults.ledger import Ledger
from tests.process.pool import STREAM, Pool, event
from workers.tools.localredis import LocalRedis, pid_alive
from workers.tools.procs import is_worker

HANDLER = "tests.faults.handlers:record"
ROOT = Path(__file__).parents[2]


make_event = event  # one event factory for the process and fault suites


class FaultPool(Pool):
    """A supervisor subprocess running tests/faults/handlers.py:record against any Redis
    URL (a proxy's, one with a short socket timeout); it remembers every worker it had."""

    def __init__(
        self,
        server: LocalRedis,
        tmp: Path,
        *,
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(server, tmp, **kwargs)
        url = redis_url or server.url
        self.args += ["--handler", HANDLER, "--redis-url", url]
        self.seen_pids: set[int] = set()

    def start(self, wait_ready: bool = True) -> FaultPool:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.pool.supervisor", *self.args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
                cwd=ROOT,
            )
        if wait_ready:
            wait_for(lambda: self.logged("supervisor_ready"), 60)
        return self

    def worker_pids(self) -> list[int]:
        pids = super().worker_pids() if self.proc is not None and self.proc.poll() is None else []
        self.seen_pids.update(pids)
        return pids

    def kill_all(self) -> None:
        """Kill the supervisor and every worker it ever had (orphans included)."""
        self.worker_pids()
        super().kill_all()
        for pid in self.seen_pids:
            if is_worker(pid):
                sigkill(pid)

    def unplanned_respawns(self) -> int:
        return sum(1 for e in self.logged("worker_respawned") if not e.get("planned"))

    def worker_exits(self) -> list[dict[str, Any]]:
        return self.logged("worker_exited")


class Publisher(threading.Thread):
    """Publishes ``make_event(i=n)`` at a steady rate until stopped; records each event
    once ``publish`` returned. On an error it publishes the *same* event again (publish is
    idempotent by event_id), so an outage never skips or doubles an event."""

    def __init__(self, bus: TenantEventBus, ledger: Ledger, rate_per_s: float, **data: Any) -> None:
        super().__init__(name="publisher", daemon=True)
        self.bus = bus
        self.ledger = ledger
        self.interval_s = 1.0 / rate_per_s
        self.data = data
        self.errors: list[str] = []
        self.acked = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        pending: AgentEvent | None = None
        while not self._stop_event.is_set():
            event = pending or make_event(i=n, **self.data)
            try:
                self.bus.publish(STREAM, event)
            except EventBusError as exc:
                self.errors.append(type(exc).__name__)
                pending = event
                self._stop_event.wait(0.05)
                continue
            pending = None
            self.ledger.published(event.event_id)
            self.acked += 1
            n += 1
            next_at += self.interval_s
            self._stop_event.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive(), "publisher did not stop"


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def kill_random_worker(pool: Pool, rng: random.Random) -> int | None:
    pids = pool.worker_pids()
    if not pids:
        return None
    pid = rng.choice(pids)
    sigkill(pid)
    return pid


def wait_gone(pids: list[int], timeout_s: float) -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout_s)


def time_to_next_done(ledger: Ledger, since: float, timeout_s: float = 30) -> float:
    """Seconds from ``since`` (time.time()) until a handler finished some event after it."""
    wait_for(lambda: any(r["t"] > since for r in ledger.calls("done")), timeout_s, 0.05)
    return min(r["t"] for r in ledger.calls("done") if r["t"] > since) - since


def wait_more_done(ledger: Ledger, n: int, timeout_s: float = 60) -> None:
    """Wait until the handlers finished ``n`` more events than now: load really flowed
    (instead of a fixed sleep, which a loaded machine may fill with nothing)."""
    start = len(ledger.calls("done"))
    wait_for(lambda: len(ledger.calls("done")) >= start + n, timeout_s)


def redis_args(debug: bool = True) -> list[str]:
    return ["--enable-debug-command", "local"] if debug else []
