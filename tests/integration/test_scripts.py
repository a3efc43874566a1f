"""The Lua transitions: each move is all-or-nothing, also when Redis refuses writes (OOM)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

from eventbus import (
    AgentEvent,
    BusRefused,
    ConsumerSettings,
    DeadLetterQueue,
    EventBusError,
    HandlerContext,
    TenantEventBus,
    wants_context,
)
from eventbus.records import dead_letter_metadata
from eventbus.scripts import Moved, MoveStatus
from tests.conftest import wait_for
from tests.integration.helpers import Recorder, consumer, make_event, named, running
from workers.tools.localredis import LocalRedis

STREAM_KEY = "t:{acme}:events:tasks"
DLQ_KEY = "t:{acme}:events:tasks:dlq"
SCHEDULE_KEY = "t:{acme}:sched:tasks:workers"
RETRY_KEY = "t:{acme}:events:tasks:retry:workers"


# -- refused writes (OOM) -------------------------------------------------------------


@pytest.fixture
def oom_server() -> Iterator[LocalRedis]:
    """A private server whose memory limit the test lowers: the session one stays intact."""
    with LocalRedis(extra_args=["--maxmemory-policy", "noeviction"]) as server:
        yield server


def out_of_memory(client: redis.Redis, refuse: bool) -> None:
    client.config_set("maxmemory", 1 if refuse else 0)  # 1 byte: every write is refused


def test_publish_under_oom_raises_bus_refused_and_writes_nothing(oom_server: LocalRedis) -> None:
    client = oom_server.client()
    bus = TenantEventBus(client, "acme")
    event = make_event()
    out_of_memory(client, True)

    with pytest.raises(BusRefused, match="maxmemory") as info:
        bus.publish("tasks", event)

    assert isinstance(info.value, EventBusError)
    out_of_memory(client, False)
    assert client.dbsize() == 0  # no stream, no dedupe marker: nothing half done
    assert bus.publish("tasks", event)  # and it goes through once memory is back
    assert client.xlen(STREAM_KEY) == 1


def test_failing_handler_under_oom_leaves_the_event_pending_then_writes_its_retry_not_a_rerun(
    oom_server: LocalRedis,
) -> None:
    client = oom_server.client()
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    # Every round below passes its own block_ms: the settings only keep maintenance away.
    settings = ConsumerSettings(retry_poll_ms=60_000, reclaim_interval_s=60)
    c = consumer(bus, dlq, settings=settings)
    c.process_batch(Recorder(), block_ms=1)  # groups made; promote and reclaim not due now
    message_id = bus.publish("tasks", make_event())
    attempts: list[tuple[int, int]] = []

    @wants_context
    def handler(event: AgentEvent, ctx: HandlerContext) -> None:
        attempts.append((ctx.delivery_count, ctx.retry_count))
        if len(attempts) < 3:
            raise RuntimeError(f"attempt {len(attempts)} fails")

    out_of_memory(client, True)
    with capture_logs() as logs:
        assert c.process_batch(handler, block_ms=10) == 1

    [failed] = [e for e in logs if e["event"] == "retry_schedule_failed"]
    assert "maxmemory" in failed["error"] and failed["left_pending"] is True
    assert [(p.message_id, p.consumer) for p in bus.get_pending("tasks", "workers")] == [
        (message_id, "c1")
    ]
    assert client.zcard(SCHEDULE_KEY) == 0 and dlq.count("tasks") == 0

    out_of_memory(client, False)
    rounds: list[int] = []

    def one_round() -> bool:
        rounds.append(c.process_batch(handler, block_ms=10))
        return len(attempts) == 3

    wait_for(one_round)

    # The refused outcome was written again once memory was back: the failed attempt was
    # not repeated (no second delivery of the original entry), the retries went on.
    assert attempts == [(1, 0), (1, 1), (1, 2)]
    assert sum(rounds) == 2  # the rounds report exactly the two deliveries they handled
    assert bus.get_pending("tasks", "workers") == []
    assert client.zcard(SCHEDULE_KEY) == 0 and dlq.count("tasks") == 0


def test_consumer_keeps_handling_and_acking_under_oom_and_catches_up_after(
    oom_server: LocalRedis,
) -> None:
    client = oom_server.client()
    bus, dlq = TenantEventBus(client, "acme"), DeadLetterQueue(client, "acme")
    settings = ConsumerSettings(block_ms=50, retry_poll_ms=50, reconnect_max_wait_s=0.2)
    handler = Recorder()
    c = consumer(bus, dlq, settings=settings)
    bus.ensure_group("tasks", "workers")
    bus.ensure_group("tasks", "workers", key=RETRY_KEY)
    waiting = make_event()
    bus.publish("tasks", waiting)
    out_of_memory(client, True)

    with capture_logs() as logs, running(c, handler):
        # Promoting retries is refused (it writes), but reads and acks go on.
        wait_for(lambda: handler.ids() == [waiting.event_id])
        wait_for(lambda: bus.get_pending("tasks", "workers") == [])
        assert any("OutOfMemory" in e["error"] for e in named(logs, "maintenance_refused"))
        out_of_memory(client, False)
        later = make_event()
        bus.publish("tasks", later)
        wait_for(lambda: handler.ids() == [waiting.event_id, later.event_id])

    assert bus.get_pending("tasks", "workers") == []


# -- outcomes only for the consumer that owns the delivery ----------------------------


def _delivered_to(bus: TenantEventBus, name: str) -> str:
    message_id = bus.publish("tasks", make_event())
    [message] = bus.subscribe("tasks", "workers", name, block=10)
    return message.message_id if message.message_id == message_id else ""


def _retry(bus: TenantEventBus, message_id: str, consumer_name: str) -> Moved:
    return bus.scripts.ack_and_retry(
        STREAM_KEY,
        SCHEDULE_KEY,
        group="workers",
        message_id=message_id,
        consumer=consumer_name,
        delay_ms=1000,
        retry_count=1,
    )


def _dead_letter(bus: TenantEventBus, message_id: str, consumer_name: str) -> Moved:
    meta = dead_letter_metadata(
        reason="handler_failed", original_stream="tasks", message_id=message_id
    )
    return bus.scripts.ack_and_dead_letter(
        STREAM_KEY,
        DLQ_KEY,
        group="workers",
        message_id=message_id,
        consumer=consumer_name,
        metadata=meta,
    )


@pytest.mark.parametrize("move", [_retry, _dead_letter])
def test_a_move_does_nothing_when_the_entry_is_pending_on_another_consumer(
    r: redis.Redis, bus: TenantEventBus, move: object
) -> None:
    message_id = _delivered_to(bus, "owner")

    assert move(bus, message_id, "intruder") == Moved(MoveStatus.NOT_OURS)  # type: ignore[operator]

    assert [(p.message_id, p.consumer) for p in bus.get_pending("tasks", "workers")] == [
        (message_id, "owner")
    ]
    assert r.zcard(SCHEDULE_KEY) == 0 and r.xlen(DLQ_KEY) == 0


@pytest.mark.parametrize("move", [_retry, _dead_letter])
def test_a_move_does_nothing_when_the_entry_was_already_acknowledged(
    r: redis.Redis, bus: TenantEventBus, move: object
) -> None:
    message_id = _delivered_to(bus, "owner")
    bus.ack("tasks", "workers", message_id)

    assert move(bus, message_id, "owner") == Moved(MoveStatus.NOT_OURS)  # type: ignore[operator]

    assert r.zcard(SCHEDULE_KEY) == 0 and r.xlen(DLQ_KEY) == 0


@pytest.mark.parametrize("move", [_retry, _dead_letter])
def test_a_move_of_an_entry_deleted_from_the_stream_just_acknowledges_it(
    r: redis.Redis, bus: TenantEventBus, move: object
) -> None:
    message_id = _delivered_to(bus, "owner")
    r.xdel(STREAM_KEY, message_id)

    assert move(bus, message_id, "owner") == Moved(MoveStatus.GONE)  # type: ignore[operator]

    assert bus.get_pending("tasks", "workers") == []
    assert r.zcard(SCHEDULE_KEY) == 0 and r.xlen(DLQ_KEY) == 0


def test_ack_and_retry_schedules_a_byte_exact_copy_and_acks(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    message_id = _delivered_to(bus, "owner")
    original = r.xrange(STREAM_KEY)[0][1]

    due = _retry(bus, message_id, "owner")

    assert bus.get_pending("tasks", "workers") == []
    [(member, score)] = r.zrange(SCHEDULE_KEY, 0, -1, withscores=True)
    assert due.status is MoveStatus.DONE and score == due.value
    moved, wait_ms = bus.scripts.promote_due(SCHEDULE_KEY, RETRY_KEY, 10)
    assert (moved, 0 < wait_ms <= 1000) == (0, True)  # not due yet
    r.zadd(SCHEDULE_KEY, {member: 0})  # make it due now
    assert bus.scripts.promote_due(SCHEDULE_KEY, RETRY_KEY, 10) == (1, -1)
    [(_, copied)] = r.xrange(RETRY_KEY)
    assert {k: v for k, v in copied.items() if not k.startswith(b"_")} == original
    assert (copied[b"_retry_count"], copied[b"_origin_id"]) == (b"1", message_id.encode())


def test_ack_and_dead_letter_copies_the_entry_with_metadata_and_acks(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    message_id = _delivered_to(bus, "owner")
    original = r.xrange(STREAM_KEY)[0][1]

    moved = _dead_letter(bus, message_id, "owner")

    [(stored_id, letter)] = r.xrange(DLQ_KEY)
    assert moved == Moved(MoveStatus.DONE, stored_id.decode())
    assert letter[b"_retry_count"] == b"0"  # the entry's own count: it was never retried
    assert {k: v for k, v in letter.items() if not k.startswith(b"_")} == original
    assert letter[b"_dlq_reason"] == b"handler_failed"
    assert letter[b"_dlq_message_id"] == message_id.encode()
    assert int(letter[b"_dlq_failed_at_ms"]) > 0
    assert bus.get_pending("tasks", "workers") == []
