"""Gauges read from Redis for /metrics: the group's numbers (with the lag fallback when
XINFO GROUPS reports nil after an XDEL) and the 2 s cache in front of them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from eventbus import DeadLetterQueue, TenantEventBus
from tests.integration.helpers import make_event
from workers.pool.metrics import RedisGauges


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gauges_count_lag_pending_oldest_age_retries_and_dead_letters(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    group = bus.group("tasks", "workers")
    group.ensure()
    ids = bus.publish_many("tasks", [make_event() for _ in range(5)])
    group.read_new("c1", count=2, block_ms=None)  # two pending, three not delivered
    dlq.send_to_dlq("tasks", ids[0], make_event(), "boom", 0)
    gauges = group.gauges()
    assert gauges["lag"] == 3
    assert gauges["pending"] == 2
    assert gauges["oldest_pending_age_s"] >= 0
    assert gauges["scheduled_retries"] == 0
    assert gauges["retry_backlog"] == 0
    assert gauges["dlq_depth"] == 1


def test_lag_is_counted_when_redis_reports_it_as_nil_after_an_xdel(bus: TenantEventBus) -> None:
    group = bus.group("tasks", "workers")
    group.ensure()
    ids = bus.publish_many("tasks", [make_event() for _ in range(5)])
    group.read_new("c1", count=2, block_ms=None)
    bus.redis.xdel(bus.keys.stream("tasks"), ids[3])  # an undelivered entry deleted
    row = group.group_row(group.main)
    assert row is not None and row["lag"] is None  # what Redis says after the XDEL
    assert group.gauges()["lag"] == 2


def test_scrapes_within_two_seconds_share_one_read_of_redis(bus: TenantEventBus) -> None:
    group = bus.group("tasks", "workers")
    group.ensure()
    clock = Clock()
    gauges = RedisGauges(group, lambda: (1, 1), clock=clock)
    registry = CollectorRegistry()
    registry.register(gauges)
    for _ in range(10):
        generate_latest(registry)
    assert gauges.reads == 1
    clock.now += 2.0
    text = generate_latest(registry).decode()
    assert gauges.reads == 2
    assert 'eventbus_group_lag{group="workers",stream="tasks",tenant="acme"} 0.0' in text
    assert 'eventbus_redis_up{group="workers",stream="tasks",tenant="acme"} 1.0' in text
