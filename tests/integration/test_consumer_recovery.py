"""EventConsumer recovery on a real Redis: malformed entries, crashes, reclaim, poison pills."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import redis

from eventbus import (
    AgentEvent,
    BusSettings,
    DeadLetterQueue,
    HandlerContext,
    TenantEventBus,
    wants_context,
)
from tests.conftest import wait_for
from tests.integration.helpers import FAST, Recorder, always_fail, consumer, drain, make_event

STREAM_KEY = "t:{acme}:events:tasks"
DLQ_KEY = "t:{acme}:events:tasks:dlq"
SCHEDULE_KEY = "t:{acme}:sched:tasks:workers"


def raw_fields(**overrides: str | bytes | None) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {
        k.encode(): v.encode() for k, v in make_event().to_stream_dict().items()
    }
    for name, value in overrides.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value.encode() if isinstance(value, str) else value
    return fields


class ContextRecorder:
    """A context-taking handler that records (event_id, delivery_count, retry_count)."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[str, int, int]] = []
        self.fail = fail
        wants_context(self)  # marks the instance: the consumer looks the mark up on it

    def __call__(self, event: AgentEvent, ctx: HandlerContext) -> None:
        self.seen.append((event.event_id, ctx.delivery_count, ctx.retry_count))
        if self.fail:
            raise RuntimeError("still failing")


def crashing(event: AgentEvent) -> None:
    raise SystemExit("the worker dies mid-handler")


# -- malformed entries ----------------------------------------------------------------


