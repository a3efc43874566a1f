"""A poison pill (a handler that kills its worker) is blamed alone: its batch-mates are
handled, only the pill reaches ``max_deliveries``. A worker's death is modelled in process
by a handler that raises SystemExit (a BaseException leaves the entry pending, like a
dead process) and a fresh consumer of the same name (a respawned worker)."""

from __future__ import annotations

from collections import Counter

import pytest

from eventbus import AgentEvent, ConsumerSettings, DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.integration.helpers import consumer, make_event

SETTINGS = ConsumerSettings(block_ms=50, max_deliveries=3, reclaim_interval_s=60.0)


class Crashing:
    """Handles events; "kills the worker" (SystemExit) on the pill, every time."""

    def __init__(self, pill: str) -> None:
        self.pill = pill
        self.calls: Counter[str] = Counter()

    def __call__(self, event: AgentEvent) -> None:
        self.calls[event.event_id] += 1
        if event.event_id == self.pill:
            raise SystemExit("the pill kills the worker")


def _run_until_idle(bus: TenantEventBus, dlq: DeadLetterQueue, handler: Crashing) -> int:
    """Restart the "worker" after each crash until a round handles nothing; the crashes."""
    crashes = 0
    for _ in range(50):
        c = consumer(bus, dlq, name="w-0", settings=SETTINGS)
        try:
            while c.process_batch(handler, block_ms=20):
                pass
            return crashes
        except SystemExit:
            crashes += 1
    raise AssertionError("never settled")


@pytest.mark.parametrize("position", [0, 25, 50], ids=["first", "middle", "last"])
def test_only_the_pill_is_dead_lettered_and_every_batch_mate_is_handled(
    bus: TenantEventBus, dlq: DeadLetterQueue, position: int
) -> None:
    good = [make_event(data={"n": i}) for i in range(50)]
    pill = make_event(data={"pill": True})
    bus.publish_many("tasks", [*good[:position], pill, *good[position:]])
    handler = Crashing(pill.event_id)

    crashes = _run_until_idle(bus, dlq, handler)

    [letter] = dlq.list_dlq_messages("tasks")
    assert letter.reason == "max_deliveries" and letter.event is not None
    assert letter.event.event_id == pill.event_id
    assert crashes == SETTINGS.max_deliveries  # deliveries 1..max crashed; then the DLQ
    assert all(handler.calls[e.event_id] >= 1 for e in good)
    # Those after the pill were never handled before a crash: exactly once. Those before
    # it were handled once and their acks (batched) died with the worker: at most twice.
    assert all(handler.calls[e.event_id] == 1 for e in good[position:])
    assert all(handler.calls[e.event_id] <= 2 for e in good[:position])
    assert bus.get_pending("tasks", "workers") == []


def test_a_pill_reclaimed_from_a_dead_consumer_is_blamed_alone(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    pill = make_event(data={"pill": True})
    good = [make_event(data={"n": i}) for i in range(20)]
    bus.publish_many("tasks", [pill, *good])
    bus.subscribe("tasks", "workers", "ghost", count=100, block=10)  # read, then died
    handler = Crashing(pill.event_id)
    taker = consumer(bus, dlq, name="w-0", settings=SETTINGS)

    claimed = taker.reclaim_abandoned(idle_time_ms=0)
    crashes = _run_until_idle(bus, dlq, handler)

    assert len(claimed) == 21 and {c.deliveries for c in claimed} == {1}
    [letter] = dlq.list_dlq_messages("tasks")
    assert letter.event is not None and letter.event.event_id == pill.event_id
    assert crashes == SETTINGS.max_deliveries - 1  # the ghost's read was delivery 1
    assert all(handler.calls[e.event_id] == 1 for e in good)
    assert bus.get_pending("tasks", "workers") == []


def test_a_reclaimed_poison_pill_keeps_its_retry_count_in_the_dead_letter(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    pill = make_event(data={"pill": True})
    bus.publish("tasks", pill)
    patient = ConsumerSettings(block_ms=50, max_deliveries=100, reclaim_interval_s=60.0)

    def fail(event: AgentEvent) -> None:
        raise RuntimeError("first attempt fails")

    first = consumer(bus, dlq, name="w-0", settings=patient)
    first.process_batch(fail, block_ms=20)  # retry 1 scheduled, due after 50 ms
    wait_for(lambda: first.group_stream.promote_due(10)[0] == 1)
    handler = Crashing(pill.event_id)
    for _ in range(4):  # the retried entry now kills its worker, 4 deliveries
        with pytest.raises(SystemExit):
            consumer(bus, dlq, name="w-0", settings=patient).process_batch(handler, block_ms=200)

    reclaimer = consumer(bus, dlq, name="w-1", settings=SETTINGS)  # max_deliveries 3
    assert reclaimer.reclaim_abandoned(idle_time_ms=0) == []  # dead-lettered, not claimed

    [letter] = dlq.list_dlq_messages("tasks")
    assert letter.reason == "max_deliveries"
    assert letter.retry_count == 1  # the entry's own count, not 0
    assert handler.calls[pill.event_id] == 4
