"""Memory and retention limits: Redis out of memory (maxmemory, noeviction) and a backlog
five times larger than the stream's retention cap."""

from __future__ import annotations

import pytest
import redis

from eventbus import BusRefused, TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event, sigkill
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import GROUP, STREAM, pending_count


def test_out_of_memory_refuses_publish_keeps_a_failing_event_pending_and_consumers_ack(
    make_pool, tbus: TenantEventBus, ledger: Ledger, client: redis.Redis
) -> None:
    # max-deliveries is high: every own-pending pass during the OOM delivers the failing
    # event again (its outcome cannot be written), which must not make it "poison".
    args = ["--reclaim-interval-s", "1", "--retry-delays", "0.2", "--max-deliveries", "50"]
    pool = make_pool(processes=1, args=args).start()
    # Keeps the one worker busy while the test publishes and turns on the OOM (then it is
    # killed): seconds of slack for a loaded machine, so nothing below is read before.
    blocker = make_event(sleep_s=5)
    tbus.publish(STREAM, blocker)
    ledger.published(blocker.event_id)
    wait_for(lambda: ledger.calls_of(blocker.event_id, "start"), 30)
    good = [make_event(i=i) for i in range(20)]
    failing = make_event(fail_until_attempt=2)
    tbus.publish_many(STREAM, [*good, failing])
    ledger.published_many(e.event_id for e in [*good, failing])
    stream_len = client.xlen(tbus.keys.stream(STREAM))

    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write that may grow memory is refused now
    with pytest.raises(BusRefused, match="maxmemory"):
        tbus.publish(STREAM, make_event(i=-1))
    assert client.xlen(tbus.keys.stream(STREAM)) == stream_len  # nothing half written
    (worker,) = pool.worker_pids()
    sigkill(worker)  # the respawned worker starts under OOM: it must still consume

    wait_for(lambda: {e.event_id for e in good} <= set(ledger.done()), 30)
    wait_for(lambda: ledger.calls_of(failing.event_id, "fail"), 30)
    wait_for(lambda: pool.logged("retry_schedule_failed"), 30)
    wait_for(lambda: pending_count(tbus) == 1, 30)  # acks work: only the failing one is left
    (entry,) = tbus.get_pending(STREAM, GROUP)
    assert entry.message_id == client.xrange(tbus.keys.stream(STREAM))[-1][0].decode()
    assert client.xlen(tbus.keys.dlq(STREAM)) == 0  # not dead-lettered, not lost: pending
    assert failing.event_id not in ledger.done()

    client.config_set("maxmemory", 0)  # memory frees
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    attempts = [r["attempt"] for r in ledger.calls_of(failing.event_id, "done")]
    assert_nothing_lost(
        "out of memory",
        ledger.report(
            failing_calls_during_oom=len(ledger.calls_of(failing.event_id, "fail")),
            respawns=len(pool.logged("worker_respawned")),
        ),
    )
    assert attempts == [2]  # the retry ran once memory was back, with its count
    assert pool.stop() == 0


def test_a_backlog_five_times_the_stream_cap_is_never_trimmed_before_it_is_consumed(
    make_pool, tbus: TenantEventBus, ledger: Ledger, client: redis.Redis
) -> None:
    assert tbus.settings.maxlen == 1000
    tbus.ensure_group(STREAM, GROUP)  # the group exists and reads nothing yet
    events = [make_event(i=i) for i in range(5000)]
    for start in range(0, len(events), 500):
        tbus.publish_many(STREAM, events[start : start + 500])
        ledger.published_many(e.event_id for e in events[start : start + 500])
    key = tbus.keys.stream(STREAM)
    assert client.xlen(key) == 5000  # every publish tried to trim: nothing unread went
    pool = make_pool(
        processes=2, args=["--sweep-interval-s", "0.3", "--reclaim-interval-s", "1"]
    ).start()  # the sweeper trims acknowledged history while the pool reads
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert_nothing_lost("backlog 5x the stream cap", ledger.report())
    wait_for(lambda: client.xlen(key) <= 1000, 30)  # consumed history is trimmed again
    assert pool.stop() == 0
