"""The optional dedupe guard (eventbus.dedupe) on the private Redis: a side effect wrapped
in ``once`` happens once per group, even when the event is delivered again."""

from __future__ import annotations

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, HandlerContext, TenantEventBus, wants_context
from eventbus.dedupe import DEFAULT_TTL_S, is_done, once
from eventbus.errors import BusConnectionError
from tests.integration.helpers import consumer, drain, make_event


def ctx_for(group: str = "workers", stream: str = "tasks") -> HandlerContext:
    return HandlerContext("1-0", stream, group, "c1", 1, 0, log=None, bus=None)  # type: ignore[arg-type]


def test_once_runs_the_effect_the_first_time_only_for_each_group(r: redis.Redis) -> None:
    event, effects = make_event(), []
    assert once(r, event, ctx_for(), lambda: effects.append("a")) is True
    assert once(r, event, ctx_for(), lambda: effects.append("b")) is False
    assert once(r, event, ctx_for(group="auditors"), lambda: effects.append("c")) is True
    assert effects == ["a", "c"]


def test_the_mark_lives_under_the_tenant_prefix_and_expires(r: redis.Redis) -> None:
    event = make_event()
    once(r, event, ctx_for(), lambda: None, ttl_s=60)
    key = f"t:{{acme}}:done:tasks:workers:{event.event_id}"
    assert r.exists(key) and 0 < r.ttl(key) <= 60
    assert is_done(r, "acme", "tasks", "workers", event.event_id)
    assert not is_done(r, "other", "tasks", "workers", event.event_id)
    assert DEFAULT_TTL_S >= 86400


def test_an_effect_that_raises_is_not_marked_and_runs_again(r: redis.Redis) -> None:
    event, effects = make_event(), []

    def flaky() -> None:
        effects.append("try")
        if len(effects) == 1:
            raise RuntimeError("effect failed")

    with pytest.raises(RuntimeError):
        once(r, event, ctx_for(), flaky)
    assert once(r, event, ctx_for(), flaky) is True
    assert effects == ["try", "try"]


def test_an_unreachable_redis_raises_a_bus_connection_error_before_the_effect() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=None)
    effects: list[str] = []
    with pytest.raises(BusConnectionError):
        once(dead, make_event(), ctx_for(), lambda: effects.append("x"))
    assert effects == []


def test_a_redelivered_event_does_not_repeat_the_guarded_effect(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    effects: list[str] = []

    @wants_context
    def dies_after_the_effect(event: AgentEvent, ctx: HandlerContext) -> None:
        once(r, event, ctx, lambda: effects.append(event.event_id))
        if ctx.delivery_count == 1:
            raise SystemExit("killed between the effect and the ack")

    event = make_event()
    bus.publish("tasks", event)
    first = consumer(bus, dlq)
    with pytest.raises(SystemExit):
        first.process_batch(dies_after_the_effect, block_ms=20)
    assert len(bus.get_pending("tasks", "workers")) == 1  # not acked: it comes again
    second = consumer(bus, dlq)  # same name: resumes its own pending entry
    drain(second, dies_after_the_effect, lambda: not bus.get_pending("tasks", "workers"))
    assert effects == [event.event_id]
