"""Agent guards in real pools: a halt reaches every pool of the tenant (each on its own
stream) within about a second; a pool's guard options reach its consumers; every
refusal is counted in the pool's /metrics."""

from __future__ import annotations

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, TenantEventBus
from eventbus.errors import BudgetExceeded
from tests.conftest import wait_for
from tests.process.pool import GROUP, STREAM, TENANT, event
from tests.process.test_pool_metrics import free_port, scrape

OTHER = "other"


def in_request(cid: str, **data: object) -> AgentEvent:
    return event(**data).model_copy(update={"correlation_id": cid})


def queue_raw(r: redis.Redis, tbus: TenantEventBus, stream: str, e: AgentEvent) -> None:
    """Written past publish (which refuses a halted request), like an entry queued before."""
    r.xadd(tbus.keys.stream(stream), e.to_stream_dict())  # type: ignore[arg-type]


def test_a_halt_stops_a_request_in_every_pool_and_resume_lets_it_go_on(
    make_pool, tbus: TenantEventBus, r: redis.Redis
) -> None:
    first = make_pool(name="first")
    second = make_pool(name="second", args=["--stream", OTHER, "--max-hops", "3"])
    first.start()
    second.start()
    dlq = DeadLetterQueue(r, TENANT)
    tbus.halt("req-1")
    halted = {stream: in_request("req-1", stream=stream) for stream in (STREAM, OTHER)}
    for stream, e in halted.items():
        queue_raw(r, tbus, stream, e)
    going = [in_request("req-2", n=i) for i in range(2)]
    tbus.publish(STREAM, going[0])
    tbus.publish(OTHER, going[1])
    deep = event(deep=True).model_copy(
        update={"call_chain": ["a", "b", "c", "planner"], "source_agent_id": "planner"}
    )
    queue_raw(r, tbus, OTHER, deep)

    wait_for(lambda: dlq.count(STREAM) == 1 and dlq.count(OTHER) == 2, 30)
    wait_for(lambda: {e.event_id for e in going} <= first.done_ids() | second.done_ids(), 30)
    reasons = {
        (x.original_stream, x.event.event_id if x.event else "", x.reason)
        for stream in (STREAM, OTHER)
        for x in dlq.list_dlq_messages(stream)
    }
    assert reasons == {
        (STREAM, halted[STREAM].event_id, "halted"),
        (OTHER, halted[OTHER].event_id, "halted"),
        (OTHER, deep.event_id, "hop_limit"),  # the second pool's --max-hops 3
    }
    done = first.done_ids() | second.done_ids()
    assert not {e.event_id for e in halted.values()} & done

    tbus.resume("req-1")
    for stream in (STREAM, OTHER):
        for letter in dlq.list_dlq_messages(stream):
            if letter.reason == "halted":
                dlq.replay_message(stream, letter.dlq_id)
    ids = {e.event_id for e in halted.values()}
    wait_for(lambda: ids <= first.done_ids() | second.done_ids(), 30)
    assert first.stop() == 0 and second.stop() == 0


def test_every_guard_refusal_is_counted_in_the_pool_metrics_by_reason_and_stage(
    make_pool, tbus: TenantEventBus, r: redis.Redis
) -> None:
    # Stopped before the pool starts: its consumers' first read of the stopped requests
    # sees them (a halt reaches a running pool within about a second: the test above).
    tbus.halt("req-halted")
    tbus.set_budget("req-spent", events=1)
    tbus.publish(STREAM, in_request("req-spent", n=1))
    with pytest.raises(BudgetExceeded):  # the refusal marks the request spent
        tbus.publish(STREAM, in_request("req-spent", n=2))
    port = free_port()
    pool = make_pool(
        args=["--handler", "tests.process.handlers:hand_off", "--metrics-port", str(port),
              "--max-hops", "5", "--max-visits", "2"],
    ).start()  # fmt: skip
    # publish stage: the handler (agent "a") hands back to itself a third time: cycle
    looping = event(hand_to=STREAM, **{"as": "a"}).model_copy(
        update={"call_chain": ["a", "b", "a", "b"], "source_agent_id": "b"}
    )
    tbus.publish(STREAM, looping.model_copy(update={"correlation_id": "req-loop"}))
    # delivery stage: entries written past publish, refused by the consumers
    deep = event().model_copy(update={"call_chain": list("abcdef"), "source_agent_id": "f"})
    queue_raw(r, tbus, STREAM, deep)  # 6 hops > 5
    queue_raw(r, tbus, STREAM, in_request("req-halted"))
    queue_raw(r, tbus, STREAM, in_request("req-spent", n=3))

    def refusals() -> dict[tuple[str, str], float]:
        found = scrape(port)
        return {
            (dict(labels)["reason"], dict(labels)["stage"]): v
            for (name, labels), v in found.items()
            if name == "eventbus_guard_refusals_total"
        }

    want = {
        ("cycle", "publish"): 1.0,
        ("hop_limit", "delivery"): 1.0,
        ("halted", "delivery"): 1.0,
        ("budget_exceeded", "delivery"): 2.0,  # n=1 (queued before the refusal) and n=3
    }
    wait_for(lambda: refusals() == want, 30)
    # the same entries are in the DLQ counter by reason; labels are the pool's own
    m = scrape(port)
    for reason in ("hop_limit", "halted", "budget_exceeded"):
        labels = {"tenant": TENANT, "stream": STREAM, "group": GROUP, "reason": reason}
        dead = m[("eventbus_events_dead_lettered_total", tuple(sorted(labels.items())))]
        assert dead == want[(reason, "delivery")]
    assert pool.stop() == 0
