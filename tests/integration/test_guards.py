"""Agent guards on a real Redis: runaway chains are refused by publish (nothing written)
and dead-lettered without calling the handler when a foreign producer wrote them."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import structlog
from structlog.testing import capture_logs

from eventbus import AgentEvent, DeadLetterQueue, TenantEventBus
from eventbus.errors import CycleDetected, HopLimitExceeded
from eventbus.logs import merge_log_context
from eventbus.settings import BusSettings
from tests.integration.helpers import Recorder, consumer, drain, make_event, named


def chain_event(chain: list[str], **overrides: Any) -> AgentEvent:
    return make_event(source_agent_id=chain[-1], call_chain=chain, **overrides)


def test_publish_refuses_a_chain_over_the_hop_limit_naming_it(
    bus: TenantEventBus, r: redis.Redis
) -> None:
    chain = [f"agent-{i}" for i in range(33)]
    with capture_logs() as logs, pytest.raises(HopLimitExceeded) as info:
        bus.publish("tasks", chain_event(chain))
    assert "33 hops, over the limit of 32" in str(info.value)
    assert "agent-0 -> agent-1" in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.reason == "hop_limit"
    assert not r.exists(bus.keys.stream("tasks"))  # refused before Redis is touched
    (line,) = named(logs, "publish_refused")
    assert line["reason"] == "hop_limit" and "agent-32" in line["call_chain"]
    assert bus.refusals["hop_limit"] == 1


def test_publish_refuses_ping_pong_and_rings_but_not_a_hand_back(bus: TenantEventBus) -> None:
    bus.publish("tasks", chain_event(["a", "b", "a"]))
    with pytest.raises(CycleDetected, match="agent 'a' appears 3 times"):
        bus.publish("tasks", chain_event(["a", "b", "a", "b", "a"]))
    with pytest.raises(CycleDetected, match="a -> b -> c -> a -> b -> c -> a"):
        bus.publish("tasks", chain_event(["a", "b", "c", "a", "b", "c", "a"]))
    assert bus.get_stream_info("tasks")["length"] == 1


def test_publish_many_writes_nothing_when_one_chain_is_refused(bus: TenantEventBus) -> None:
    good = [chain_event(["user", f"w{i}"]) for i in range(5)]
    bad = chain_event(["a", "b", "a", "b", "a"])
    with pytest.raises(CycleDetected) as info:
        bus.publish_many("tasks", [*good, bad])
    assert info.value.event_id == bad.event_id and info.value.published == ()
    assert bus.streams() == []


def test_limits_are_per_bus(r: redis.Redis) -> None:
    strict = TenantEventBus(r, "acme", settings=BusSettings(max_hops=3, max_visits=1))
    with pytest.raises(HopLimitExceeded):
        strict.publish("tasks", chain_event(["a", "b", "c", "d"]))
    with pytest.raises(CycleDetected):
        strict.publish("tasks", chain_event(["a", "b", "a"]))
    off = TenantEventBus(r, "acme", settings=BusSettings(max_hops=0, max_visits=0))
    off.publish("tasks", chain_event(["a", "b"] * 40))


def test_foreign_runaway_entries_are_dead_lettered_without_calling_the_handler(
    bus: TenantEventBus, dlq: DeadLetterQueue, r: redis.Redis
) -> None:
    deep = chain_event([f"x{i}" for i in range(40)])
    ring = chain_event(["a", "b", "c", "a", "b", "c", "a"])
    fine = chain_event(["a", "b", "a"])
    c = consumer(bus, dlq)
    c.process_batch(Recorder(), block_ms=1)  # the group exists before the raw writes
    for event in (deep, ring, fine):  # written past publish, as a foreign producer would
        r.xadd(bus.keys.stream("tasks"), event.to_stream_dict())
    handler = Recorder()
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, merge_log_context]
    ) as logs:
        drain(c, handler, lambda: dlq.count("tasks") == 2 and handler.ids())
    assert handler.ids() == [fine.event_id]
    refused = {x["reason"]: x for x in logs if x["event"] == "dead_lettered"}
    assert refused["cycle"]["call_chain"] == "a -> b -> c -> a -> b -> c -> a"
    assert refused["hop_limit"]["call_chain"].startswith("x0 -> x1")
    letters = {x.reason: x for x in dlq.list_dlq_messages("tasks")}
    assert set(letters) == {"hop_limit", "cycle"}
    assert letters["hop_limit"].error_type == "HopLimitExceeded"
    assert "x0 -> x1" in (letters["hop_limit"].error or "")
    assert letters["cycle"].error_type == "CycleDetected"
    assert c.stats["rejected_cycle"] == 1 and c.stats["rejected_hop_limit"] == 1
