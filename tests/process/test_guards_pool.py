"""Agent guards in real pools: a halt reaches every pool of the tenant (each on its own
stream) within about a second; a pool's guard options reach its consumers."""

from __future__ import annotations

import redis

from eventbus import AgentEvent, DeadLetterQueue, TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import STREAM, TENANT, event

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
