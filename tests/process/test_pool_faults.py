"""The pool under faults: workers killed at random, a dead supervisor, hung handlers,
handlers that outlive the reclaim idle time."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from eventbus import DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import STREAM, TENANT, event, pending_count
from workers.tools.localredis import pid_alive


@pytest.mark.slow
def test_random_worker_kills_mid_handler_lose_nothing(
    make_pool, tbus: TenantEventBus, seed: int
) -> None:
    rng = random.Random(seed)
    events = [event(i=i, sleep_s=0.01) for i in range(300)]
    tbus.publish_many(STREAM, events)
    pool = make_pool(processes=3, args=["--max-deliveries", "50"]).start()
    kills = 0
    while kills < 6:
        time.sleep(rng.uniform(0.05, 0.4))
        pids = pool.worker_pids()
        if pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
            kills += 1
    wanted = {e.event_id for e in events}
    wait_for(lambda: wanted <= pool.done_ids(), 120)
    wait_for(lambda: pending_count(tbus) == 0, 60)
    assert DeadLetterQueue(tbus.redis, TENANT).count(STREAM) == 0, f"seed {seed}"
    wait_for(lambda: len(pool.logged("worker_respawned")) >= kills, 60)  # after backoffs
    assert pool.stop() == 0


@pytest.mark.slow
def test_supervisor_sigkill_makes_workers_exit_and_a_new_supervisor_recovers(
    make_pool, tbus: TenantEventBus
) -> None:
    first = make_pool(processes=2, name="first").start()
    slow = [event(sleep_s=0.5) for _ in range(4)]
    tbus.publish_many(STREAM, slow)
    wait_for(lambda: len(first.starts()) >= 2, 30)
    workers = first.worker_pids()
    assert len(workers) == 2
    first.signal(signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in workers), 30)
    assert len(first.logged("worker_stopped")) == 2  # they stopped by themselves, cleanly
    second = make_pool(
        processes=2, name="second", args=["--reclaim-idle-ms", "500", "--reclaim-interval-s", "0.5"]
    ).start()
    wait_for(lambda: {e.event_id for e in slow} <= second.done_ids(), 30)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert second.stop() == 0


@pytest.mark.slow
def test_handler_running_three_times_the_reclaim_idle_time_is_handled_once(
    make_pool, tbus: TenantEventBus
) -> None:
    # The heartbeat refreshes the claim every idle/3 = 0.5 s: a second of slack.
    pool = make_pool(
        processes=2, args=["--reclaim-idle-ms", "1500", "--reclaim-interval-s", "0.2"]
    ).start()
    long = event(sleep_s=4.5)
    tbus.publish(STREAM, long)
    wait_for(lambda: long.event_id in pool.done_ids())
    # A lapsed claim would have shown as a reclaim (logged by the supervisor's reclaimer or
    # a worker's own) and a second start; stopping drains any such second handling.
    assert pool.stop() == 0
    assert not pool.logged("reclaimed")
    assert pool.starts()[long.event_id] == 1
    assert pending_count(tbus) == 0


@pytest.mark.slow
def test_hung_handler_is_killed_retried_then_dead_lettered_and_the_slot_refilled(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = make_pool(
        processes=1,
        args=["--handler-timeout-s", "0.5", "--retry-delays", "0.1,0.1", "--max-deliveries", "10"],
    ).start()
    hung = event(hang=True)
    tbus.publish(STREAM, hung)
    dlq = DeadLetterQueue(tbus.redis, TENANT)
    wait_for(lambda: dlq.count(STREAM) == 1, 30)
    (letter,) = dlq.list_dlq_messages(STREAM)
    assert letter.reason == "handler_failed"
    assert letter.error_type == "HandlerTimeout"
    assert letter.retry_count == 2
    assert pool.starts()[hung.event_id] == 3  # first attempt + 2 retries
    assert len(pool.logged("handler_timeout")) == 3
    after = event(i=1)
    tbus.publish(STREAM, after)
    wait_for(lambda: after.event_id in pool.done_ids(), 30)
    assert pool.stop() == 0
    assert pending_count(tbus) == 0
