"""TenantEventBus on a real Redis: publish, idempotence, limits, groups, reads, retention."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from eventbus import (
    BusConnectionError,
    BusSettings,
    EventTooLarge,
    InvalidName,
    PublishOutcomeUnknown,
    TenantEventBus,
    TenantMismatch,
)
from eventbus.errors import StreamNotFound
from eventbus.redis_io import AnyRedis, max_block_ms
from tests.integration.helpers import make_event
from workers.tools.localredis import LocalRedis, free_port

STREAM_KEY = "t:{acme}:events:tasks"


def dead_client() -> redis.Redis:
    """A client to a port nobody listens on, failing at once (no redis-py retries)."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


# -- publishing -----------------------------------------------------------------------


def test_publish_returns_the_id_of_an_entry_in_the_tenant_stream_key(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    event = make_event()

    message_id = bus.publish("tasks", event)

    assert r.exists(STREAM_KEY) == 1
    assert r.type(STREAM_KEY) == b"stream"
    [(stored_id, fields)] = r.xrange(STREAM_KEY)
    assert stored_id.decode() == message_id
    assert fields[b"event_id"] == event.event_id.encode()
    assert bus.streams() == ["tasks"]


def test_publish_of_another_tenants_event_raises_tenant_mismatch_and_writes_nothing(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    with pytest.raises(TenantMismatch, match="'globex'") as info:
        bus.publish("tasks", make_event(tenant="globex"))

    assert isinstance(info.value, ValueError)
    assert r.dbsize() == 0


@pytest.mark.parametrize("stream", ["a:b", "*", "", "x" * 129, "../tasks"])
def test_publish_to_an_invalid_stream_name_raises_value_error(
    r: redis.Redis, bus: TenantEventBus, stream: str
) -> None:
    with pytest.raises(InvalidName) as info:
        bus.publish(stream, make_event())

    assert isinstance(info.value, ValueError)
    assert r.dbsize() == 0


def test_publishing_the_same_event_twice_writes_it_once(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    event = make_event()

    first = bus.publish("tasks", event)
    second = bus.publish("tasks", event)

    assert second == first
    assert r.xlen(STREAM_KEY) == 1


def test_publish_many_returns_ids_in_order_and_is_idempotent(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    events = [make_event(data={"n": i}) for i in range(5)]

    ids = bus.publish_many("tasks", events)
    again = bus.publish_many("tasks", [events[3], make_event(data={"n": 5}), events[0]])

    assert [i.decode() for i, _ in r.xrange(STREAM_KEY)][:5] == ids
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert again[0] == ids[3] and again[2] == ids[0]
    assert r.xlen(STREAM_KEY) == 6
    assert bus.publish_many("tasks", []) == []


def test_publish_many_of_several_script_calls_keeps_order_and_dedupes_within_the_batch(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    events = [make_event(data={"n": i}) for i in range(250)]  # three publish.lua calls

    ids = bus.publish_many("tasks", [*events, events[7], events[240]])

    assert ids[:250] == [i.decode() for i, _ in r.xrange(STREAM_KEY)]
    assert ids[250] == ids[7] and ids[251] == ids[240]
    assert r.xlen(STREAM_KEY) == 250


def test_event_over_the_size_limit_raises_before_redis_is_touched() -> None:
    bus = TenantEventBus(dead_client(), "acme", settings=BusSettings(max_event_bytes=500))
    big = make_event(data={"blob": "x" * 600})

    with pytest.raises(EventTooLarge, match="over the limit of 500"):
        bus.publish("tasks", big)
    with pytest.raises(EventTooLarge):
        bus.publish_many("tasks", [make_event(), big])


def test_publish_many_with_one_oversized_event_writes_none(r: redis.Redis) -> None:
    bus = TenantEventBus(r, "acme", settings=BusSettings(max_event_bytes=500))

    with pytest.raises(EventTooLarge):
        bus.publish_many("tasks", [make_event(), make_event(data={"blob": "x" * 600})])

    assert r.dbsize() == 0


def test_publish_without_a_reply_raises_publish_outcome_unknown() -> None:
    bus = TenantEventBus(dead_client(), "acme", settings=BusSettings(retry_budget_s=0.2))
    event = make_event()

    with pytest.raises(PublishOutcomeUnknown) as info:
        bus.publish("tasks", event)

    assert isinstance(info.value, BusConnectionError)
    assert info.value.event_id == event.event_id
    assert "safe" in str(info.value)


def test_a_publish_to_a_dead_redis_is_retried_for_the_budget_only_whatever_the_client() -> None:
    # redis-py 8's default client retries every command 10 times by itself (about 13 s in
    # all under the bus's own retries before); the bus's client has no retries of its own.
    client = redis.Redis(host="127.0.0.1", port=free_port())
    assert client.connection_pool.connection_kwargs["retry"].get_retries() > 0
    bus = TenantEventBus(client, "acme", settings=BusSettings(retry_budget_s=1.0))

    started = time.monotonic()
    with pytest.raises(PublishOutcomeUnknown):
        bus.publish("tasks", make_event())
    took = time.monotonic() - started

    assert took >= 1.0  # never gives up before the budget
    # The tries are sleeps, not work, so this holds on a busy machine; 13 s before the fix.
    assert took < 6.0
    assert bus.redis.connection_pool.connection_kwargs["retry"].get_retries() == 0


# -- groups and reading ---------------------------------------------------------------


def test_subscribe_delivers_events_published_before_the_group_existed(
    bus: TenantEventBus,
) -> None:
    events = [make_event(data={"n": i}) for i in range(3)]
    ids = bus.publish_many("tasks", events)

    messages = bus.subscribe("tasks", "workers", "c1", count=10, block=100)

    assert [m.message_id for m in messages] == ids
    assert [m.event() for m in messages] == events


def test_subscribe_ack_and_pending_track_each_delivery(bus: TenantEventBus) -> None:
    bus.publish_many("tasks", [make_event(), make_event()])

    first, second = bus.subscribe("tasks", "workers", "c1", block=100)
    pending = bus.get_pending("tasks", "workers")

    assert [(p.message_id, p.consumer, p.deliveries) for p in pending] == [
        (first.message_id, "c1", 1),
        (second.message_id, "c1", 1),
    ]
    assert bus.ack("tasks", "workers", first.message_id) == 1
    assert bus.ack("tasks", "workers", first.message_id) == 0  # already acknowledged
    assert [p.message_id for p in bus.get_pending("tasks", "workers")] == [second.message_id]
    assert bus.subscribe("tasks", "workers", "c1", block=10) == []  # nothing new


def test_each_group_gets_every_event_once(bus: TenantEventBus) -> None:
    event_id = bus.publish("tasks", make_event())

    a = bus.subscribe("tasks", "billing", "c1", block=10)
    b = bus.subscribe("tasks", "audit", "c1", block=10)

    assert [m.message_id for m in a] == [event_id] == [m.message_id for m in b]
    assert bus.subscribe("tasks", "billing", "c2", block=10) == []


def test_get_stream_info_reports_length_ids_and_groups(bus: TenantEventBus) -> None:
    ids = bus.publish_many("tasks", [make_event(), make_event(), make_event()])
    bus.subscribe("tasks", "workers", "c1", count=1, block=10)

    info = bus.get_stream_info("tasks")

    assert info["key"] == STREAM_KEY
    assert info["length"] == 3
    assert info["first_entry_id"] == ids[0]
    assert info["last_entry_id"] == ids[-1] == info["last_generated_id"]
    [group] = info["groups"]
    assert group == {
        "name": "workers",
        "consumers": 1,
        "pending": 1,
        "last_delivered_id": ids[0],
        "lag": 2,
    }


def test_get_stream_info_of_a_missing_stream_raises_key_error(bus: TenantEventBus) -> None:
    with pytest.raises(KeyError, match="'nothing' of tenant 'acme' does not exist") as info:
        bus.get_stream_info("nothing")
    assert isinstance(info.value, StreamNotFound)


@contextmanager
def xreadgroup_blocks(server: LocalRedis) -> Iterator[list[int]]:
    """A list that fills, on exit, with the BLOCK argument of every XREADGROUP the server
    received meanwhile (seen through MONITOR)."""
    blocks: list[int] = []
    with server.client().monitor() as monitor:
        yield blocks
        server.client().echo("end-of-monitor")
        while (command := monitor.next_command()["command"]) != "ECHO end-of-monitor":
            words = command.split()
            if words[0].upper() == "XREADGROUP":
                blocks.append(int(words[[w.upper() for w in words].index("BLOCK") + 1]))


def test_subscribe_with_the_default_socket_timeout_clamps_a_5s_block(
    redis_server: LocalRedis,
) -> None:
    client = redis_server.client()  # redis-py's default socket_timeout: 5 s
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 5
    bus = TenantEventBus(client, "acme")

    with xreadgroup_blocks(redis_server) as blocks:
        start = time.monotonic()
        messages = bus.subscribe("quiet", "workers", "c1", block=5000)
        waited_s = time.monotonic() - start

    assert messages == []
    # Clamped to 80% of the socket timeout, as the server saw it; asked once (a read that
    # outlived the socket timeout would have been sent again by redis-py).
    assert blocks == [4000]
    assert waited_s >= 3.9  # and it really blocked that long


def test_subscribe_block_longer_than_a_short_socket_timeout_returns_empty(
    redis_server: LocalRedis,
) -> None:
    # No redis-py retries: a client-side read timeout would surface as an error here.
    client = redis_server.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    bus = TenantEventBus(client, "acme")
    assert max_block_ms(client, 5000) == 400

    with xreadgroup_blocks(redis_server) as blocks:
        start = time.monotonic()
        messages = bus.subscribe("quiet", "workers", "c1", block=5000)
        waited_s = time.monotonic() - start

    assert messages == []
    assert blocks == [400]  # sent once, below the 0.5 s socket timeout
    assert waited_s >= 0.35


def test_a_client_with_decode_responses_works_too(
    make_client: Callable[..., AnyRedis], r: AnyRedis
) -> None:
    bus = TenantEventBus(make_client(decode_responses=True), "acme")
    event = make_event(data={"text": "héllo"})

    message_id = bus.publish("tasks", event)
    [message] = bus.subscribe("tasks", "workers", "c1", block=10)

    assert message.message_id == message_id
    assert message.event() == event
    assert bus.get_pending("tasks", "workers")[0].message_id == message_id
    assert bus.get_stream_info("tasks")["length"] == 1
    assert bus.ack("tasks", "workers", message_id) == 1
    assert bus.streams() == ["tasks"]


# -- retention ------------------------------------------------------------------------


def _publish_n(bus: TenantEventBus, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 500):
        ids += bus.publish_many(
            "tasks", [make_event(data={"n": i}) for i in range(start, start + 500)]
        )
    return ids


def test_retention_never_trims_entries_a_group_has_not_read(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.ensure_group("tasks", "workers")

    ids = _publish_n(bus, 5000)

    assert r.xlen(STREAM_KEY) == 5000
    delivered: list[str] = []
    while batch := bus.subscribe("tasks", "workers", "c1", count=1000, block=10):
        delivered += [m.message_id for m in batch]
    assert delivered == ids


def test_retention_keeps_every_entry_of_a_stream_without_groups_for_the_first_group(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    # Since e281fd1 a stream nobody has subscribed to yet is not trimmed (the issue asked
    # for ~maxlen here): the first group starts from the beginning and must see it all.
    ids = _publish_n(bus, 3000)

    assert r.xlen(STREAM_KEY) == 3000
    delivered: list[str] = []
    while batch := bus.subscribe("tasks", "workers", "c1", count=1000, block=10):
        delivered += [m.message_id for m in batch]
    assert delivered == ids


def test_retention_trims_again_once_the_group_has_acknowledged_everything(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.ensure_group("tasks", "workers")
    _publish_n(bus, 3000)
    while batch := bus.subscribe("tasks", "workers", "c1", count=1000, block=10):
        bus.ack("tasks", "workers", *[m.message_id for m in batch])
    assert r.xlen(STREAM_KEY) == 3000  # nothing was trimmed while unread

    bus.publish("tasks", make_event())

    assert 1000 <= r.xlen(STREAM_KEY) <= 1000 + bus.settings.trim_slack


def test_retention_keeps_pending_entries_even_when_later_ones_are_acknowledged(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.ensure_group("tasks", "workers")
    ids = _publish_n(bus, 2000)
    batch = bus.subscribe("tasks", "workers", "c1", count=2000, block=10)
    bus.ack("tasks", "workers", *[m.message_id for m in batch[1:]])  # the first stays pending

    _publish_n(bus, 500)

    assert r.xrange(STREAM_KEY, count=1)[0][0].decode() == ids[0]
    assert r.xlen(STREAM_KEY) == 2500


def test_maxlen_zero_never_trims(r: redis.Redis) -> None:
    bus = TenantEventBus(r, "acme", maxlen=0)

    _publish_n(bus, 1500)

    assert r.xlen(STREAM_KEY) == 1500


def test_subscribe_recreates_a_vanished_group_from_the_start_and_says_so(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    assert bus.subscribe("tasks", "g", "c1", block=10) == []
    r.xgroup_destroy("t:{acme}:events:tasks", "g")
    event = make_event()
    bus.publish("tasks", event)
    with capture_logs() as logs:
        (msg,) = bus.subscribe("tasks", "g", "c1", block=10)
    assert msg.event() == event
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["consumer_group_recreated"]
