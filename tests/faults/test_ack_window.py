"""SIGKILL after the handler did its work but before the ack: the event comes again (at
least once) and the work is done twice, counted as a duplicate; the optional dedupe guard
(eventbus.dedupe.once) makes the side effect happen once."""

from __future__ import annotations

from pathlib import Path

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import STREAM, pending_count

ARGS = ["--reclaim-interval-s", "1", "--max-restarts-per-minute", "100"]


def _run(make_pool, tbus: TenantEventBus, ledger: Ledger, tmp_path: Path, **data: object):
    crashes = tmp_path / "crashed"
    crashes.mkdir()
    pool = make_pool(processes=1, args=ARGS, env={"FAULTS_EXIT_AFTER_EFFECT": str(crashes)})
    pool.start()
    events = [make_event(i=i, **data) for i in range(3)]
    tbus.publish_many(STREAM, events)
    ledger.published_many(e.event_id for e in events)
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    assert pool.stop() == 0
    assert len(list(crashes.iterdir())) == 3  # each event crashed its worker once
    assert pool.unplanned_respawns() == 3
    return events, ledger.report()


def test_sigkill_between_the_work_and_the_ack_redelivers_the_event_counted_as_duplicate(
    make_pool, tbus: TenantEventBus, ledger: Ledger, tmp_path: Path
) -> None:
    events, report = _run(make_pool, tbus, ledger, tmp_path)
    assert_nothing_lost("kill before ack", report)
    # Expected: at least once means twice here, and the ledger sees it.
    assert report.duplicates == {e.event_id: 2 for e in events}
    for e in events:
        first, second = (r["delivery"] for r in ledger.calls_of(e.event_id, "done"))
        assert second > first  # the second time is a redelivery of the same entry


def test_the_dedupe_guard_makes_the_side_effect_happen_once_despite_the_redelivery(
    make_pool, tbus: TenantEventBus, ledger: Ledger, tmp_path: Path
) -> None:
    events, report = _run(make_pool, tbus, ledger, tmp_path, dedupe=True)
    assert_nothing_lost("kill before ack, dedupe guard", report)
    assert report.duplicates == {}
    for e in events:
        assert len(ledger.calls_of(e.event_id, "start")) == 2  # delivered twice...
        assert len(ledger.calls_of(e.event_id, "done")) == 1  # ...the work done once
        assert len(ledger.calls_of(e.event_id, "skipped")) == 1