def test_malformed_entries_are_dead_lettered_once_without_calling_the_handler(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    bus = TenantEventBus(r, "acme", settings=BusSettings(max_event_bytes=2000))
    bad = {
        "bad json": raw_fields(call_chain='["user",'),
        "missing field": raw_fields(event_type=None),
        "missing defaultable field": raw_fields(priority=None),
        "version 2": raw_fields(version="2.0"),
        "not utf-8": raw_fields(data=b'{"x":"\xff\xfe"}'),
        "other tenant": raw_fields(tenant_id="globex"),
        "too large": raw_fields(data='{"blob":"' + "x" * 3000 + '"}'),
    }
    ids = {name: r.xadd(STREAM_KEY, fields).decode() for name, fields in bad.items()}
    good = make_event()
    bus.publish("tasks", good)
    handler = Recorder()
    c = consumer(bus, dlq)

    drain(c, handler, lambda: handler.ids() == [good.event_id])

    letters = {letter.original_message_id: letter for letter in dlq.list_dlq_messages("tasks")}
    assert set(letters) == set(ids.values())  # each exactly once
    reasons = {name: letters[i].reason for name, i in ids.items()}
    assert reasons == {name: "decode_error" for name in bad} | {
        "too large": "too_large",
        "other tenant": "wrong_tenant",
    }
    assert "call_chain" in (letters[ids["bad json"]].error or "")
    assert "'priority'" in (letters[ids["missing defaultable field"]].error or "")
    assert letters[ids["version 2"]].error_type == "UnsupportedVersion"
    assert letters[ids["other tenant"]].error_type == "TenantMismatch"
    assert "'globex'" in (letters[ids["other tenant"]].error or "")
    assert bus.get_pending("tasks", "workers") == []
    # The undecodable bytes survive into the DLQ byte for byte.
    [raw] = [f for _, f in r.xrange(DLQ_KEY) if f[b"_dlq_message_id"] == ids["not utf-8"].encode()]
    assert raw[b"data"] == b'{"x":"\xff\xfe"}'


# -- crashes and restarts -------------------------------------------------------------


def test_entries_read_but_never_acknowledged_are_handled_first_by_the_restarted_consumer(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    early = [make_event(data={"n": i}) for i in range(3)]
    bus.publish_many("tasks", early)
    assert len(bus.subscribe("tasks", "workers", "c1", block=10)) == 3  # then "crashes"
    late = make_event(data={"n": "late"})
    bus.publish("tasks", late)
    handler = ContextRecorder()

    drain(consumer(bus, dlq, name="c1"), handler, lambda: len(handler.seen) == 4)

    assert handler.seen == [(e.event_id, 2, 0) for e in early] + [(late.event_id, 1, 0)]
    assert bus.get_pending("tasks", "workers") == []


def test_handler_raising_system_exit_leaves_the_entries_pending_for_the_next_consumer(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    events = [make_event(data={"n": i}) for i in range(3)]
    ids = bus.publish_many("tasks", events)

    with pytest.raises(SystemExit):
        consumer(bus, dlq, name="c1").process_batch(crashing, block_ms=10)

    assert [p.message_id for p in bus.get_pending("tasks", "workers")] == ids
    handler = ContextRecorder()
    drain(consumer(bus, dlq, name="c1"), handler, lambda: len(handler.seen) == 3)
    assert [(i, d) for i, d, _ in handler.seen] == [(e.event_id, 2) for e in events]
    assert bus.get_pending("tasks", "workers") == []
    assert dlq.count("tasks") == 0


def test_a_scheduled_retry_survives_the_consumer_and_keeps_its_count(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    bus.publish("tasks", event)
    first = consumer(bus, dlq, name="c1", max_retries=2, retry_delays=[0.3, 0.05])
    first.process_batch(Recorder(fail=always_fail), block_ms=10)
    assert r.zcard(SCHEDULE_KEY) == 1
    del first  # dropped mid-backoff, without stop(): nothing in memory survives

    handler = ContextRecorder(fail=True)
    restarted = consumer(bus, dlq, name="c1", max_retries=2, retry_delays=[0.3, 0.05])
    drain(restarted, handler, lambda: dlq.count("tasks") == 1)

    assert [(i, n) for i, _, n in handler.seen] == [(event.event_id, 1), (event.event_id, 2)]
    assert dlq.list_dlq_messages("tasks")[0].retry_count == 2


# -- reclaiming -----------------------------------------------------------------------


def test_reclaim_abandoned_takes_idle_entries_of_another_consumer_and_handles_them(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    ids = bus.publish_many("tasks", [make_event(), make_event()])
    bus.subscribe("tasks", "workers", "dead", block=10)
    wait_for(lambda: all(p.idle_ms >= 150 for p in bus.get_pending("tasks", "workers")))
    fresh_id = bus.publish("tasks", make_event())
    bus.subscribe("tasks", "workers", "alive", block=10)  # not idle long enough
    c = consumer(bus, dlq, name="rescuer")

    reclaimed = c.reclaim_abandoned(idle_time_ms=150)

    assert [(x.message_id, x.deliveries) for x in reclaimed] == [(i, 1) for i in ids]
    handler = ContextRecorder()
    drain(c, handler, lambda: len(handler.seen) == 2)
    assert [d for _, d, _ in handler.seen] == [2, 2]
    pending = bus.get_pending("tasks", "workers")
    assert [(p.message_id, p.consumer) for p in pending] == [(fresh_id, "alive")]


def test_a_running_handler_is_kept_claimed_by_the_heartbeat(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    bus.publish("tasks", make_event())
    settings = replace(FAST, heartbeat_interval_s=0.05)
    started, release = threading.Event(), threading.Event()

    def slow(event: AgentEvent) -> None:
        started.set()
        release.wait(60)

    worker = consumer(bus, dlq, name="busy", settings=settings)
    thread = threading.Thread(target=worker.process_batch, args=(slow,), daemon=True)
    thread.start()
    assert started.wait(30)
    rescuer = consumer(bus, dlq, name="rescuer")
    since = time.monotonic()
    # Beats every 0.05 s against an idle limit of 1 s (20 beats of slack on a loaded
    # machine), watched for 2.5 times that limit: a lapse would show.
    idle_limit_ms = 1000

    def never_reclaimable_for_a_while() -> bool:
        assert rescuer.reclaim_abandoned(idle_time_ms=idle_limit_ms) == []
        return time.monotonic() - since > 2.5 * idle_limit_ms / 1000

    try:
        wait_for(never_reclaimable_for_a_while, timeout_s=60)
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    assert bus.get_pending("tasks", "workers") == []


# -- poison pills ---------------------------------------------------------------------


def test_entry_that_keeps_killing_its_worker_is_dead_lettered_after_max_deliveries(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    message_id = bus.publish("tasks", make_event())
    settings = replace(FAST, max_deliveries=2)  # each round below passes its own block_ms
    calls = Recorder()

    def handler(event: AgentEvent) -> None:
        calls(event)
        crashing(event)

    for _ in range(2):
        with pytest.raises(SystemExit):
            consumer(bus, dlq, name="c1", settings=settings).process_batch(handler, block_ms=10)
    consumer(bus, dlq, name="c1", settings=settings).process_batch(handler, block_ms=10)

    assert len(calls.calls) == 2
    [letter] = dlq.list_dlq_messages("tasks")
    assert (letter.reason, letter.original_message_id) == ("max_deliveries", message_id)
    assert letter.error_type == "MaxDeliveriesExceeded"
    assert bus.get_pending("tasks", "workers") == []


def test_reclaimed_entry_over_max_deliveries_is_dead_lettered_without_the_handler(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    message_id = bus.publish("tasks", make_event())
    bus.subscribe("tasks", "workers", "dead", block=10)
    for _ in range(FAST.max_deliveries):  # each XCLAIM counts as one more delivery
        r.xclaim(STREAM_KEY, "workers", "dead", 0, [message_id])
    assert bus.get_pending("tasks", "workers")[0].deliveries == FAST.max_deliveries + 1
    c = consumer(bus, dlq, name="rescuer")
    handler = Recorder()

    assert c.reclaim_abandoned(idle_time_ms=0) == []
    c.process_batch(handler, block_ms=10)

    assert handler.calls == []
    [letter] = dlq.list_dlq_messages("tasks")
    assert (letter.reason, letter.consumer) == ("max_deliveries", "rescuer")
    assert bus.get_pending("tasks", "workers") == []
