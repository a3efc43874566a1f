"""Process faults under load: workers SIGKILLed at random, the supervisor SIGKILLed, a
handler that hangs and a poison pill that kills its worker every time. Every test checks
its ledger: every acknowledged publish is handled or dead-lettered."""

from __future__ import annotations

import random
import signal
import time

import pytest

from eventbus import DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import (
    Publisher,
    kill_random_worker,
    make_event,
    time_to_next_done,
    wait_gone,
)
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import STREAM, TENANT, pending_count
from workers.tools.localredis import pid_alive

FAST = ["--reclaim-interval-s", "1", "--max-restarts-per-minute", "200"]


@pytest.mark.slow
def test_workers_sigkilled_at_random_mid_handler_under_load_lose_nothing(
    make_pool, tbus: TenantEventBus, ledger: Ledger, seed: int
) -> None:
    rng = random.Random(seed)
    pool = make_pool(processes=3, args=[*FAST, "--max-deliveries", "50"]).start()
    publisher = Publisher(tbus, ledger, rate_per_s=150, sleep_s=0.01)
    publisher.start()
    killed: list[tuple[int, float]] = []

    def mid_handler() -> int:
        """Kills that landed mid-handler: the victim's last ledger line is a start."""
        last_phase = {r["pid"]: r["phase"] for r in ledger.calls()}
        return sum(1 for pid, _ in killed if last_phase.get(pid) == "start")

    # Kill until there were 8 kills, one of them mid-handler (bounded; a count of kills,
    # not a fixed 8 s: a loaded machine respawns slowly and fits fewer into 8 s).
    deadline = time.monotonic() + 120
    while (len(killed) < 8 or not mid_handler()) and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))  # let time pass: the kills land at random moments
        pid = kill_random_worker(pool, rng)
        if pid is not None:
            killed.append((pid, time.time()))
            wait_gone([pid], 30)  # its ledger lines are final
    publisher.stop()
    report = ledger.wait_settled(120)
    wait_for(lambda: pending_count(tbus) == 0, 60)
    recoveries = [time_to_next_done(ledger, t, 60) for _, t in killed]
    assert_nothing_lost(
        "worker SIGKILL at random",
        ledger.report(
            seed=seed,
            kills=len(killed),
            mid_handler=mid_handler(),
            max_recovery_s=round(max(recoveries), 2),
            out_of_order=ledger.out_of_order(),
        ),
    )
    assert len(killed) >= 8 and mid_handler() >= 1, (seed, killed, mid_handler())
    assert ledger.out_of_order() > 0, f"seed {seed}"  # no ordering across consumers
    assert report.dead_lettered == 0, f"seed {seed}"  # nothing failed: none given up on
    wait_for(lambda: pool.unplanned_respawns() >= len(killed), 60)  # after their backoffs
    assert not pool.logged("restart_limit_reached"), f"seed {seed}"
    assert pool.stop() == 0


@pytest.mark.slow
def test_supervisor_sigkill_workers_exit_by_themselves_and_a_new_supervisor_recovers(
    make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    first = make_pool(processes=2, name="first", args=FAST).start()
    publisher = Publisher(tbus, ledger, rate_per_s=60, sleep_s=0.05)
    publisher.start()
    wait_for(lambda: len(ledger.done()) >= 20, 30)
    workers = first.worker_pids()
    assert len(workers) == 2
    first.signal(signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: not any(pid_alive(p) for p in workers), 30)
    exited_in_s = time.monotonic() - started
    # They drained (finished the event in hand) and stopped cleanly, not hard-killed.
    wait_for(lambda: len(first.logged("worker_stopped")) == 2, 30)
    piled_from = publisher.acked
    wait_for(lambda: publisher.acked >= piled_from + 30)  # events pile up while no pool runs
    second = make_pool(processes=2, name="second", args=FAST).start()
    wait_for(lambda: any(r["pid"] not in workers for r in ledger.calls("done")), 30)
    publisher.stop()
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert_nothing_lost(
        "supervisor SIGKILL",
        ledger.report(workers_exited_in_s=round(exited_in_s, 2)),
    )
    assert second.stop() == 0


def test_hung_handler_and_poison_pill_end_in_the_dlq_while_the_pool_serves_the_rest(
    make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    pool = make_pool(
        processes=2,
        args=[
            *FAST,
            "--handler-timeout-s",
            "1",
            "--retry-delays",
            "0.2,0.2",
            "--max-deliveries",
            "3",
        ],
    ).start()
    publisher = Publisher(tbus, ledger, rate_per_s=40)
    publisher.start()
    hung, pill = make_event(hang=True), make_event(poison=True)
    for bad in (hung, pill):
        tbus.publish(STREAM, bad)
        ledger.published(bad.event_id)
    dlq = DeadLetterQueue(tbus.redis, TENANT)
    wait_for(lambda: dlq.count(STREAM) == 2, 60)
    served_after = time.time()
    wait_for(lambda: any(r["t"] > served_after for r in ledger.calls("done")), 30)
    publisher.stop()
    ledger.wait_settled(60)
    letters = {x.event.event_id: x for x in dlq.list_dlq_messages(STREAM) if x.event}
    assert letters[hung.event_id].error_type == "HandlerTimeout"
    assert letters[hung.event_id].retry_count == 2
    assert letters[pill.event_id].reason == "max_deliveries"
    assert len(ledger.calls_of(hung.event_id, "start")) == 3  # first attempt + 2 retries
    assert len(ledger.calls_of(pill.event_id, "start")) == 3  # max_deliveries, never again
    report = ledger.report(
        timeouts=len(pool.logged("handler_timeout")),
        unplanned_respawns=pool.unplanned_respawns(),
    )
    assert_nothing_lost("hung handler + poison pill", report)
    # Acks are flushed before a redelivery or a retry runs: the crashes and kills repeat
    # only what was done in the last 0.1 s before them, not whole batches at every crash.
    assert len(report.duplicates) <= 10, report
    assert len(pool.logged("handler_timeout")) == 3
    assert pool.unplanned_respawns() <= 3  # one per poison delivery: no crash loop
    assert not pool.logged("restart_limit_reached")
    assert pool.stop() == 0
    assert pending_count(tbus) == 0
