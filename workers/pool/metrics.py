"""The pool's HTTP endpoint (``--metrics-port``): ``/metrics`` in the Prometheus text
format, ``/healthz`` and ``/readyz``, served by a thread of the supervisor.

``/metrics`` merges the workers' counters and histograms (prometheus_client multiprocess
files in a directory the supervisor owns, one set per slot: see :mod:`eventbus.metrics`)
with gauges read from Redis at scrape time, cached for ``GAUGE_CACHE_S`` so that a scrape
storm cannot load Redis: through the group's :class:`~eventbus.groupstream.GroupStream`
in a pool of one subscription, in pipelines over every subscription (at most
``GAUGE_MAX_PER_READ`` per read, the least recently read first) in a platform pool.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

from eventbus.errors import EventBusError
from eventbus.gauges import read_gauges
from eventbus.groupstream import GroupStream
from eventbus.metrics import LABELS, Tallies, Tally, use_multiprocess_dir
from workers.pool.cardinality import TenantCap
from workers.pool.health import Readiness
from workers.pool.jobs import PoolGroups

GAUGE_CACHE_S = 2.0
#: A platform pool reads the gauges of at most this many subscriptions per scrape (the
#: least recently read first; the others are served as last read), in pipelines of
#: ``GAUGE_BATCH`` groups each.
GAUGE_MAX_PER_READ = 1000
GAUGE_BATCH = 250
#: Labels of a platform pool's own series (workers, restarts, timeouts): a worker there
#: serves every subscription.
POOL_LABELS = ("", "", "")

#: Gauges read from Redis: key of GroupStream.gauges() -> (metric name, help).
GAUGES: dict[str, tuple[str, str]] = {
    "lag": ("eventbus_group_lag", "Entries of the stream not yet delivered to the group."),
    "pending": ("eventbus_group_pending", "Entries delivered and not yet acknowledged."),
    "oldest_pending_age_s": (
        "eventbus_oldest_pending_age_seconds",
        "Age (Redis clock, from its id) of the oldest pending entry; 0 when none.",
    ),
    "scheduled_retries": (
        "eventbus_retries_scheduled",
        "Retries waiting for their time in the group's schedule.",
    ),
    "retry_backlog": (
        "eventbus_retry_backlog",
        "Due retries in the group's retry stream not yet read.",
    ),
    "dlq_depth": ("eventbus_dlq_depth", "Dead letters of the stream (all groups)."),
}

StartResponse = Callable[..., Any]


class RedisGauges:
    """A prometheus_client collector of one group's gauges, read from Redis (cached)."""

    def __init__(
        self,
        group: GroupStream,
        workers: Callable[[], tuple[int, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.workers = workers
        self.labels = [group.tenant_id, group.stream, group.group]
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, float] | None = None
        self._cached_at = 0.0
        self.reads = 0  # how often Redis was asked (the cache's test looks)

    def values(self) -> dict[str, float] | None:
        """The gauges, at most ``GAUGE_CACHE_S`` old; None if Redis could not tell."""
        with self._lock:
            now = self._clock()
            if now - self._cached_at >= GAUGE_CACHE_S:
                self._cached_at = now
                self.reads += 1
                try:
                    self._cached = self.group.gauges()
                except EventBusError:
                    self._cached = None
            return self._cached

    def collect(self) -> Iterator[Any]:
        values = self.values()
        yield from _gauge_families([(self.labels, values)])
        yield from _worker_families(self.labels, self.workers())


def _gauge_families(
    rows: Iterable[tuple[Sequence[str], dict[str, float] | None]],
) -> Iterator[Any]:
    """``eventbus_redis_up`` and the :data:`GAUGES` of each (labels, values or None)."""
    from prometheus_client.core import GaugeMetricFamily

    rows = list(rows)
    up = GaugeMetricFamily(
        "eventbus_redis_up", "1 if the last gauge read from Redis worked.", labels=LABELS
    )
    for labels, values in rows:
        up.add_metric(list(labels), 0.0 if values is None else 1.0)
    yield up
    for key, (name, doc) in GAUGES.items():
        family = GaugeMetricFamily(name, doc, labels=LABELS)
        for labels, values in rows:
            if values is not None:
                family.add_metric(list(labels), float(values[key]))
        yield family


def _worker_families(labels: Sequence[str], workers: tuple[int, int]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    ready, configured = workers
    for name, doc, value in (
        ("eventbus_workers", "Worker processes configured.", configured),
        ("eventbus_workers_ready", "Worker processes up and consuming.", ready),
    ):
        family = GaugeMetricFamily(name, doc, labels=LABELS)
        family.add_metric(list(labels), float(value))
        yield family


class PlatformGauges:
    """A prometheus_client collector of a platform pool's gauges: every subscription's,
    read from Redis in pipelines (:func:`eventbus.gauges.read_gauges`) at most every
    ``GAUGE_CACHE_S``, at most ``max_per_read`` subscriptions per read (the least
    recently read first, so each comes round within ``ceil(n / max_per_read)`` reads; the
    others are served with their last values). The workers' gauges carry
    :data:`POOL_LABELS`."""

    def __init__(
        self,
        pool: PoolGroups,
        workers: Callable[[], tuple[int, int]],
        max_per_read: int = GAUGE_MAX_PER_READ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.workers = workers
        self.max_per_read = max_per_read
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str, str], dict[str, float] | None] = {}
        self._read_at: dict[tuple[str, str, str], int] = {}  # key -> read number
        self._cached_at: float | None = None
        self.reads = 0  # reads from Redis so far
        self.last_read: list[tuple[str, str, str]] = []  # the subscriptions of the last read
        self.log = structlog.get_logger("workers.pool.metrics")

    def values(self) -> dict[tuple[str, str, str], dict[str, float] | None]:
        """(tenant, stream, group) -> gauges (None: Redis could not tell), refreshed when
        older than ``GAUGE_CACHE_S``."""
        with self._lock:
            now = self._clock()
            if self._cached_at is None or now - self._cached_at >= GAUGE_CACHE_S:
                self._cached_at = now
                self._refresh()
            return dict(self._values)

    def _refresh(self) -> None:
        self.reads += 1
        try:
            groups = {(g.tenant_id, g.stream, g.group): g for g in self.pool.groups()}
        except EventBusError as exc:  # the registry is unreachable: values unknown (up 0)
            self.log.warning("metrics_gauges_failed", error=str(exc))
            self._values = dict.fromkeys(self._values)
            return
        for gone in set(self._values) - set(groups):
            del self._values[gone]
            self._read_at.pop(gone, None)
        chosen = sorted(groups, key=lambda k: (self._read_at.get(k, -1), k))
        chosen = chosen[: self.max_per_read]
        self.last_read = chosen
        for start in range(0, len(chosen), GAUGE_BATCH):
            batch = chosen[start : start + GAUGE_BATCH]
            try:
                read = read_gauges(self.pool.client, [groups[k] for k in batch])
            except EventBusError as exc:
                self.log.warning("metrics_gauges_failed", error=str(exc))
                read = [None] * len(batch)
            for key, values in zip(batch, read, strict=True):
                self._values[key] = values
                self._read_at[key] = self.reads

    def collect(self) -> Iterator[Any]:
        values = self.values()
        yield from _gauge_families(sorted(values.items()))
        yield from _worker_families(POOL_LABELS, self.workers())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # scrapes every few seconds are not news


class MetricsServer:
    """Owns the multiprocess directory (fresh per supervisor start, removed at exit) and
    serves the endpoints from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        pool: PoolGroups,
        readiness: Readiness,
        workers: Callable[[], tuple[int, int]],
        max_tenants: int = 0,
    ) -> None:
        """``pool``: what the pool consumes (one subscription, or a platform pool's);
        ``max_tenants``: tenant label values served (0 = all; see
        :mod:`workers.pool.cardinality`)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.dir = tempfile.mkdtemp(prefix="eventbus-metrics-")
        use_multiprocess_dir(self.dir, "supervisor")
        self.registry = CollectorRegistry()
        self.gauges: RedisGauges | PlatformGauges
        self.tallies = Tallies()  # the supervisor's own counts
        self.platform = pool.platform
        if pool.platform:
            self.tally = self.tallies.get(*POOL_LABELS)
            self.gauges = PlatformGauges(pool, workers)
        else:
            sub = pool.settings.subscriptions[0]
            self.tally = self.tallies.get(sub.tenant, sub.stream, sub.group)
            self.gauges = RedisGauges(pool.group(sub.tenant, sub.stream, sub.group), workers)
        files = MultiProcessCollector(None, path=self.dir)  # type: ignore[no-untyped-call]
        if max_tenants:
            self.registry.register(TenantCap([files, self.gauges], max_tenants))
        else:
            self.registry.register(files)
            self.registry.register(self.gauges)
        self.readiness = readiness
        # A platform pool's scrape reads every subscription's series from the workers'
        # files (~30 us a series): its text is reused for GAUGE_CACHE_S as well.
        self._text_cache_s = GAUGE_CACHE_S if pool.platform else 0.0
        self._text: tuple[float, bytes] | None = None
        self.log = structlog.get_logger("workers.pool.metrics").bind(host=host)
        self._server: WSGIServer = make_server(host, port, self.app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self.tallies.start_flusher()
        self.log.info("metrics_serving", port=self.port, dir=self.dir)

    def tally_for(self, where: tuple[str, str, str] | None) -> Tally:
        """The supervisor's tally of subscription ``where`` (a platform pool), else the
        pool's own."""
        return self.tallies.get(*where) if self.platform and where else self.tally

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.tallies.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- WSGI ------------------------------------------------------------------------------

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            now = time.monotonic()
            if self._text is None or now - self._text[0] >= self._text_cache_s:
                self._text = (now, generate_latest(self.registry))
            return _reply(start_response, "200 OK", CONTENT_TYPE_LATEST, self._text[1])
        if path == "/healthz":
            return _reply(start_response, "200 OK", "text/plain", b"ok\n")
        if path == "/readyz":
            verdict = self.readiness.check()
            status = "200 OK" if verdict.ready else "503 Service Unavailable"
            body = {"ready": verdict.ready, "problems": list(verdict.problems), **verdict.checks}
            return _reply(start_response, status, "application/json", json.dumps(body).encode())
        return _reply(start_response, "404 Not Found", "text/plain", b"not found\n")


def _reply(start_response: StartResponse, status: str, ctype: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
