"""Budgets and halts of requests (correlation ids) on a real Redis: charged atomically in
publish.lua, refused once spent or halted, queued events dead-lettered, resume + replay."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, TenantEventBus
from eventbus.errors import BudgetExceeded, InvalidName, RequestHalted
from eventbus.handler import HandlerContext, wants_context
from eventbus.settings import BusSettings
from tests.conftest import wait_for
from tests.integration.helpers import Recorder, consumer, drain, make_event, running


def in_request(cid: str | None, **overrides: Any) -> AgentEvent:
    return make_event(correlation_id=cid, **overrides)


def test_a_request_budget_of_events_refuses_the_next_publish(bus: TenantEventBus) -> None:
    bus.set_budget("req-1", events=3)
    for _ in range(3):
        bus.publish("tasks", in_request("req-1"))
    with pytest.raises(BudgetExceeded, match=r"request 'req-1' has spent its budget \(3 of 3"):
        bus.publish("tasks", in_request("req-1"))
    bus.publish("tasks", in_request("req-2"))  # other requests are not affected
    bus.publish("tasks", in_request(None))  # nor events without a correlation id
    budget = bus.requests.budget("req-1")
    assert (budget.events, budget.max_events, budget.spent) == (3, 3, True)
    assert bus.get_stream_info("tasks")["length"] == 5
    assert bus.refusals["budget_exceeded"] == 1


def test_duplicates_are_not_charged(bus: TenantEventBus) -> None:
    bus.set_budget("req-1", events=2)
    event = in_request("req-1")
    for _ in range(5):
        bus.publish("tasks", event)
    bus.publish("tasks", in_request("req-1"))
    assert bus.requests.budget("req-1").events == 2


def test_a_batch_over_the_budget_writes_nothing(bus: TenantEventBus) -> None:
    bus.set_budget("req-1", events=3)
    batch = [in_request("req-1") for _ in range(4)]
    with pytest.raises(BudgetExceeded) as info:
        bus.publish_many("tasks", batch)
    assert info.value.event_id == batch[3].event_id and info.value.published == ()
    assert bus.streams() == [] and bus.requests.budget("req-1").events == 0


def test_a_refused_chunk_stops_a_long_batch_and_names_what_was_written(
    bus: TenantEventBus,
) -> None:
    bus.set_budget("req-1", events=150)
    batch = [in_request("req-1") for _ in range(250)]  # chunks of 100: the 2nd is refused
    with pytest.raises(BudgetExceeded) as info:
        bus.publish_many("tasks", batch)
    assert len(info.value.published) == 100
    assert bus.get_stream_info("tasks")["length"] == 100


def test_tenant_budget_from_the_bus_settings(r: redis.Redis) -> None:
    bus = TenantEventBus(r, "acme", settings=BusSettings(budget_events=2))
    bus.publish_many("tasks", [in_request("req-1"), in_request("req-1")])
    with pytest.raises(BudgetExceeded):
        bus.publish("tasks", in_request("req-1"))
    bus.set_budget("req-1", events=10)  # a request's own budget wins and lifts the mark
    bus.publish("tasks", in_request("req-1"))
    assert bus.requests.budget("req-1").spent is False


def test_the_budget_expires_after_the_requests_last_event(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.set_budget("req-1", events=5)
    bus.publish("tasks", in_request("req-1"))
    ttl_ms = r.pttl(bus.keys.budget("req-1"))
    assert 0 < ttl_ms <= 86_400_000


def test_concurrent_publishers_never_overspend(r: redis.Redis, bus: TenantEventBus) -> None:
    bus.set_budget("req-1", events=100)
    accepted: list[str] = []
    refused: list[BaseException] = []
    lock = threading.Lock()

    def publisher() -> None:
        mine = TenantEventBus(r, "acme")
        for _ in range(50):
            try:
                message_id = mine.publish("tasks", in_request("req-1"))
            except BudgetExceeded as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    accepted.append(message_id)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 100 and len(refused) == 100
    assert bus.requests.budget("req-1").events == 100
    assert bus.get_stream_info("tasks")["length"] == 100


def test_charged_units_spend_the_budget_and_queued_events_are_dead_lettered(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    bus.set_budget("req-1", units=100)
    first = in_request("req-1")
    queued = [in_request("req-1") for _ in range(3)]
    other = in_request("req-2")
    c = consumer(bus, dlq)

    @wants_context
    def expensive(event: AgentEvent, ctx: HandlerContext) -> None:
        seen.append(event.event_id)
        if event.event_id == first.event_id:
            assert ctx.charge(150) is True  # an LLM call that cost 150 units

    seen: list[str] = []
    bus.publish_many("tasks", [first, *queued, other])
    drain(c, expensive, lambda: dlq.count("tasks") == 3 and other.event_id in seen)
    assert seen == [first.event_id, other.event_id]
    letters = dlq.list_dlq_messages("tasks")
    assert {x.reason for x in letters} == {"budget_exceeded"}
    assert "request 'req-1' has spent its budget" in (letters[0].error or "")
    with pytest.raises(BudgetExceeded, match=r"150 of 100 units used"):
        bus.publish("tasks", in_request("req-1"))


def test_charge_without_a_correlation_id_is_a_no_op_and_bad_units_are_refused(
    bus: TenantEventBus,
) -> None:
    ctx = HandlerContext("1-0", "tasks", "g", "c", 1, 0, None, bus)
    assert ctx.charge(10) is False
    with pytest.raises(ValueError, match="units > 0, got -1"):
        bus.requests.charge("req-1", -1)
    with pytest.raises(InvalidName, match="invalid correlation id 'a b'"):
        bus.halt("a b")


def test_a_halted_request_is_refused_and_its_queued_events_dead_lettered_within_a_second(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    handler = Recorder()
    c = consumer(bus, dlq)
    with running(c, handler):
        bus.publish("tasks", in_request("req-1"))
        wait_for(lambda: len(handler.ids()) == 1)
        assert bus.halt("req-1") is True
        # a second bus, as another pool would have: its publishes are refused at once
        with pytest.raises(RequestHalted, match="request 'req-1' is halted"):
            bus.publish("tasks", in_request("req-1"))
        # entries written past publish (or queued before the halt) are dead-lettered
        queued = in_request("req-1")
        bus.redis.xadd(bus.keys.stream("tasks"), queued.to_stream_dict())  # type: ignore[arg-type]
        wait_for(lambda: dlq.count("tasks") == 1, timeout_s=10)
        bus.publish("tasks", in_request("req-2"))
        wait_for(lambda: len(handler.ids()) == 2)
    (letter,) = dlq.list_dlq_messages("tasks")
    assert letter.reason == "halted" and letter.error_type == "RequestHalted"
    assert queued.event_id not in handler.ids()

    assert bus.resume("req-1") is True and bus.requests.halted() == []
    bus.publish("tasks", in_request("req-1"))
    dlq.replay_message("tasks", letter.dlq_id)
    c2 = consumer(bus, dlq, name="c2")
    drain(c2, handler, lambda: queued.event_id in handler.ids())
