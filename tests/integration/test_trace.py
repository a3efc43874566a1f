"""Request traces on a real Redis: publish records each event's place in its request in
the same script as the XADD; consumers and the DLQ add outcomes; the tree is rebuilt."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, TenantEventBus
from eventbus.acl import tenant_users
from eventbus.errors import BusRefused
from eventbus.redis_io import AnyRedis
from eventbus.settings import BusSettings
from eventbus.trace import read_trace, read_trace_plain, walk
from tests.integration.helpers import Recorder, consumer, drain, make_event, on_every_node


def traced(r: redis.Redis, **settings: object) -> TenantEventBus:
    return TenantEventBus(r, "acme", settings=BusSettings(trace=True, **settings))  # type: ignore[arg-type]


def child(parent: AgentEvent, agent: str, **overrides: object) -> AgentEvent:
    return make_event(
        source_agent_id=agent,
        call_chain=[*parent.call_chain, agent],
        correlation_id=parent.correlation_id,
        parent_event_id=parent.event_id,
        **overrides,
    )


def test_the_tree_of_a_small_request_with_its_outcomes(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    bus = traced(r)
    root = make_event(correlation_id="req-1")
    a, b = child(root, "writer"), child(root, "critic")
    leaf = child(a, "reviewer")
    bus.publish("tasks", root)
    bus.publish_many("tasks", [a, b])
    bus.publish("reviews", leaf)
    bus.publish("tasks", make_event(correlation_id="req-2"))  # another request: not in it

    handler = Recorder(
        fail=lambda e, n: e.event_id == b.event_id or (e.event_id == a.event_id and n == 1)
    )
    c = consumer(bus, dlq, retry_delays=[0.01])
    drain(c, handler, lambda: dlq.count("tasks") == 1 and len(set(handler.ids())) == 4)
    c.process_batch(handler, block_ms=1)  # the last round's notes are written

    tree = read_trace(bus, "req-1")
    assert [n.event_id for _, n in walk(tree.roots)] == [
        root.event_id,
        a.event_id,
        leaf.event_id,
        b.event_id,
    ]
    nodes = tree.nodes
    assert nodes[root.event_id].status == "handled"
    assert nodes[b.event_id].status == "in_dlq (handler_failed)"
    assert nodes[b.event_id].retries == 3
    assert nodes[a.event_id].retries == 1 and nodes[a.event_id].status == "handled"
    assert nodes[leaf.event_id].status == "queued"  # nobody consumes "reviews"
    assert nodes[leaf.event_id].stream == "reviews" and nodes[leaf.event_id].agent == "reviewer"
    assert tree.agents == ["critic", "planner", "reviewer", "writer"]
    assert 0 < r.pttl(bus.keys.trace("req-1")) <= 86_400_000


def test_halted_events_show_as_halted_and_a_replay_is_recorded(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    bus = traced(r)
    event = make_event(correlation_id="req-1")
    bus.publish("tasks", event)
    bus.halt("req-1")
    c = consumer(bus, dlq)
    drain(c, Recorder(), lambda: dlq.count("tasks") == 1)
    c.process_batch(Recorder(), block_ms=1)
    assert read_trace(bus, "req-1").nodes[event.event_id].status == "halted"
    bus.resume("req-1")
    (letter,) = dlq.list_dlq_messages("tasks")
    dlq.replay_message("tasks", letter.dlq_id)
    handler = Recorder()
    drain(c, handler, lambda: handler.ids())
    c.process_batch(handler, block_ms=1)
    node = read_trace(bus, "req-1").nodes[event.event_id]
    assert (node.status, node.replays, node.dead_letters) == ("handled", 1, ["halted"])


def test_the_trace_is_off_by_default(r: redis.Redis, bus: TenantEventBus) -> None:
    bus.publish("tasks", make_event(correlation_id="req-1"))
    assert not r.exists(bus.keys.trace("req-1"))
    assert read_trace(bus, "req-1").roots == []


def test_a_trace_of_ten_thousand_events_is_rebuilt_whole(r: redis.Redis) -> None:
    bus = traced(r)
    root = make_event(correlation_id="big")
    events = [root] + [child(root, f"w{i % 50}") for i in range(9_999)]
    for i in range(0, len(events), 100):
        bus.publish_many("tasks", events[i : i + 100])
    started = time.perf_counter()
    tree = read_trace(bus, "big")
    took_ms = (time.perf_counter() - started) * 1000
    assert len(tree.nodes) == 10_000 and len(tree.roots) == 1
    assert len(tree.roots[0].children) == 9_999
    print(f"trace of 10,000 events rebuilt in {took_ms:.1f} ms")  # reported, not asserted


def test_the_viewer_role_reads_a_trace_and_halted_state_without_any_script(
    make_client: Callable[..., AnyRedis], r: AnyRedis
) -> None:
    bus = traced(r)
    root = make_event(correlation_id="req-v")
    bus.publish("tasks", root)
    bus.publish_many("tasks", [child(root, "writer"), child(root, "critic")])
    bus.halt("req-v")
    users = {u.role: u for u in tenant_users("acme", viewer_password="v", worker_password="w")}
    for u in users.values():
        on_every_node(r, "ACL", "SETUSER", *u.setuser_args())
    try:
        viewer = make_client(username=users["viewer"].username, password="v")
        vbus = TenantEventBus(viewer, "acme")
        plain = read_trace_plain(vbus, "req-v")
        assert plain.as_dict() == read_trace(bus, "req-v").as_dict()
        assert len(plain.nodes) == 3
        assert vbus.requests.budget("req-v").halted and vbus.requests.halted() == ["req-v"]
        with pytest.raises(BusRefused, match="NoPermissionError"):
            read_trace(vbus, "req-v")  # the script path: no EVALSHA for a viewer
        with pytest.raises(BusRefused, match="NoPermissionError"):
            vbus.resume("req-v")
        # the worker role (the operator's in the console and CLI) may halt and resume
        worker = TenantEventBus(
            make_client(username=users["worker"].username, password="w"), "acme"
        )
        assert worker.resume("req-v") is True and worker.halt("req-v") is True
        assert worker.set_budget("req-v", events=5).max_events == 5
    finally:
        for u in users.values():
            on_every_node(r, "ACL", "DELUSER", u.username)
