"""The pool's /metrics, /healthz and /readyz over real HTTP, with real workers that die."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import GROUP, STREAM, TENANT, Pool, event

LABELS = {"tenant": TENANT, "stream": STREAM, "group": GROUP}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(port, "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(port: int, name: str, **extra: str) -> float:
    labels = tuple(sorted({**LABELS, **extra}.items()))
    return scrape(port).get((name, labels), 0.0)


def metrics_pool(make_pool, processes: int = 1, args: list[str] | None = None) -> Pool:  # type: ignore[no-untyped-def]
    port = free_port()
    pool: Pool = make_pool(
        processes=processes,
        args=[
            "--metrics-port",
            str(port),
            "--retry-delays",
            "0",
            "--max-restarts-per-minute",
            "1000",
            *(args or []),
        ],
    )
    pool.port = port  # type: ignore[attr-defined]
    return pool.start()


def metrics_dir(pool: Pool) -> Path:
    return Path(pool.logged("metrics_serving")[0]["dir"])


def test_metrics_count_outcomes_time_handlers_and_read_gauges_from_redis(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = metrics_pool(make_pool, processes=2)
    port = pool.port  # type: ignore[attr-defined]
    ok = [event(i=i) for i in range(20)]
    bad = event(fail=True)  # one retry (--retry-delays 0), then the DLQ
    tbus.publish_many(STREAM, [*ok, bad])
    tbus.redis.xadd(tbus.keys.stream(STREAM), {"version": "1.0", "junk": "x"})  # decode error
    wait_for(lambda: value(port, "eventbus_events_handled_total") == 20, 60)
    wait_for(
        lambda: value(port, "eventbus_events_dead_lettered_total", reason="handler_failed") == 1,
        20,
    )
    m = scrape(port)
    key = tuple(sorted(LABELS.items()))
    assert m[("eventbus_events_failed_total", key)] == 2
    assert m[("eventbus_events_retried_total", key)] == 1
    assert m[("eventbus_decode_errors_total", key)] == 1
    dead = tuple(sorted({**LABELS, "reason": "decode_error"}.items()))
    assert m[("eventbus_events_dead_lettered_total", dead)] == 1
    # histograms: one duration per attempt (20 ok + 2 failed), latencies >= 0
    assert m[("eventbus_handler_duration_seconds_count", key)] == 22
    assert m[("eventbus_delivery_latency_seconds_count", key)] == 22
    inf = tuple(sorted({**LABELS, "le": "+Inf"}.items()))
    assert m[("eventbus_handler_duration_seconds_bucket", inf)] == 22
    # gauges from Redis (cached for 2 s)
    wait_for(lambda: value(port, "eventbus_dlq_depth") == 2, 60)
    m = scrape(port)
    assert m[("eventbus_group_lag", key)] == 0
    assert m[("eventbus_group_pending", key)] == 0
    assert m[("eventbus_redis_up", key)] == 1
    assert m[("eventbus_workers_ready", key)] == 2
    assert get(port, "/healthz") == (200, b"ok\n")
    status, body = get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert get(port, "/nope")[0] == 404
    assert pool.stop() == 0
    assert not metrics_dir(pool).exists()  # the supervisor removes its directory


def test_lag_pending_and_oldest_pending_age_while_a_handler_is_busy(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = metrics_pool(make_pool, processes=1, args=["--batch-size", "1"])
    port = pool.port  # type: ignore[attr-defined]
    tbus.publish_many(STREAM, [event(sleep_s=30), *[event(i=i) for i in range(5)]])
    wait_for(lambda: len(pool.starts()) == 1, 60)
    wait_for(lambda: value(port, "eventbus_group_pending") == 1, 60)
    assert value(port, "eventbus_group_lag") == 5
    wait_for(lambda: value(port, "eventbus_oldest_pending_age_seconds") >= 1.0, 60)
    pool.kill_all()


def test_counters_survive_worker_restarts_and_the_metrics_dir_stays_bounded(
    make_pool, tbus: TenantEventBus
) -> None:
    # A handler timeout kills the worker and respawns its slot at once (no backoff), so
    # it makes many real restarts quick; two plain SIGKILLs cover unplanned deaths.
    pool = metrics_pool(
        make_pool, processes=1, args=["--handler-timeout-s", "0.5", "--max-retries", "0"]
    )
    port = pool.port  # type: ignore[attr-defined]
    folder = metrics_dir(pool)
    wait_for(lambda: value(port, "eventbus_workers_ready") == 1, 60)
    files = {"counter_slot0.db", "histogram_slot0.db", "counter_supervisor.db"}
    rounds = 6
    for n in range(1, rounds + 1):
        tbus.publish(STREAM, event(i=n))
        wait_for(lambda n=n: value(port, "eventbus_events_handled_total") == n, 60)
        if n <= 2:
            (pid,) = pool.worker_pids()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda n=n: value(port, "eventbus_worker_restarts_total") == n, 60)
        else:
            tbus.publish(STREAM, event(hang=True))
            wait_for(lambda n=n: value(port, "eventbus_handler_timeouts_total") == n - 2, 60)
        wait_for(lambda: value(port, "eventbus_workers_ready") == 1, 60)
        assert set(os.listdir(folder)) == files  # one set of files per slot, not per pid
    assert value(port, "eventbus_events_handled_total") == rounds
    assert value(port, "eventbus_handler_duration_seconds_count") == rounds
    assert pool.stop() == 0


def test_metrics_endpoint_binds_loopback_by_default(make_pool) -> None:
    pool = metrics_pool(make_pool)
    (line,) = pool.logged("metrics_serving")
    assert line["host"] == "127.0.0.1"
    assert pool.stop() == 0
