"""Dead-consumer cleanup (the sweeper's idle-consumer removal, delete_idle_consumer.lua)
never removes a consumer that holds pending entries: XGROUP DELCONSUMER would drop them
from the group for good. Raced here against consumers that appear idle and empty and then
receive entries, with the sweeper removing idle names as fast as it can."""

from __future__ import annotations

import threading
import time

import redis

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import GROUP, STREAM, TENANT, pending_count
from workers.pool.config import Subscription
from workers.pool.jobs import PoolGroups, Sweeper
from workers.pool.settings import PoolSettings


def test_idle_consumer_removal_never_removes_a_consumer_with_pending_entries(
    make_pool, tbus: TenantEventBus, ledger: Ledger, client: redis.Redis
) -> None:
    key = tbus.keys.stream(STREAM)
    tbus.ensure_group(STREAM, GROUP)
    events = [make_event(i=i) for i in range(300)]
    tbus.publish_many(STREAM, events)
    ledger.published_many(e.event_id for e in events)
    group = tbus.group(STREAM, GROUP)  # the sweeper's removal step, through the public API
    stop = threading.Event()
    removed: list[int] = []
    errors: list[BaseException] = []

    def sweep_hard() -> None:  # bounded by the stop event and by time
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                removed.append(len(group.remove_idle_consumers([], min_idle_ms=1)))
        except BaseException as exc:  # surfaced below: a dead sweeper races nothing
            errors.append(exc)

    thread = threading.Thread(target=sweep_hard, daemon=True)
    thread.start()
    delivered: dict[str, int] = {}
    try:
        for round_ in range(6):
            names = [f"ghost-{round_}-{i:02d}" for i in range(50)]
            for name in names:  # idle and empty: fair game for the sweeper...
                client.xgroup_createconsumer(key, GROUP, name)
            time.sleep(0.005)  # let time pass: idle long enough, the sweeper lists them
            for name in reversed(names):  # ...until each reads, while the sweeper works
                reply = client.xreadgroup(GROUP, name, {key: ">"}, count=1)
                delivered[name] = sum(len(entries) for _, entries in reply) if reply else 0
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert not errors, f"the sweeping thread failed: {errors[0]!r}"
    holders = {name for name, n in delivered.items() if n}
    consumers = {c["name"].decode(): c for c in client.xinfo_consumers(key, GROUP)}
    assert holders <= set(consumers)  # every consumer holding entries is still there
    for name in holders:
        assert consumers[name]["pending"] == delivered[name]
    assert pending_count(tbus) == sum(delivered.values()) == 300  # nothing dropped
    assert sum(removed) > 0  # it removed idle empty names meanwhile: it really raced

    # A pool takes the ghosts' entries over (they never come back) and handles all of them.
    pool = make_pool(
        processes=2, args=["--reclaim-idle-ms", "300", "--reclaim-interval-s", "0.3"]
    ).start()
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert_nothing_lost(
        "idle-consumer removal race",
        ledger.report(holders=len(holders), empty_names_removed=sum(removed)),
    )
    assert pool.stop() == 0


def test_a_sweep_before_the_workers_created_their_group_does_not_fail(
    tbus: TenantEventBus, client: redis.Redis
) -> None:
    tbus.publish(STREAM, make_event(i=0))  # the stream exists, the pool's group not yet
    one = Subscription(TENANT, STREAM, GROUP, "x:y")
    settings = PoolSettings(
        redis_url="", tenant=TENANT, stream=STREAM, group=GROUP, handler="x:y", subscriptions=(one,)
    )
    sweeper = Sweeper(PoolGroups(client, settings), lambda: [])
    counts = sweeper.tick()  # a pool's first tick races its workers' group creation
    assert counts["consumers_removed"] == 0 and counts["trimmed"] == 0
    assert client.xlen(tbus.keys.stream(STREAM)) == 1
