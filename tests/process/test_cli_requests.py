"""``eventbus budget | halt | resume | trace`` end to end: the real command in
subprocesses against the private redis-server."""

from __future__ import annotations

import json

import pytest
import redis

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.settings import BusSettings
from tests.integration.helpers import Recorder, consumer, drain
from tests.integration.helpers import make_event as event_of
from tests.process.test_cli import TENANT, ok, one_error_line, run
from workers.tools.localredis import LocalRedis


@pytest.mark.parametrize("command", ["budget", "halt", "resume", "trace"])
def test_every_request_command_has_help(redis_server: LocalRedis, command: str) -> None:
    out = ok(run(redis_server, command, "--help"))
    assert "CORRELATION_ID" in out and "--redis-url" in out


def test_budget_sets_shows_and_refuses_publishes_past_it(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    assert ok(run(redis_server, "budget", "req-1", "--events", "2", "--units", "50")) == (
        "request 'req-1': 0 of 2 events, 0 of 50 units\n"
    )
    flags = ["--type", "task_assigned", "--source", "planner", "--correlation-id", "req-1"]
    ok(run(redis_server, "publish", "tasks", *flags))
    ok(run(redis_server, "publish", "tasks", *flags))
    error = one_error_line(run(redis_server, "publish", "tasks", *flags))
    assert "has spent its budget (2 of 2 events used)" in error
    assert ok(run(redis_server, "budget", "req-1")) == (
        "request 'req-1': 2 of 2 events, 0 of 50 units [spent]\n"
    )


def test_halt_and_resume_print_one_line_and_refuse_publishes_meanwhile(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    assert "halted" in ok(run(redis_server, "halt", "req-1"))
    assert "already halted" in ok(run(redis_server, "halt", "req-1"))
    flags = ["--type", "task_assigned", "--source", "planner", "--correlation-id", "req-1"]
    error = one_error_line(run(redis_server, "publish", "tasks", *flags))
    assert error == (
        "eventbus: error: event "
        + error.split("event ", 1)[1].split(" refused")[0]
        + " refused: request 'req-1' is halted ('eventbus resume' lifts it)"
    )
    assert "resumed" in ok(run(redis_server, "resume", "req-1"))
    assert "was not halted" in ok(run(redis_server, "resume", "req-1"))
    ok(run(redis_server, "publish", "tasks", *flags))


def test_bad_correlation_ids_and_missing_traces_are_one_line_errors(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    assert "invalid correlation id 'a b'" in one_error_line(run(redis_server, "halt", "a b"))
    assert "invalid correlation id 'a b'" in one_error_line(
        run(redis_server, "budget", "a b", "--events", "1")
    )
    assert "no trace of request 'nope'" in one_error_line(run(redis_server, "trace", "nope"))
    usage = run(redis_server, "budget", "r", "--events", "-1")
    assert usage.returncode == 2 and "invalid integer >= 0 value: '-1'" in usage.stderr


def test_trace_prints_the_tree_and_its_json(redis_server: LocalRedis, r: redis.Redis) -> None:
    bus = TenantEventBus(r, TENANT, settings=BusSettings(trace=True))
    root = event_of(correlation_id="req-1")
    kid = event_of(
        source_agent_id="writer",
        call_chain=["user", "planner", "writer"],
        correlation_id="req-1",
        parent_event_id=root.event_id,
    )
    bus.publish("tasks", root)
    bus.publish("tasks", kid)
    dlq = DeadLetterQueue(r, TENANT)
    c = consumer(bus, dlq)
    handler = Recorder()
    drain(c, handler, lambda: len(handler.ids()) == 2)
    c.process_batch(handler, block_ms=1)

    text = ok(run(redis_server, "trace", "req-1")).splitlines()
    assert text[0].startswith("request 'req-1': 2 events, agents planner, writer")
    assert f"planner task_assigned -> tasks [{root.event_id}] handled (workers)" in text[1]
    assert (
        text[2].startswith("  - ")
        and f"writer task_assigned -> tasks [{kid.event_id}]" in (text[2])
    )
    doc = json.loads(ok(run(redis_server, "trace", "req-1", "--json")))
    assert doc["events"] == 2 and doc["roots"][0]["children"][0]["event_id"] == kid.event_id
    assert doc["roots"][0]["status"] == "handled"
