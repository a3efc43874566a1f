"""Metrics (optional, ``eventbus[metrics]``): what a consumer counts and times, written to
``prometheus_client``'s multiprocess files so that a pool's supervisor can serve them.

Names and labels live here (the library side); the pool's HTTP server and its Redis gauges
live in :mod:`workers.pool.metrics`. ``prometheus_client`` is imported only when metrics
are used: the core works without it.

Why counts are kept in plain Python first: one multiprocess ``inc`` costs about 5 us and one
histogram ``observe`` 11-14 us (a lock and an mmap write each), more than the consumer's
own CPU per event. A :class:`Tally` adds to plain ints and lists (no lock) and a flusher
thread writes what grew into the library's values once a second (and at exit). A
SIGKILLed worker loses at most that last second of counts.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from eventbus.records import GUARD_REASONS

#: Histogram buckets (seconds): sub-millisecond handlers up to ten-minute LLM calls.
BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

LABELS = ("tenant", "stream", "group")

#: Where a guard stopped an event (label ``stage``): a handler's publish was refused, or a
#: queued entry was dead-lettered instead of reaching the handler.
STAGE_PUBLISH = "publish"
STAGE_DELIVERY = "delivery"

#: Counters: name of what is counted -> (metric name without _total, help, extra labels).
COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "handled": ("eventbus_events_handled", "Events whose handler returned (then acked).", ()),
    "failed": ("eventbus_events_failed", "Handler attempts that raised.", ()),
    "retried": ("eventbus_events_retried", "Retries scheduled (durably, with the ack).", ()),
    "dead_lettered": (
        "eventbus_events_dead_lettered",
        "Entries moved to the DLQ, by reason.",
        ("reason",),
    ),
    "guard_refusal": (
        "eventbus_guard_refusals",
        "Events stopped by an agent guard, by reason (hop_limit, cycle, budget_exceeded, "
        "halted) and stage (publish: a handler's publish refused; delivery: a queued entry "
        "dead-lettered instead of handled).",
        ("reason", "stage"),
    ),
    "redelivered": (
        "eventbus_redeliveries",
        "Deliveries of an entry already delivered before (crash, reclaim).",
        (),
    ),
    "reclaimed": (
        "eventbus_reclaims",
        "Entries taken over from an idle or dead consumer.",
        (),
    ),
    "decode_error": (
        "eventbus_decode_errors",
        "Entries that were not a valid event of this tenant (dead-lettered, no handler).",
        (),
    ),
    "worker_restart": (
        "eventbus_worker_restarts",
        "Worker processes respawned after an unplanned exit (supervisor).",
        (),
    ),
    "handler_timeout": (
        "eventbus_handler_timeouts",
        "Handlers killed for running past the handler timeout (supervisor).",
        (),
    ),
}

#: Histograms: name -> (metric name, help).
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "duration": ("eventbus_handler_duration_seconds", "Handler call time, per attempt."),
    "latency": (
        "eventbus_delivery_latency_seconds",
        "From the entry's id time (Redis clock: publish, or a retry becoming due) to the "
        "handler's start.",
    ),
}

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def available() -> bool:
    """Whether ``prometheus_client`` is installed (``eventbus[metrics]``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def use_multiprocess_dir(path: str, identity: str) -> None:
    """Write this process's metric values to ``path``, in files named after ``identity``.

    ``identity`` must be stable across restarts of the same role (a pool slot's index) and
    distinct between processes running at once: a respawned worker reopens its slot's files
    and counts on from the stored values, and the directory holds one set of files per slot
    instead of one per pid ever started. Call before any metric is created.
    """
    from prometheus_client import values

    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=lambda: identity
    )


class _Families:
    """The prometheus_client metric objects of one process, created once (two objects for
    the same name would overwrite each other's file slots). Not registered anywhere: in
    multiprocess mode the supervisor reads them back from the files."""

    _instance: _Families | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.counters: dict[str, Any] = {}
        for what, (name, doc, extra) in COUNTERS.items():
            self.counters[what] = Counter(name, doc, (*LABELS, *extra), registry=None)
        self.histograms: dict[str, Any] = {
            what: Histogram(name, doc, LABELS, buckets=BUCKETS_S, registry=None)
            for what, (name, doc) in HISTOGRAMS.items()
        }

    @classmethod
    def get(cls) -> _Families:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


