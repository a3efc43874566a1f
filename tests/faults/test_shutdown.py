"""SIGTERM while events wait in the retry schedule: the supervisor exits 0 within the
grace period (no worker killed), the schedule survives, and after a restart the retries
fire on time (never early; once the new pool is up, not much later than due) with their
attempt counts intact."""

from __future__ import annotations

import signal
import time

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import GROUP, STREAM, logged_at, pending_count

DELAYS = (4.0, 2.0)
GRACE_S = 30.0
EARLY_TOLERANCE_S = 0.05  # clock granularity between the handler and the Redis server
# Retry polling (0.5 s) and blocking reads, generously: a loaded machine is slow, and what
# this guards against is a retry left for a much later pass (a reclaim, a restart).
LATE_TOLERANCE_S = 10.0


def test_sigterm_with_scheduled_retries_exits_0_and_a_new_pool_fires_them_on_time(
    make_pool, tbus: TenantEventBus, ledger: Ledger
) -> None:
    args = [
        "--retry-delays",
        ",".join(str(d) for d in DELAYS),
        "--grace-period-s",
        str(GRACE_S),
        "--reclaim-interval-s",
        "1",
    ]
    first = make_pool(processes=2, name="first", args=args).start()
    events = [make_event(i=i, fail_until_attempt=3) for i in range(5)]
    tbus.publish_many(STREAM, events)
    ledger.published_many(e.event_id for e in events)
    schedule = tbus.keys.schedule(STREAM, GROUP)
    wait_for(lambda: tbus.redis.zcard(schedule) == len(events), 30)

    began = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.proc.wait(GRACE_S + 30) == 0
    stopped_in_s = time.monotonic() - began
    # Within the grace period: nothing was in hand, so no worker had to be killed.
    assert first.logged("supervisor_stopped") and not first.logged("worker_killed_after_grace")
    assert tbus.redis.zcard(schedule) == len(events)  # nothing in hand, nothing lost
    assert pending_count(tbus) == 0

    second = make_pool(processes=2, name="second", args=args).start()
    (ready,) = second.logged("supervisor_ready")  # every worker of the new pool is up
    ready_at = logged_at(ready)  # the same wall clock as the handler's ledger
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    lateness = []
    for e in events:
        fails = {r["attempt"]: r["t"] for r in ledger.calls_of(e.event_id, "fail")}
        starts = {r["attempt"]: r["t"] for r in ledger.calls_of(e.event_id, "start")}
        assert sorted(starts) == [1, 2, 3]  # attempt counts kept across the restart
        for attempt, delay in enumerate(DELAYS, start=1):
            gap = starts[attempt + 1] - fails[attempt]
            assert gap >= delay - EARLY_TOLERANCE_S, f"retry {attempt} early: {gap:.3f}s"
            # Late counts from when the retry was due, or from when the new pool was up
            # if that was later (the restart itself takes a while on a loaded machine).
            due_at = max(fails[attempt] + delay, ready_at)
            late = starts[attempt + 1] - due_at
            assert late <= LATE_TOLERANCE_S, f"retry {attempt} late: {late:.3f}s"
            lateness.append(late)
    assert_nothing_lost(
        "SIGTERM with retries scheduled",
        ledger.report(
            stopped_in_s=round(stopped_in_s, 2),
            max_late_s=round(max(lateness), 3),
            min_late_s=round(min(lateness), 3),
        ),
    )
    assert ledger.report().duplicates == {}
