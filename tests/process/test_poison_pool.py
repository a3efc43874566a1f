"""A real pool and a handler that kills its worker (``os._exit``) on one event: the pill
is blamed alone. Its 50 batch-mates are handled, only the pill ends in the DLQ
(``max_deliveries``), wherever it sits in the batch, with 1, 2 or 4 processes, and when
the pool's reclaimer (not the worker that read them) picks the entries up."""

from __future__ import annotations

import pytest
import redis

from eventbus import DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import GROUP, STREAM, TENANT, event, pending_count

MAX_DELIVERIES = 2  # two crashes, then the DLQ: keeps the respawn backoff short


def _publish_batch(tbus: TenantEventBus, position: int) -> tuple[list[str], str]:
    good = [event(i=i) for i in range(50)]
    pill = event(poison=True)
    tbus.publish_many(STREAM, [*good[:position], pill, *good[position:]])
    return [e.event_id for e in good], pill.event_id


def _assert_pill_alone(tbus: TenantEventBus, pill: str, good: list[str], pool) -> None:  # type: ignore[no-untyped-def]
    dlq = DeadLetterQueue(tbus.redis, TENANT)
    wait_for(lambda: dlq.count(STREAM) >= 1 and set(good) <= pool.done_ids(), 60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    letters = dlq.list_dlq_messages(STREAM)
    assert [(x.event.event_id if x.event else None, x.reason) for x in letters] == [
        (pill, "max_deliveries")
    ]
    starts = pool.starts()
    assert all(starts[e] >= 1 for e in good)
    # Only events handled before the crash (acks still batched) may run twice.
    assert sum(starts[e] - 1 for e in good) <= 50
    assert pool.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2, 4])
@pytest.mark.parametrize("position", [0, 25, 50], ids=["first", "middle", "last"])
def test_a_poison_pill_does_not_take_its_batch_mates_to_the_dlq(
    make_pool, tbus: TenantEventBus, processes: int, position: int
) -> None:
    good, pill = _publish_batch(tbus, position)  # before any worker reads: one batch

    pool = make_pool(
        processes=processes,
        args=["--max-deliveries", str(MAX_DELIVERIES), "--batch-size", "100"],
    ).start()

    _assert_pill_alone(tbus, pill, good, pool)
    starts = pool.starts()
    assert starts[pill] == MAX_DELIVERIES  # the crashes were all blamed on the pill
    if position == 0:  # nothing was handled before the first crash: each exactly once
        assert all(starts[e] == 1 for e in good)


@pytest.mark.slow
def test_the_reclaimer_hands_a_dead_consumers_batch_over_and_still_blames_the_pill(
    make_pool, tbus: TenantEventBus, r: redis.Redis
) -> None:
    good, pill = _publish_batch(tbus, 0)
    tbus.ensure_group(STREAM, GROUP)
    # A consumer of another pool read the whole batch and died with it.
    r.xreadgroup(GROUP, "gone-0", {tbus.keys.stream(STREAM): ">"}, count=100)

    pool = make_pool(
        processes=2,
        args=[
            "--max-deliveries",
            str(MAX_DELIVERIES + 1),  # the dead consumer's read was delivery 1
            "--reclaim-idle-ms",
            "200",
            "--reclaim-interval-s",
            "0.2",
        ],
    ).start()

    _assert_pill_alone(tbus, pill, good, pool)
    assert pool.logged("reclaimed")
    starts = pool.starts()
    assert all(starts[e] == 1 for e in good)
