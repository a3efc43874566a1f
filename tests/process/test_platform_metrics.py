"""A platform pool's /metrics, /healthz and /readyz over real HTTP, with real workers
serving several tenants: counters per tenant, gauges per subscription, the tenant cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from eventbus import TenantEventBus
from eventbus.platform import TenantRegistry
from tests.conftest import wait_for
from tests.process.pool import HANDLER, Pool, tenant_event
from tests.process.test_pool_metrics import free_port, get, scrape

TENANTS = {"acme": 3, "globex": 5, "initech": 2}  # events each publishes (ok ones)


def _labels(tenant: str, stream: str = "tasks", **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"tenant": tenant, "stream": stream, "group": "agents", **extra}.items()))


def _pool(make_pool: Any, tmp_path: Path, *args: str) -> Pool:
    config = tmp_path / "platform.toml"
    config.write_text(
        "[[subscription]]\n"
        'tenant = "*"\nstream = "tasks"\ngroup = "agents"\n'
        f'handler = "{HANDLER}"\n'
        "[[subscription]]\n"
        'tenant = "acme"\nstream = "reviews"\ngroup = "agents"\n'
        f'handler = "{HANDLER}"\n'
    )
    port = free_port()
    pool: Pool = make_pool(
        config=config, processes=2, args=["--metrics-port", str(port), "--retry-delays", "0", *args]
    )
    pool.port = port  # type: ignore[attr-defined]
    return pool.start()


def _publish(r: redis.Redis) -> None:
    for tenant, n in TENANTS.items():
        TenantEventBus(r, tenant).publish_many(
            "tasks", [tenant_event(tenant, i=i) for i in range(n)]
        )
    globex = TenantEventBus(r, "globex")
    globex.publish(
        "tasks", tenant_event("globex", fail=True)
    )  # one retry (--retry-delays 0), then the DLQ


def _value(port: int, name: str, labels: tuple[tuple[str, str], ...]) -> float:
    return scrape(port).get((name, labels), 0.0)


def test_a_platform_pool_serves_counters_per_tenant_and_gauges_per_subscription(
    make_pool: Any, r: redis.Redis, tmp_path: Path
) -> None:
    TenantRegistry(r).add(*TENANTS)
    # an entry left pending by a consumer that is gone: the pool reclaims and handles it
    reviews = TenantEventBus(r, "acme").group("reviews", "agents")
    reviews.ensure()
    TenantEventBus(r, "acme").publish("reviews", tenant_event("acme"))
    assert len(reviews.read_new("ghost", count=1, block_ms=None)) == 1
    pool = _pool(
        make_pool,
        tmp_path,
        "--metrics-max-tenants",
        "0",
        "--reclaim-idle-ms",
        "300",
        "--reclaim-interval-s",
        "0.5",
    )
    port = pool.port  # type: ignore[attr-defined]
    _publish(r)
    reviewed = _labels("acme", "reviews")
    wait_for(lambda: _value(port, "eventbus_events_handled_total", reviewed) == 1, 60)
    # (claimed again while it waits for its new owner's next recovery: idle 300 ms is short)
    assert _value(port, "eventbus_reclaims_total", reviewed) >= 1
    for tenant, n in TENANTS.items():
        wait_for(
            lambda t=tenant, n=n: _value(port, "eventbus_events_handled_total", _labels(t)) == n,
            60,
        )
    dead = _labels("globex", reason="handler_failed")
    wait_for(lambda: _value(port, "eventbus_events_dead_lettered_total", dead) == 1, 60)
    m = scrape(port)
    assert m[("eventbus_events_failed_total", _labels("globex"))] == 2
    assert m[("eventbus_events_retried_total", _labels("globex"))] == 1
    assert ("eventbus_events_failed_total", _labels("acme")) not in m
    for tenant, n in TENANTS.items():
        attempts = n + 2 if tenant == "globex" else n
        assert m[("eventbus_handler_duration_seconds_count", _labels(tenant))] == attempts
        assert m[("eventbus_delivery_latency_seconds_count", _labels(tenant))] == attempts
    # gauges from Redis for every subscription, the idle acme/reviews one included
    wait_for(lambda: _value(port, "eventbus_dlq_depth", _labels("globex")) == 1, 60)
    m = scrape(port)
    subscriptions = [_labels(t) for t in TENANTS] + [_labels("acme", "reviews")]
    for labels in subscriptions:
        assert m[("eventbus_redis_up", labels)] == 1
        assert m[("eventbus_group_lag", labels)] == 0
        assert m[("eventbus_group_pending", labels)] == 0
        assert ("eventbus_oldest_pending_age_seconds", labels) in m
        assert ("eventbus_retries_scheduled", labels) in m
        assert ("eventbus_retry_backlog", labels) in m
    assert m[("eventbus_dlq_depth", _labels("acme"))] == 0
    pool_labels = (("group", ""), ("stream", ""), ("tenant", ""))
    assert ("eventbus_reclaims_total", pool_labels) not in m  # counted per subscription
    assert m[("eventbus_workers", pool_labels)] == 2
    assert m[("eventbus_workers_ready", pool_labels)] == 2
    # a tenant provisioned while the pool runs gets its gauges and counters too
    TenantRegistry(r).add("umbrella")
    TenantEventBus(r, "umbrella").publish("tasks", tenant_event("umbrella"))
    wait_for(lambda: _value(port, "eventbus_events_handled_total", _labels("umbrella")) == 1, 60)
    wait_for(lambda: ("eventbus_group_lag", _labels("umbrella")) in scrape(port), 30)
    assert get(port, "/healthz") == (200, b"ok\n")
    status, body = get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert pool.stop() == 0


def test_the_tenant_cap_merges_a_platform_pools_other_tenants(
    make_pool: Any, r: redis.Redis, tmp_path: Path
) -> None:
    TenantRegistry(r).add(*TENANTS)
    pool = _pool(make_pool, tmp_path, "--metrics-max-tenants", "1")
    port = pool.port  # type: ignore[attr-defined]
    _publish(r)
    # acme comes first by name: it keeps its label; globex and initech are "_other"
    wait_for(lambda: _value(port, "eventbus_events_handled_total", _labels("_other")) == 7, 60)
    wait_for(lambda: _value(port, "eventbus_events_handled_total", _labels("acme")) == 3, 60)
    m = scrape(port)
    tenants = {dict(labels).get("tenant") for _, labels in m}
    assert tenants == {"acme", "_other", ""}, tenants
    assert m[("eventbus_group_lag", _labels("_other"))] == 0
    assert m[("eventbus_redis_up", _labels("acme", "reviews"))] == 1
    assert pool.stop() == 0
