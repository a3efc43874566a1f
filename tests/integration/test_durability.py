"""The durability knob of publish: ``min_replicas`` waits (WAIT) until that many replicas
have the write, else ReplicationTimeout says the write may be lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from eventbus import BusSettings, ReplicationTimeout, TenantEventBus
from eventbus.errors import EventBusError
from tests.conftest import wait_for
from tests.integration.helpers import make_event
from workers.tools.localredis import LocalRedis


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[LocalRedis, LocalRedis]]:
    """A master and one replica of it (the run's server binary)."""
    from tests.conftest import server_binary

    with LocalRedis(binary=server_binary()) as master:
        replica = LocalRedis(
            binary=server_binary(), extra_args=["--replicaof", "127.0.0.1", str(master.port)]
        )
        with replica:
            probe = replica.client(decode_responses=True)
            wait_for(lambda: probe.info("replication")["master_link_status"] == "up")
            probe.close()
            yield master, replica


def test_a_publish_with_a_replica_returns_once_the_replica_has_it(
    replicated: tuple[LocalRedis, LocalRedis],
) -> None:
    master, replica = replicated
    bus = TenantEventBus(master.client(), "acme", settings=BusSettings(min_replicas=1))

    message_id = bus.publish("tasks", make_event())
    ids = bus.publish_many("tasks", [make_event(), make_event()])

    # WAIT returned 1: the replica acknowledged the offset of these writes
    copy = replica.client()
    assert [m.decode() for m, _ in copy.xrange(bus.keys.stream("tasks"))] == [message_id, *ids]


def test_without_enough_replicas_publish_says_the_write_may_be_lost(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    event = make_event()
    with pytest.raises(ReplicationTimeout, match="may be lost") as info:
        bus.publish("tasks", event, min_replicas=1, replica_timeout_ms=50)

    err = info.value
    assert isinstance(err, EventBusError)
    assert (err.acked, err.wanted, err.stream) == (0, 1, "tasks")
    # written on the master all the same; publishing it again is a safe no-op (dedupe)
    assert r.xlen(bus.keys.stream("tasks")) == 1
    assert err.message_ids == [bus.publish("tasks", event)]


def test_the_bus_setting_applies_and_a_call_can_turn_it_off(r: redis.Redis) -> None:
    bus = TenantEventBus(r, "acme", settings=BusSettings(min_replicas=2, replica_timeout_ms=50))

    with pytest.raises(ReplicationTimeout, match="0 of 2 replica"):
        bus.publish_many("tasks", [make_event()])
    assert bus.publish("tasks", make_event(), min_replicas=0)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"min_replicas": -1}, "min_replicas"), ({"replica_timeout_ms": -5}, "replica_timeout_ms")],
)
def test_bad_durability_values_are_refused_naming_them(
    bus: TenantEventBus, kwargs: dict[str, int], bad: str
) -> None:
    with pytest.raises(ValueError, match=bad):
        bus.publish("tasks", make_event(), **kwargs)
