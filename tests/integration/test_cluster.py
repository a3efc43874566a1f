"""What only a Redis Cluster shows, on a private cluster of 3 masters (whatever server the
run is on): scripts reloaded on a node that lost them, reads routed without a round trip,
keys of two tenants refused in one script, tenant ACLs on every node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.acl import tenant_users
from eventbus.errors import BusRefused
from eventbus.keys import TenantKeys
from eventbus.scripts import RequestLimits
from tests.conftest import wait_for
from tests.integration.helpers import FAST, consumer, make_event, on_every_node, running
from workers.tools.localcluster import LocalCluster


@pytest.fixture
def rc(cluster_server: LocalCluster) -> Iterator[RedisCluster]:
    cluster_server.flushall()
    client = cluster_server.client()
    yield client
    client.close()


def test_tenants_land_on_different_masters(cluster_server: LocalCluster) -> None:
    owners = {cluster_server.master_of(TenantKeys(t).stream("s")).port for t in ("a", "b", "c")}

    assert len(owners) > 1  # {a}, {b}, {c} hash to slots of different masters


def test_noscript_on_the_tenants_master_is_recovered_by_reloading(
    cluster_server: LocalCluster, rc: RedisCluster
) -> None:
    """A node that never saw the script (new master after a failover, SCRIPT FLUSH):
    the call loads it and goes on, for publish and for a consumer's moves."""
    bus = TenantEventBus(rc, "acme")
    first = bus.publish("tasks", make_event())
    owner = cluster_server.master_of(bus.keys.stream("tasks")).client()
    owner.script_flush()
    assert owner.script_exists(bus.scripts._publish.sha) == [False]

    second = bus.publish("tasks", make_event())

    assert second > first
    assert owner.script_exists(bus.scripts._publish.sha) == [True]
    owner.script_flush()  # and again under a consumer: retry and dead letter by script
    seen: list[int] = []

    def fail(event: object) -> None:
        seen.append(1)
        raise RuntimeError("no")

    dlq = DeadLetterQueue(rc, "acme")
    with running(consumer(bus, dlq, settings=FAST, retry_delays=[0.05]), fail):
        wait_for(lambda: dlq.count("tasks") == 2)
    assert len(seen) > 2  # retried (ack_and_retry, promote_due), then dead-lettered
    owner.close()


def test_stream_reads_are_routed_without_asking_the_server_for_their_keys(
    rc: RedisCluster,
) -> None:
    bus = TenantEventBus(rc, "acme")
    parser = bus.redis.commands_parser  # type: ignore[union-attr]
    args = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "k1", "k2", ">", ">")

    assert parser.get_keys(None, *args) == ["k1", "k2"]  # no connection: no COMMAND GETKEYS


def test_a_script_given_keys_of_two_tenants_is_refused_before_it_runs(rc: RedisCluster) -> None:
    bus = TenantEventBus(rc, "acme")
    acme, other = bus.keys, TenantKeys("globex")
    keys = [acme.stream("s"), acme.registry(), other.halted(), acme.spent()]

    with pytest.raises(RedisClusterException, match="same key slot|CROSSSLOT"):
        bus.scripts.publish(
            keys, "s", [], dedupe_ttl_ms=1, maxlen=0, slack=0, limits=RequestLimits()
        )
    assert rc.exists(acme.stream("s")) == 0


def test_tenant_acl_users_work_and_are_confined_on_a_cluster(
    cluster_server: LocalCluster, rc: RedisCluster
) -> None:
    users = tenant_users("acme", worker_password="w", publisher_password="p")
    for user in users:
        on_every_node(rc, "ACL", "SETUSER", *user.setuser_args())
    worker = cluster_server.client(username="eventbus-acme-worker", password="w")
    try:
        bus = TenantEventBus(worker, "acme")
        message_id = bus.publish("tasks", make_event())
        [message] = bus.subscribe("tasks", "workers", "c1", block=10)
        assert message.message_id == message_id
        assert bus.ack("tasks", "workers", message_id) == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.xadd(TenantKeys("globex").stream("tasks"), {"x": "1"})
        with pytest.raises(BusRefused, match="NoPermissionError"):
            TenantEventBus(worker, "globex").publish("tasks", make_event("globex"))
    finally:
        worker.close()
        for user in users:
            on_every_node(rc, "ACL", "DELUSER", user.username)


def test_a_slot_migration_under_load_loses_nothing_and_the_loop_goes_on(
    cluster_server: LocalCluster, rc: RedisCluster
) -> None:
    """The tenant's slot moves to another master while events are published and handled:
    the clients meet ASK (keys half moved) and MOVED (after), and follow them."""
    bus = TenantEventBus(rc, "acme")
    dlq = DeadLetterQueue(rc, "acme")
    handled: set[str] = set()
    first = [make_event(data={"n": i}) for i in range(300)]
    bus.publish_many("tasks", first)
    key = bus.keys.stream("tasks")
    source = cluster_server.master_of(key)
    target = next(
        n for n in cluster_server.nodes[: cluster_server.masters] if n.port != source.port
    )
    # a long block: the consumer idles in XREADGROUP on the source while its stream is
    # migrated away, which ends that read with UNBLOCKED (a transient error: it reads again)
    idle = replace(FAST, block_ms=1000)
    with running(consumer(bus, dlq, settings=idle), lambda e: handled.add(e.event_id)):
        wait_for(lambda: {e.event_id for e in first} <= handled)
        moved = cluster_server.migrate_slot_of(key, target)
        later = [make_event(data={"n": 300 + i}) for i in range(100)]
        for event in later:
            bus.publish("tasks", event)
        wait_for(lambda: {e.event_id for e in first + later} <= handled, 60)

    assert moved >= 2  # the stream, its retry stream, markers...: all went across
    assert cluster_server.master_of(key).port == target.port
    assert dlq.count("tasks") == 0
