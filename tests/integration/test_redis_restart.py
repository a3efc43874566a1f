"""A Redis restart under a running consumer loop, with and without persistence.

Each test runs its own redis-server (never the session one): it gets killed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from eventbus import ConsumerSettings, DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.integration.helpers import Recorder, consumer, make_event, named, running
from workers.tools.localredis import LocalRedis

SETTINGS = ConsumerSettings(
    block_ms=200, retry_poll_ms=100, reclaim_interval_s=0.5, reconnect_max_wait_s=0.5
)


@pytest.fixture
def aof_server() -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=True) as server:
        yield server


@pytest.fixture
def slow_loading_server() -> Iterator[LocalRedis]:
    """AOF on, and loading it takes 100 us per command after a restart."""
    slow = ["--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024"]
    with LocalRedis(appendonly=True, extra_args=slow) as server:
        yield server


@pytest.fixture
def plain_server() -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=False) as server:
        yield server


def handled_all(handler: Recorder, events: list) -> bool:
    return {e.event_id for e in events} <= set(handler.ids())


def no_retry_client(server: LocalRedis) -> redis.Redis:
    """A client without redis-py's own retries: the consumer loop sees every failure."""
    return server.client(retry=Retry(NoBackoff(), 0))


def test_loop_survives_a_killed_and_restarted_redis_with_aof(aof_server: LocalRedis) -> None:
    client = aof_server.client()
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    before = [make_event(data={"n": i}) for i in range(20)]
    after = [make_event(data={"n": i}) for i in range(20, 40)]
    handler = Recorder()
    c = consumer(bus, dlq, settings=SETTINGS)

    with capture_logs() as logs, running(c, handler):
        bus.publish_many("tasks", before)
        wait_for(lambda: handled_all(handler, before))
        aof_server.restart(kill=True)  # SIGKILL, then the same port and data dir
        bus.publish_many("tasks", after)
        wait_for(lambda: handled_all(handler, after), timeout_s=30)
        wait_for(lambda: not bus.get_pending("tasks", "workers"), timeout_s=30)

    assert bus.get_stream_info("tasks")["length"] == 40  # the AOF kept the stream
    assert dlq.count("tasks") == 0
    assert not [e for e in logs if e["event"] == "consumer_group_recreated"]


def test_loop_recreates_its_group_after_a_restart_without_persistence(
    plain_server: LocalRedis,
) -> None:
    client = plain_server.client()
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    first, later = make_event(), [make_event(data={"n": i}) for i in range(5)]
    handler = Recorder()
    c = consumer(bus, dlq, settings=SETTINGS)

    with capture_logs() as logs, running(c, handler):
        bus.publish("tasks", first)
        wait_for(lambda: handled_all(handler, [first]))
        plain_server.restart(kill=True)  # everything is gone, the group too
        bus.publish_many("tasks", later)
        wait_for(lambda: handled_all(handler, later), timeout_s=30)
        wait_for(lambda: not bus.get_pending("tasks", "workers"), timeout_s=30)

    assert [e for e in logs if e["event"] == "consumer_group_recreated"]
    assert [g["name"] for g in bus.get_stream_info("tasks")["groups"]] == ["workers"]


def test_loop_reconnects_through_loading_after_a_restart(
    slow_loading_server: LocalRedis,
) -> None:
    server = slow_loading_server
    filler = server.client().pipeline(transaction=False)
    for i in range(20_000):  # 20,000 AOF commands: about 2 s of LOADING after a restart
        filler.xadd("filler", {"i": i})
    filler.execute()
    client = no_retry_client(server)
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    before, after = make_event(), [make_event(data={"n": i}) for i in range(10)]
    handler = Recorder()
    settings = ConsumerSettings(block_ms=200, retry_poll_ms=100, reconnect_max_wait_s=0.2)
    c = consumer(bus, dlq, settings=settings)

    with capture_logs() as logs, running(c, handler):
        bus.publish("tasks", before)
        wait_for(lambda: handled_all(handler, [before]))
        server.restart(kill=True)  # returns once the AOF is loaded
        bus.publish_many("tasks", after)
        wait_for(lambda: handled_all(handler, after), timeout_s=30)
        wait_for(lambda: not bus.get_pending("tasks", "workers"), timeout_s=30)

    errors = [e["error"] for e in named(logs, "redis_unavailable")]
    assert any("BusyLoadingError" in error for error in errors), errors
    assert named(logs, "redis_reconnected")
    assert not named(logs, "consumer_group_recreated")
    assert dlq.count("tasks") == 0


def test_group_recreation_is_logged_even_after_a_long_outage(plain_server: LocalRedis) -> None:
    client = no_retry_client(plain_server)
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    first, later = make_event(), [make_event(data={"n": i}) for i in range(5)]
    handler = Recorder()
    c = consumer(bus, dlq, settings=SETTINGS)

    with capture_logs() as logs, running(c, handler):
        bus.publish("tasks", first)
        wait_for(lambda: handled_all(handler, [first]))
        plain_server.kill()
        wait_for(lambda: len(named(logs, "redis_unavailable")) >= 3)
        plain_server.start()  # empty: no stream, no group
        bus.publish_many("tasks", later)
        wait_for(lambda: handled_all(handler, later), timeout_s=30)

    [recreated] = named(logs, "consumer_group_recreated")
    assert "unacknowledged entries may be lost" in recreated["warning"]
    assert not bus.get_pending("tasks", "workers")
