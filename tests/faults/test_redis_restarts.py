"""Redis dies under a running pool and a publisher. With AOF (appendfsync always) on the same
data dir, every acknowledged publish is handled and the workers reconnect by themselves
through LOADING. Without persistence the data is gone (inherent), but the pool recreates
its group from the start (0, never $) and goes on, with a loud warning."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import FaultPool, Publisher, make_event, time_to_next_done, wait_more_done
from tests.faults.ledger import Ledger, assert_nothing_lost, record_report
from tests.process.pool import GROUP, STREAM, TENANT, pending_count
from workers.tools.localredis import LocalRedis
from workers.tools.procs import state

# Every restart replays a base RDB of 2,000 keys at 0.5 ms a key, serving clients LOADING
# meanwhile (events are processed every 1 KiB of load): about a second of LOADING.
SLOW_LOAD = ["--key-load-delay", "500", "--loading-process-events-interval-bytes", "1024"]


def _slow_loading_base(server: LocalRedis) -> None:
    r = server.client()
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"filler:{i}", "x" * 32)
    pipe.execute()
    _rewrite_aof(server)
    server.extra_args += SLOW_LOAD


def _rewrite_aof(server: LocalRedis) -> None:
    """Fold the AOF into a new base (an RDB preamble): the next start replays little."""
    r = server.client()
    r.bgrewriteaof()
    wait_for(lambda: not r.info("persistence")["aof_rewrite_scheduled"], 30)
    wait_for(lambda: not r.info("persistence")["aof_rewrite_in_progress"], 30)


@pytest.mark.slow
def test_redis_sigkill_and_restart_on_the_same_aof_loses_no_acknowledged_publish(
    server: LocalRedis, make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    _slow_loading_base(server)
    pool = make_pool(processes=2, args=["--reclaim-interval-s", "1"]).start()
    publisher = Publisher(tbus, ledger, rate_per_s=100)
    publisher.start()
    recovery, loading = [], []
    for _ in range(3):
        wait_more_done(ledger, 50)  # load flows before the crash
        server.kill()
        time.sleep(0.3)  # let time pass: Redis stays down a moment
        began = time.monotonic()
        server.start(timeout_s=60)  # same port and dir; returns once LOADING is over
        loading.append(round(time.monotonic() - began, 2))
        recovery.append(round(time_to_next_done(ledger, time.time(), 60), 3))
        _rewrite_aof(server)  # keep the next load at about a second
    publisher.stop()
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    errors = [e.get("error", "") for e in pool.logged("redis_unavailable")]
    assert_nothing_lost(
        "Redis SIGKILL + restart (AOF always)",
        ledger.report(
            restarts=3,
            loading_s=loading,
            recovery_after_load_s=recovery,
            publish_errors=len(publisher.errors),
            worker_respawns=len(pool.logged("worker_respawned")),
        ),
    )
    assert min(loading) > 0.3  # the restarts really went through LOADING...
    assert any("loading the dataset" in e for e in errors)  # ...seen by the workers
    assert pool.logged("redis_reconnected")
    assert pool.worker_exits() == []  # no crash loop: not a single respawn
    assert not pool.logged("consumer_group_recreated")  # the AOF kept the group
    assert pool.stop() == 0


def test_redis_restart_without_persistence_recreates_the_group_at_0_and_goes_on(
    tmp_path: Path,
) -> None:
    with LocalRedis(appendonly=False) as plain:
        bus = TenantEventBus(plain.client(), TENANT)
        ledger = Ledger(tmp_path / "ledger.jsonl", plain.client(), bus.keys.dlq(STREAM))
        pool = FaultPool(plain, tmp_path, processes=2, args=["--reclaim-interval-s", "1"])
        try:
            pool.start()
            before = [make_event(i=i) for i in range(20)]
            bus.publish_many(STREAM, before)
            ledger.published_many(e.event_id for e in before)
            ledger.wait_settled(60)
            # Freeze the pool (real SIGSTOP) so that nothing reads across the restart.
            frozen = [pool.proc.pid, *pool.worker_pids()]
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            wait_for(lambda: all(_state(pid) == "T" for pid in frozen), 30)
            # Their blocked reads end too, so none of the next events is delivered before
            # the crash (a frozen worker's blocked read would still receive them).
            control = plain.client()
            control.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            doomed = [make_event(i=i) for i in range(20, 30)]
            TenantEventBus(control, TENANT).publish_many(STREAM, doomed)  # acknowledged...
            plain.restart(kill=True)
            # Published before any group exists again: a group made at $ would skip them.
            after = [make_event(i=i) for i in range(30, 50)]
            bus.publish_many(STREAM, after)
            ledger.published_many(e.event_id for e in after)
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            ledger.wait_settled(60)
            later = [make_event(i=i) for i in range(50, 60)]
            bus.publish_many(STREAM, later)
            ledger.published_many(e.event_id for e in later)
            ledger.wait_settled(60)
            wait_for(lambda: pending_count(bus) == 0, 30)
            lost_by_design = {e.event_id for e in doomed} - set(ledger.done())
            record_report(
                "Redis restart without persistence",
                ledger.report(lost_by_design=len(lost_by_design)),
            )
            # Inherent without persistence: acknowledged, never delivered, gone.
            assert lost_by_design == {e.event_id for e in doomed}
            assert pool.logged("consumer_group_recreated")  # loud (error level)
            assert all(e["level"] == "error" for e in pool.logged("consumer_group_recreated"))
            assert pool.worker_exits() == []  # recovered without a restart
            groups = bus.get_stream_info(STREAM)["groups"]
            assert [g["name"] for g in groups] == [GROUP]
            assert pool.stop() == 0
        finally:
            pool.kill_all()


def _state(pid: int) -> str:
    """The process state letter (T = stopped)."""
    return state(pid)
