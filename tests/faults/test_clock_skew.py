"""Clock skew: a pool whose clock is an hour off (libfaketime on the supervisor and its
workers) fires retries neither early nor late, because the Redis server's clock decides
when a retry is due.

Needs the ``faketime`` binary (Debian package ``faketime``; scripts/test installs it).
"""

from __future__ import annotations

import glob
import shutil
import time

import pytest

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import STREAM, pending_count

DELAYS = (1.0, 2.0)
EARLY_TOLERANCE_S = 0.05
# A retry timed by the pool's own clock would be an hour early (fires at once) or an hour
# late: a generous bound tells that apart on any machine, however loaded.
LATE_TOLERANCE_S = 30.0


def libfaketime() -> str:
    """The preload library of the faketime package (used directly, not through the
    ``faketime`` wrapper, which would stand between the test and the supervisor)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    # A missing tool fails, not skips: scripts/test (and so CI) installs it.
    assert shutil.which("faketime") and found, (
        "faketime missing: apt-get install faketime (scripts/test does)"
    )
    return found[0]


@pytest.mark.parametrize(("offset", "skew_s"), [("+1h", 3600.0), ("-1h", -3600.0)])
def test_a_pool_an_hour_off_fires_retries_neither_early_nor_late(
    make_pool, tbus: TenantEventBus, ledger: Ledger, offset: str, skew_s: float
) -> None:
    pool = make_pool(
        processes=1,
        # Only the wall clock is off (as with a bad NTP setting); monotonic time is real.
        env={
            "LD_PRELOAD": libfaketime(),
            "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        },
        args=["--retry-delays", ",".join(str(d) for d in DELAYS), "--reclaim-interval-s", "1"],
    ).start()
    events = [make_event(i=i, fail_until_attempt=3) for i in range(3)]
    tbus.publish_many(STREAM, events)
    ledger.published_many(e.event_id for e in events)
    ledger.wait_settled(120)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    # The handler's timestamps come from the skewed clock: the skew is really there
    # (against the test's own clock, read after the first call: within the test's age).
    first = ledger.calls("start")[0]["t"]
    assert abs(first - time.time() - skew_s) < 600, "faketime did not skew the workers' clock"
    lateness = []
    for e in events:
        fails = {r["attempt"]: r["t"] for r in ledger.calls_of(e.event_id, "fail")}
        starts = {r["attempt"]: r["t"] for r in ledger.calls_of(e.event_id, "start")}
        assert sorted(starts) == [1, 2, 3]
        for attempt, delay in enumerate(DELAYS, start=1):
            gap = starts[attempt + 1] - fails[attempt]  # both on the worker's (skewed) clock
            assert gap >= delay - EARLY_TOLERANCE_S, f"retry {attempt} early: {gap:.3f}s"
            assert gap <= delay + LATE_TOLERANCE_S, f"retry {attempt} late: {gap:.3f}s"
            lateness.append(gap - delay)
    assert_nothing_lost(
        f"clock skew {offset}",
        ledger.report(max_late_s=round(max(lateness), 3), min_late_s=round(min(lateness), 3)),
    )
    assert pool.stop() == 0