class Tally:
    """Counts and timings of one (tenant, stream, group) in one process, kept in plain
    Python and written into prometheus_client's values by :meth:`flush`.

    :meth:`count` and :meth:`observe` take no lock (they sit on the consumer's hot path):
    call them from one thread at a time (serialise several writers yourself). The values
    only grow; :meth:`flush`, from any thread, copies them (one C-level copy each, atomic
    under the GIL) and writes what grew since its last flush.
    """

    def __init__(self, tenant: str, stream: str, group: str) -> None:
        self.labels = (tenant, stream, group)
        self._counts: dict[tuple[str, tuple[str, ...]], int] = {}
        self._followed: list[tuple[Mapping[str, int], str, str]] = []
        self._hists: dict[str, list[float]] = {}  # bucket counts (+Inf last), then the sum
        self._flushed_counts: dict[tuple[str, tuple[str, ...]], int] = {}
        self._flushed_hists: dict[str, list[float]] = {}
        self._flush_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def count(self, what: str, *labels: str, n: int = 1) -> None:
        """Add ``n`` to counter ``what`` (a key of :data:`COUNTERS`); ``labels``: the values
        of its extra labels (more are ignored: a counter without a ``reason`` drops it)."""
        counts = self._counts
        key = (what, labels)
        counts[key] = counts.get(key, 0) + n

    def follow(self, totals: Mapping[str, int], what: str, stage: str) -> None:
        """Count ``totals`` (reason -> count so far, only growing, kept by someone else:
        e.g. :attr:`TenantEventBus.refusals`) as counter ``what`` with labels (reason,
        ``stage``), read at each flush: nothing is added to the owner's path."""
        self._followed.append((totals, what, stage))

    def observe(self, what: str, seconds: float) -> None:
        """One observation of histogram ``what`` (a key of :data:`HISTOGRAMS`)."""
        row = self._hists.get(what)
        if row is None:
            row = self._hists[what] = [0.0] * (len(BUCKETS_S) + 2)
        row[bisect_left(BUCKETS_S, seconds)] += 1  # first bucket with bound >= seconds
        row[-1] += seconds

    def flush(self) -> None:
        """Write what was counted since the last flush into the shared values."""
        with self._flush_lock:
            counts = self._counts.copy()
            for totals, what, stage in self._followed:
                for reason, total in dict(totals).items():
                    counts[(what, (reason, stage))] = total
            hists = {what: list(row) for what, row in list(self._hists.items())}
            grown = {k: n - self._flushed_counts.get(k, 0) for k, n in counts.items()}
            grown = {k: n for k, n in grown.items() if n}
            if not grown and hists == self._flushed_hists:
                return
            families = _Families.get()
            for (what, extra), n in grown.items():
                wanted = len(COUNTERS[what][2])
                families.counters[what].labels(*self.labels, *extra[:wanted]).inc(n)
            for what, row in hists.items():
                before = self._flushed_hists.get(what) or [0.0] * len(row)
                child = families.histograms[what].labels(*self.labels)
                # No bulk observe in prometheus_client: add to its per-bucket values
                # directly (non-cumulative, +Inf last; tests/unit/test_metrics.py pins it).
                for i in range(len(row) - 1):
                    if row[i] != before[i]:
                        child._buckets[i].inc(row[i] - before[i])
                if row[-1] != before[-1]:
                    child._sum.inc(row[-1] - before[-1])
            self._flushed_counts = counts
            self._flushed_hists = hists

    def start_flusher(self, interval_s: float = 1.0) -> None:
        """Flush every ``interval_s`` in a daemon thread until :meth:`close`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        self._flusher = threading.Thread(target=run, name="metrics-flush", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
        self.flush()


class Tallies:
    """The :class:`Tally` of each (tenant, stream, group) a process counts for (a platform
    pool's worker, or its supervisor), all flushed by one thread."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str, str], Tally] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, tenant: str, stream: str, group: str) -> Tally:
        key = (tenant, stream, group)
        found = self.tallies.get(key)
        if found is None:
            found = self.tallies[key] = Tally(*key)
        return found

    def flush(self) -> None:
        for tally in list(self.tallies.values()):
            tally.flush()

    def start_flusher(self, interval_s: float = 1.0) -> None:
        """Flush every ``interval_s`` in a daemon thread until :meth:`close`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        self._thread = threading.Thread(target=run, name="metrics-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()


def message_time_s(message_id: str) -> float:
    """The time in a stream entry id (ms since the epoch, Redis clock), in seconds."""
    return int(message_id.partition("-")[0]) / 1000.0


class ConsumerMetrics:
    """A consumer's delivery observer and outcome callback, feeding a :class:`Tally`.

    ``clock_offset_s`` is Redis time minus this host's time (measured by the caller), so
    that latency from the entry id (Redis clock) is right on a host whose clock is off.
    """

    def __init__(self, tally: Tally, clock_offset_s: float = 0.0) -> None:
        self.tally = tally
        self.clock_offset_s = clock_offset_s
        self._started = 0.0
        self._clock: Callable[[], float] = time.perf_counter

    # DeliveryObserver
    def started(self, key: str, message_id: str, retry_count: int) -> None:
        waited = time.time() + self.clock_offset_s - int(message_id.partition("-")[0]) / 1000
        self.tally.observe("latency", waited if waited > 0 else 0.0)
        self._started = self._clock()

    def finished(self) -> None:
        self.tally.observe("duration", self._clock() - self._started)

    # outcome callback
    def outcome(self, what: str, reason: str = "") -> None:
        self.tally.count(what, reason)
        if reason in GUARD_REASONS:  # (only dead letters have a reason)
            self.tally.count("guard_refusal", reason, STAGE_DELIVERY)
