"""Dropped connections and stalls: CLIENT KILL of every connection, DEBUG SLEEP longer than
the workers' socket timeout, CLIENT PAUSE WRITE, and replies lost on the wire (a proxy that
closes the connection after the command ran): after a publish script and after an
XREADGROUP that delivered entries."""

from __future__ import annotations

import time

import redis
from structlog.testing import capture_logs

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import Publisher, make_event, time_to_next_done, wait_more_done
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.faults.proxy import DropProxy
from tests.process.pool import STREAM, TENANT, pending_count
from workers.tools.localredis import LocalRedis

SOCKET_TIMEOUT_S = 1.0  # the workers' client timeout (from the URL), below the stalls


def test_killed_connections_and_stalls_under_load_lose_nothing(
    server: LocalRedis, make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    pool = make_pool(
        processes=2,
        redis_url=f"{server.url}?socket_timeout={SOCKET_TIMEOUT_S}",
        args=["--reclaim-interval-s", "1"],
    ).start()
    control = server.client(socket_timeout=30)
    publisher = Publisher(tbus, ledger, rate_per_s=80)
    publisher.start()
    faults = {
        "client_kill": lambda: control.execute_command("CLIENT", "KILL", "TYPE", "normal"),
        "debug_sleep_2.5s": lambda: control.execute_command("DEBUG", "SLEEP", "2.5"),
        "client_pause_write_2.5s": lambda: control.execute_command(
            "CLIENT", "PAUSE", "2500", "WRITE"
        ),
        "client_kill_again": lambda: control.execute_command("CLIENT", "KILL", "TYPE", "normal"),
    }
    recovery: dict[str, float] = {}
    for name, inject in faults.items():
        wait_more_done(ledger, 20)  # load flows between faults
        inject()
        at = time.time()
        # Recovery is reported, not bounded beyond "it happens": its speed is the machine's.
        recovery[name] = round(time_to_next_done(ledger, at, timeout_s=60), 3)
    publisher.stop()
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert_nothing_lost(
        "killed connections and stalls",
        ledger.report(recovery_s=recovery, publish_errors=len(publisher.errors)),
    )
    assert pool.worker_exits() == []  # reconnected by themselves, never crashed
    assert pool.stop() == 0


def test_lost_reply_to_the_publish_script_is_retried_and_not_published_twice(
    server: LocalRedis, client: redis.Redis
) -> None:
    with DropProxy(server.port, b"EVALSHA", reply_marker=b"", drops=1) as proxy:
        bus = TenantEventBus(redis.Redis.from_url(proxy.url), TENANT)
        event = make_event(i=1)
        with capture_logs() as logs:
            message_id = bus.publish(STREAM, event)
        assert proxy.dropped == 1  # the script ran, its reply was lost
    entries = client.xrange(bus.keys.stream(STREAM))
    assert [m.decode() for m, _ in entries] == [message_id]  # one entry, the one returned
    assert [e["event"] for e in logs] == ["publish_deduplicated"]  # the retry found it


def test_lost_reply_to_a_read_that_delivered_entries_loses_nothing(
    server: LocalRedis, make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    # No periodic own-pending pass comes to the rescue (every 600 s): the worker recovers
    # the entries of a lost reply because it saw the connection drop.
    with DropProxy(server.port, b"XREADGROUP", reply_marker=b"event_id", drops=3) as proxy:
        pool = make_pool(
            processes=1, redis_url=proxy.url, args=["--reclaim-interval-s", "600"]
        ).start()
        publisher = Publisher(tbus, ledger, rate_per_s=40)
        publisher.start()
        wait_for(lambda: proxy.dropped == 3, 60)
        more_from = publisher.acked
        wait_for(lambda: publisher.acked >= more_from + 20)  # more load after the last loss
        publisher.stop()
        ledger.wait_settled(60)
        wait_for(lambda: pending_count(tbus) == 0, 30)
        # The entries of a lost reply stayed pending on the consumer and came again later.
        redelivered = sum(1 for r in ledger.calls("done") if r["delivery"] > 1)
        assert_nothing_lost(
            "lost XREADGROUP replies",
            ledger.report(lost_replies=proxy.dropped, redelivered=redelivered),
        )
        assert redelivered >= 1
        assert pool.worker_exits() == []
        assert pool.stop() == 0
