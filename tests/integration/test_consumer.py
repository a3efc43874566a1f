"""EventConsumer on a real Redis: handling, acks, retry then dead-letter, context, logs, stop."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from eventbus import (
    AgentEvent,
    ConsumerSettings,
    DeadLetterQueue,
    EventConsumer,
    HandlerContext,
    TenantEventBus,
    TenantMismatch,
    wants_context,
)
from eventbus.logs import merge_log_context
from tests.conftest import wait_for
from tests.integration.helpers import (
    Recorder,
    always_fail,
    client_list,
    consumer,
    drain,
    make_event,
    running,
)

SCHEDULE_KEY = "t:{acme}:sched:tasks:workers"
RETRY_KEY = "t:{acme}:events:tasks:retry:workers"


def nothing_left(bus: TenantEventBus, r: redis.Redis) -> bool:
    return not bus.get_pending("tasks", "workers") and r.zcard(SCHEDULE_KEY) == 0


def server_ms(r: redis.Redis) -> int:
    """The Redis server's clock, in milliseconds."""
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_successful_handler_acks_the_event(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    events = [make_event(data={"n": i}) for i in range(3)]
    bus.publish_many("tasks", events)
    seen = Recorder()
    c = consumer(bus, dlq)

    handled = c.process_batch(seen, block_ms=10)

    assert handled == 3
    assert seen.ids() == [e.event_id for e in events]
    assert [e for _, e in seen.calls] == events
    assert bus.get_pending("tasks", "workers") == []
    assert c.stats["handled"] == 3
    assert dlq.count("tasks") == 0


def test_always_failing_handler_is_called_4_times_then_dead_lettered(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    message_id = bus.publish("tasks", event)
    failing = Recorder(fail=always_fail)
    c = consumer(bus, dlq, name="c1")

    before_ms = server_ms(r)
    drain(c, failing, lambda: dlq.count("tasks") == 1)
    after_ms = server_ms(r)

    assert failing.ids() == [event.event_id] * 4
    [letter] = dlq.list_dlq_messages("tasks")
    assert letter.event == event
    assert letter.reason == "handler_failed"
    assert letter.retry_count == 3
    assert letter.error_type == "RuntimeError"
    assert letter.error == "handler failed on attempt 4"
    assert letter.traceback is not None and "RuntimeError: handler failed" in letter.traceback
    assert letter.original_stream == "tasks"
    assert letter.original_message_id == message_id
    assert (letter.group, letter.consumer) == ("workers", "c1")
    assert before_ms <= round(letter.failed_at.timestamp() * 1000) <= after_ms  # server clock
    assert nothing_left(bus, r)
    assert c.stats["retried"] == 3 and c.stats["dead_lettered"] == 1


def test_retried_entries_carry_their_retry_count(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    bus.publish("tasks", make_event())
    seen: list[int] = []

    @wants_context
    def failing(event: AgentEvent, ctx: HandlerContext) -> None:
        seen.append(ctx.retry_count)
        raise RuntimeError("no")

    drain(consumer(bus, dlq), failing, lambda: dlq.count("tasks") == 1)

    assert seen == [0, 1, 2, 3]
    retried = [f[b"_retry_count"] for _, f in r.xrange(RETRY_KEY)]
    assert retried == [b"1", b"2", b"3"]


def test_handler_that_succeeds_on_the_second_attempt_is_not_dead_lettered(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    bus.publish("tasks", event)
    flaky = Recorder(fail=lambda e, attempt: attempt == 1)
    c = consumer(bus, dlq)

    drain(c, flaky, lambda: len(flaky.calls) == 2 and nothing_left(bus, r))

    assert flaky.ids() == [event.event_id] * 2
    assert dlq.count("tasks") == 0
    assert c.stats["handled"] == 1 and c.stats["retried"] == 1
    assert r.xinfo_groups(RETRY_KEY)[0]["pending"] == 0


def test_max_retries_zero_dead_letters_at_the_first_failure(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    bus.publish("tasks", make_event())
    failing = Recorder(fail=always_fail)

    drain(consumer(bus, dlq, max_retries=0), failing, lambda: dlq.count("tasks") == 1)

    assert len(failing.calls) == 1
    assert dlq.list_dlq_messages("tasks")[0].retry_count == 0


@pytest.mark.slow
def test_default_retry_delays_are_1_4_16_seconds_and_kept_on_time(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    bus.publish("tasks", event)
    failing = Recorder(fail=always_fail)
    c = EventConsumer(bus, "tasks", "workers", "c1", dlq)  # the real defaults

    with running(c, failing):
        wait_for(lambda: dlq.count("tasks") == 1, timeout_s=90)

    times = failing.times_of(event.event_id)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4
    # Never early; late by less than the step to the next delay, so that each gap shows
    # which delay was used (a bound about the schedule, not about the machine's speed).
    for gap, delay in zip(gaps, [1.0, 4.0, 16.0], strict=True):
        assert delay <= gap < delay + 3.0, gaps


def test_backoff_does_not_block_other_events(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    slow_retry = make_event(data={"n": "fails once"})
    bus.publish("tasks", slow_retry)
    handler = Recorder(fail=lambda e, attempt: e.event_id == slow_retry.event_id and attempt == 1)
    c = consumer(bus, dlq, retry_delays=[3.0])

    with running(c, handler):
        wait_for(lambda: r.zcard(SCHEDULE_KEY) == 1)
        others = [make_event(data={"n": i}) for i in range(3)]
        bus.publish_many("tasks", others)
        wait_for(lambda: set(handler.ids()) >= {e.event_id for e in others})
        wait_for(lambda: len(handler.times_of(slow_retry.event_id)) == 2)

    first, second = handler.times_of(slow_retry.event_id)
    assert second - first >= 3.0  # the retry kept its delay...
    handled_at = max(handler.times_of(e.event_id)[0] for e in others)
    assert handled_at < second  # ...and the events published during it did not wait for it
    assert nothing_left(bus, r)


def test_retry_due_time_comes_from_the_redis_server_clock(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    bus.publish("tasks", make_event())
    c = consumer(bus, dlq, retry_delays=[60.0])

    before_ms = server_ms(r)
    c.process_batch(Recorder(fail=always_fail), block_ms=10)
    after_ms = server_ms(r)

    [(member, due_ms)] = r.zrange(SCHEDULE_KEY, 0, -1, withscores=True)
    # Due 60 s after the failure by the server's clock: bracketed by two server readings.
    assert before_ms + 60_000 <= due_ms <= after_ms + 60_000
    assert b'"_retry_count","1"' in member


def test_context_handler_gets_the_delivery_details(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    message_id = bus.publish("tasks", event)
    contexts: list[HandlerContext] = []

    @wants_context
    def handler(event: AgentEvent, ctx: HandlerContext) -> None:
        contexts.append(ctx)
        ctx.log.info("handler_says", n=len(contexts))
        if len(contexts) == 1:
            raise RuntimeError("once")

    with capture_logs(processors=[merge_contextvars, merge_log_context]) as logs:
        drain(consumer(bus, dlq, name="c7"), handler, lambda: len(contexts) == 2)

    first, second = contexts
    assert (first.message_id, first.delivery_count, first.retry_count) == (message_id, 1, 0)
    assert (first.stream, first.group, first.consumer) == ("tasks", "workers", "c7")
    assert second.message_id != message_id  # the retry is a new entry of the retry stream
    assert (second.delivery_count, second.retry_count) == (1, 1)
    # ctx.log is bound to the delivery: what the handler logs carries its context.
    said = [e for e in logs if e["event"] == "handler_says"]
    bound = {"tenant": "acme", "stream": "tasks", "group": "workers", "consumer": "c7"}
    assert [e["n"] for e in said] == [1, 2]
    for entry, ctx, attempt in zip(said, contexts, (1, 2), strict=True):
        assert entry.items() >= {**bound, "message_id": ctx.message_id, "attempt": attempt}.items()
        assert entry["event_id"] == event.event_id


def test_logs_of_retry_and_dead_letter_carry_the_delivery_context(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    bus.publish("tasks", event)
    c = consumer(bus, dlq, max_retries=1, name="c9")

    with capture_logs(processors=[merge_contextvars, merge_log_context]) as logs:
        drain(c, Recorder(fail=always_fail), lambda: dlq.count("tasks") == 1)

    bound = {"tenant": "acme", "stream": "tasks", "group": "workers", "consumer": "c9"}
    [retry] = [e for e in logs if e["event"] == "retry_scheduled"]
    [dead] = [e for e in logs if e["event"] == "dead_lettered"]
    assert retry.items() >= {**bound, "event_id": event.event_id, "attempt": 1}.items()
    assert retry["error_type"] == "RuntimeError" and retry["delay_s"] == 0.05
    assert dead.items() >= {**bound, "event_id": event.event_id, "attempt": 2}.items()
    assert dead["reason"] == "handler_failed" and dead["log_level"] == "error"


def test_stop_from_another_thread_ends_the_loop_within_a_block_interval(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    settings = ConsumerSettings(block_ms=500, retry_poll_ms=60_000, reclaim_interval_s=120)
    c = consumer(bus, dlq, settings=settings)
    started = threading.Event()
    bus.publish("tasks", make_event())

    def blocked_in_xreadgroup() -> bool:
        return any(x["cmd"] == "xreadgroup" and "b" in x["flags"] for x in client_list(r))

    loop = threading.Thread(target=c.process_loop, args=(lambda e: started.set(),), daemon=True)
    loop.start()
    assert started.wait(30)
    wait_for(blocked_in_xreadgroup)
    stop_at = time.monotonic()

    c.stop()
    loop.join(60)

    assert not loop.is_alive()
    # The blocked read (0.5 s) ends and the loop sees the flag: far sooner than the next
    # retry poll (60 s) or reclaim (120 s) would end it. Generous: a loaded machine is slow.
    assert time.monotonic() - stop_at < 30


def test_consumer_refuses_a_dead_letter_queue_of_another_tenant(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    with pytest.raises(TenantMismatch, match="'globex'"):
        EventConsumer(bus, "tasks", "workers", "c1", DeadLetterQueue(r, "globex"))


def test_consumer_rejects_invalid_retry_settings_at_construction(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    with pytest.raises(ValueError, match="-1"):
        EventConsumer(bus, "tasks", "workers", "c1", dlq, retry_delays=[-1])
