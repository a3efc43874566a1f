"""A platform pool's gauges: many groups read in two pipelines give the same numbers as
one group read alone, and a scrape reads at most ``max_per_read`` subscriptions, the
least recently read first."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.gauges import read_gauges
from eventbus.groupstream import GroupStream
from eventbus.redis_io import AnyRedis
from tests.integration.helpers import make_event
from workers.pool.config import Subscription
from workers.pool.jobs import PoolGroups
from workers.pool.metrics import PlatformGauges
from workers.pool.settings import PoolSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pool(client: AnyRedis, *subs: tuple[str, str, str]) -> PoolGroups:
    subscriptions = tuple(Subscription(t, s, g, "x:y") for t, s, g in subs)
    settings = PoolSettings(
        redis_url="",
        tenant=subs[0][0],
        stream=subs[0][1],
        group=subs[0][2],
        handler="x:y",
        subscriptions=subscriptions,
    )
    return PoolGroups(client, settings)


def _groups(r: AnyRedis) -> list[GroupStream]:
    """Groups in every state a gauge can see."""
    acme, globex = TenantEventBus(r, "acme"), TenantEventBus(r, "globex")
    busy = acme.group("tasks", "agents")  # pending, lag, a dead letter
    busy.ensure()
    ids = acme.publish_many("tasks", [make_event() for _ in range(5)])
    busy.read_new("c1", count=2, block_ms=None)
    DeadLetterQueue(r, "acme").send_to_dlq("tasks", ids[0], make_event(), "boom", 0)
    deleted = globex.group("tasks", "agents")  # lag nil after an XDEL: counted
    deleted.ensure()
    gids = globex.publish_many("tasks", [make_event("globex") for _ in range(4)])
    deleted.read_new("c1", count=1, block_ms=None)
    r.xdel(globex.keys.stream("tasks"), gids[2])
    idle = globex.group("reviews", "agents")  # exists, empty
    idle.ensure()
    missing = acme.group("never", "agents")  # no stream, no group
    return [busy, deleted, idle, missing]


def test_gauges_of_many_groups_in_pipelines_equal_each_groups_own(r: AnyRedis) -> None:
    groups = _groups(r)
    many = read_gauges(r, groups)
    for group, got in zip(groups, many, strict=True):
        alone = group.gauges()
        assert got is not None
        assert (got["oldest_pending_age_s"] > 0) == (alone["oldest_pending_age_s"] > 0)
        got.pop("oldest_pending_age_s"), alone.pop("oldest_pending_age_s")
        assert got == alone, (group.tenant_id, group.stream)
    assert many[0] is not None and (many[0]["lag"], many[0]["pending"]) == (3, 2)
    assert many[0]["dlq_depth"] == 1
    assert many[1] is not None and many[1]["lag"] == 2  # 4 published, 1 read, 1 deleted
    assert read_gauges(r, []) == []


def test_a_scrape_reads_at_most_max_per_read_subscriptions_least_recently_read_first(
    r: AnyRedis,
) -> None:
    subs = [("acme", f"s{i}", "agents") for i in range(5)]
    clock = Clock()
    gauges = PlatformGauges(_pool(r, *subs), lambda: (2, 2), max_per_read=2, clock=clock)
    registry = CollectorRegistry()
    registry.register(gauges)
    for _ in range(5):  # within the cache's 2 s: one read
        generate_latest(registry)
    assert gauges.reads == 1
    assert gauges.last_read == subs[:2]
    seen = set(gauges.values())
    for expected in (subs[2:4], [subs[4], subs[0]]):
        clock.now += 2.0
        text = generate_latest(registry).decode()
        assert gauges.last_read == expected
        seen |= set(gauges.values())
    assert seen == set(subs)  # every subscription within ceil(5 / 2) reads
    for _, stream, _ in subs:  # served with their last values meanwhile
        assert f'eventbus_group_lag{{group="agents",stream="{stream}",tenant="acme"}} 0.0' in text
    assert 'eventbus_workers_ready{group="",stream="",tenant=""} 2.0' in text


@pytest.mark.slow
def test_gauges_of_a_thousand_subscriptions_in_one_read(r: AnyRedis) -> None:
    subs = [(f"t{i:04d}", "tasks", "agents") for i in range(1000)]
    pool = _pool(r, *subs)
    for tenant, stream, group in subs[::10]:  # every tenth has something pending
        bus = pool.bus(tenant)
        bus.group(stream, group).ensure()
        bus.publish(stream, make_event(tenant))
        bus.group(stream, group).read_new("c1", count=1, block_ms=None)
    groups = pool.groups()
    started = time.perf_counter()
    many = read_gauges(r, groups)
    took = time.perf_counter() - started
    started = time.perf_counter()
    for group in groups[:100]:
        group.gauges()
    one_by_one = (time.perf_counter() - started) * 10
    print(
        f"gauges of 1,000 subscriptions: {took * 1000:.0f} ms pipelined, "
        f"~{one_by_one * 1000:.0f} ms one by one"
    )
    assert all(g is not None for g in many)
    assert sum(g["pending"] for g in many if g is not None) == 100
    gauges = PlatformGauges(pool, lambda: (1, 1))
    gauges.values()
    assert len(gauges.last_read) == 1000
