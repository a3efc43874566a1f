"""The ``eventbus`` operator CLI, end to end: the real command in subprocesses against the
private redis-server (never the user's Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, EventConsumer, EventType, TenantEventBus
from eventbus.redis_io import s
from tests.conftest import wait_for
from workers.cli import main
from workers.tools.localredis import LocalRedis, free_port

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"
STREAM = "tasks"


def cli_env(server: LocalRedis) -> dict[str, str]:
    return {**os.environ, "EVENTBUS_REDIS_URL": server.url, "EVENTBUS_TENANT": TENANT}


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


def run(
    server: LocalRedis, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(*args),
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(server),
        cwd=REPO,
        timeout=30,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The run failed with ``code`` and said why in exactly one line, without a traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("eventbus: error: ")
    return lines[0]


def make_event(event_type: EventType = EventType.TASK_ASSIGNED, **data: object) -> AgentEvent:
    return AgentEvent(
        event_type=event_type,
        tenant_id=TENANT,
        source_agent_id="planner",
        call_chain=["planner"],
        data=dict(data),
    )


def line(**fields: object) -> str:
    values: dict[str, object] = {
        "event_type": "task_assigned",
        "source_agent_id": "planner",
        "call_chain": ["planner"],
    }
    return json.dumps({**values, **fields})


def entry_ids(r: redis.Redis, key: str) -> list[str]:
    rows: list[tuple[bytes, Any]] = r.xrange(key)  # type: ignore[assignment]
    return [i.decode() for i, _ in rows]


def stored_events(r: redis.Redis, stream: str = STREAM) -> list[tuple[str, AgentEvent]]:
    rows: list[tuple[bytes, Any]] = r.xrange(f"t:{{{TENANT}}}:events:{stream}")  # type: ignore[assignment]
    return [(i.decode(), AgentEvent.from_stream_dict(f)) for i, f in rows]


def dead_letter(dlq: DeadLetterQueue, event: AgentEvent, group: str | None = "workers") -> str:
    try:
        raise RuntimeError("handler exploded")
    except RuntimeError as exc:
        return dlq.send_to_dlq(STREAM, "1-0", event, exc, 3, group=group, consumer="w1")


# -- publish -----------------------------------------------------------------------------


def test_publish_with_flags_stores_the_event_and_prints_its_id(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    out = ok(
        run(
            redis_server,
            "publish",
            STREAM,
            "--type",
            "task_assigned",
            "--source",
            "planner",
            "--chain",
            "user,planner",
            "--data",
            '{"task": "write", "n": 2}',
            "--priority",
            "HIGH",
            "--correlation-id",
            "corr-1",
            "--parent-event-id",
            "parent-1",
            "--context-ref",
            "s3://a",
            "--context-ref",
            "s3://b",
            "--event-id",
            "ev-1",
        )  # fmt: skip
    )
    [(message_id, event)] = stored_events(r)
    assert out.strip() == message_id
    assert event.event_type is EventType.TASK_ASSIGNED
    assert event.priority.value == "high"
    assert event.call_chain == ["user", "planner"]
    assert event.data == {"task": "write", "n": 2}
    assert event.context_refs == ["s3://a", "s3://b"]
    assert (event.correlation_id, event.parent_event_id) == ("corr-1", "parent-1")
    assert (event.event_id, event.tenant_id) == ("ev-1", TENANT)


def test_publish_takes_the_event_type_by_enum_name(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    ok(run(redis_server, "publish", STREAM, "--type", "HANDOFF_REQUEST", "--source", "a"))
    [(_, event)] = stored_events(r)
    assert event.event_type is EventType.HANDOFF_REQUEST
    assert event.call_chain == ["a"]  # the chain defaults to the source


def test_publish_stdin_publishes_every_line_in_order_in_batches(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    lines = [line(data={"n": 0}), "", line(data={"n": 1}, tenant_id=TENANT)]
    lines.append(line(data={"n": 2}, event_type="TASK_FAILED"))
    out = ok(run(redis_server, "publish", STREAM, "-", "--batch-size", "2", stdin="\n".join(lines)))
    stored = stored_events(r)
    assert out.split() == [i for i, _ in stored]
    assert [e.data["n"] for _, e in stored] == [0, 1, 2]
    assert stored[2][1].event_type is EventType.TASK_FAILED


def test_publish_stdin_bad_json_names_the_line_and_publishes_nothing_of_its_batch(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    stdin = "\n".join([line(), line(), '{"event_type": "task_assigned",'])
    err = one_error_line(run(redis_server, "publish", STREAM, "-", stdin=stdin))
    assert "line 3: not valid JSON" in err
    assert r.exists(f"t:{{{TENANT}}}:events:{STREAM}") == 0


def test_publish_stdin_stops_at_a_bad_line_after_publishing_earlier_batches(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    stdin = "\n".join([line(data={"n": 0}), line(data={"n": 1}), line(data={"n": 2}), "[]"])
    result = run(redis_server, "publish", STREAM, "-", "--batch-size", "2", stdin=stdin)
    assert "line 4: expected a JSON object" in one_error_line(result)
    stored = stored_events(r)
    assert [e.data["n"] for _, e in stored] == [0, 1]  # line 3 was in the failed batch
    assert result.stdout.split() == [i for i, _ in stored]


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        (line() + "\n" + line(tenant_id="other"), "line 2: event is for tenant 'other'"),
        (line(call_chain=[]), "line 1: invalid event: call_chain: List should have at least 1"),
        (line(event_type="no_such_type"), "line 1: unknown event type 'no_such_type'"),
        (line(event_id="a b"), "line 1: invalid event: event_id: String should match pattern"),
        (line(event_id="a b"), "(got 'a b')"),
    ],
)
def test_publish_stdin_invalid_events_name_the_line(
    redis_server: LocalRedis, r: redis.Redis, stdin: str, expected: str
) -> None:
    assert expected in one_error_line(run(redis_server, "publish", STREAM, "-", stdin=stdin))
    assert r.exists(f"t:{{{TENANT}}}:events:{STREAM}") == 0


def test_publish_without_type_is_a_usage_error(redis_server: LocalRedis, r: redis.Redis) -> None:
    result = run(redis_server, "publish", STREAM, "--source", "a")
    assert result.returncode == 2
    assert "--type and --source are required" in result.stderr
    assert r.exists(f"t:{{{TENANT}}}:events:{STREAM}") == 0


# -- tail --------------------------------------------------------------------------------


def blocked_tail(r: redis.Redis) -> bool:
    """A CLI connection is inside XREAD BLOCK."""
    return any(
        c["name"] == "eventbus-cli" and c["cmd"] == "xread" and "b" in c["flags"]
        for c in r.client_list()
    )


def _default_sigint() -> None:
    # As from a terminal: a suite started in the background of a non-interactive shell
    # inherits SIGINT ignored, and then Python never raises KeyboardInterrupt (Ctrl-C).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_tail(server: LocalRedis, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_argv("tail", STREAM, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(server),
        cwd=REPO,
        preexec_fn=_default_sigint,
    )


def test_tail_prints_events_published_while_it_waits(
    redis_server: LocalRedis, r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.publish(STREAM, make_event(n=0))  # before the tail: not printed
    proc = start_tail(redis_server, "--count", "2")
    try:
        wait_for(lambda: blocked_tail(r), timeout_s=30)
        ids = [bus.publish(STREAM, make_event(EventType.TASK_COMPLETED, n=n)) for n in (1, 2)]
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    records = [json.loads(x) for x in out.splitlines()]
    assert [x["message_id"] for x in records] == ids
    assert [x["event"]["data"]["n"] for x in records] == [1, 2]
    assert records[0]["event"]["event_type"] == "task_completed"


def test_tail_from_start_prints_undecodable_entries_with_their_fields_and_an_error(
    redis_server: LocalRedis, r: redis.Redis, bus: TenantEventBus
) -> None:
    good = bus.publish(STREAM, make_event(n=1))
    bad = s(r.xadd(f"t:{{{TENANT}}}:events:{STREAM}", {b"junk": b"\xff\xfe"}))
    out = ok(run(redis_server, "tail", STREAM, "--from-start", "--count", "2"))
    first, second = (json.loads(x) for x in out.splitlines())
    assert first["message_id"] == good and first["event"]["data"] == {"n": 1}
    assert second["message_id"] == bad
    assert second["fields"] == {"junk": "\ufffd\ufffd"}
    assert "not valid UTF-8" in second["error"]


def test_tail_exits_0_quietly_on_ctrl_c(
    redis_server: LocalRedis, r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.publish(STREAM, make_event())
    proc = start_tail(redis_server)
    try:
        wait_for(lambda: blocked_tail(r), timeout_s=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "", "")


# -- stats -------------------------------------------------------------------------------


def failing_once(event: AgentEvent) -> None:
    if event.data.get("fail"):
        raise RuntimeError("boom")


def test_stats_report_length_pending_dlq_and_retries(
    redis_server: LocalRedis, r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    for n in range(3):
        bus.publish(STREAM, make_event(n=n, fail=n == 0))
    # workers: the failure waits 60 s in the schedule; billing: due at once, promoted.
    EventConsumer(bus, STREAM, "workers", "w1", dlq, retry_delays=[60]).process_batch(
        failing_once, block_ms=10
    )
    EventConsumer(bus, STREAM, "billing", "b1", dlq, retry_delays=[0]).process_batch(
        failing_once, block_ms=10
    )
    keys = bus.keys
    promoted = bus.scripts.promote_due(
        keys.schedule(STREAM, "billing"), keys.retry_stream(STREAM, "billing"), 100
    )
    assert promoted[0] == 1
    bus.subscribe(STREAM, "audit", "a1", count=1, block=10)  # one pending, two unread
    dead_letter(dlq, make_event())

    def audit_idle_ms() -> int:
        (info,) = r.xinfo_consumers(keys.stream(STREAM), "audit")
        return int(info["idle"])

    wait_for(lambda: audit_idle_ms() >= 100)  # idle for a while: a real value to report
    idle_before = audit_idle_ms()
    doc = json.loads(ok(run(redis_server, "stats", "--json")))
    idle_after = audit_idle_ms()
    assert doc["tenant"] == TENANT
    [st] = doc["streams"]
    assert (st["stream"], st["exists"], st["length"], st["dlq"]) == (STREAM, True, 3, 1)
    groups = {g["group"]: g for g in st["groups"]}
    assert (groups["audit"]["lag"], groups["audit"]["pending"]) == (2, 1)
    assert groups["audit"]["consumers"][0]["name"] == "a1"
    assert groups["audit"]["consumers"][0]["pending"] == 1
    assert idle_before <= groups["audit"]["consumers"][0]["idle_ms"] <= idle_after
    assert groups["workers"]["retries"] == {"scheduled": 1, "backlog": 0, "pending": 0}
    assert groups["billing"]["retries"] == {"scheduled": 0, "backlog": 1, "pending": 0}

    rows = [x.split() for x in ok(run(redis_server, "stats", STREAM)).splitlines()]
    assert ["tasks", "3", "1", "audit", "2", "1", "1", "0", "0", "0"] in rows
    assert ["tasks", "3", "1", "billing", "0", "0", "1", "0", "1", "0"] in rows
    assert ["tasks", "3", "1", "workers", "0", "0", "1", "1", "0", "0"] in rows
    assert any(row[:4] == ["tasks", "audit", "a1", "1"] for row in rows)


def test_stats_of_an_unknown_stream_fails(redis_server: LocalRedis, r: redis.Redis) -> None:
    err = one_error_line(run(redis_server, "stats", "nosuch"))
    assert "stream 'nosuch' of tenant 'acme' does not exist" in err


# -- dlq ---------------------------------------------------------------------------------


def test_dlq_list_shows_the_dead_letters_as_json_and_as_a_table(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    first = dead_letter(dlq, make_event(EventType.TASK_FAILED))
    second = dead_letter(dlq, make_event(), group=None)
    doc = json.loads(ok(run(redis_server, "dlq", "list", STREAM, "--json")))
    assert (doc["tenant"], doc["stream"], doc["total"]) == (TENANT, STREAM, 2)
    assert [e["dlq_id"] for e in doc["entries"]] == [first, second]
    assert doc["entries"][0]["event_type"] == "task_failed"
    assert doc["entries"][0]["group"] == "workers"
    assert doc["entries"][0]["error"] == "handler exploded"
    assert doc["entries"][0]["retry_count"] == 3

    limited = json.loads(ok(run(redis_server, "dlq", "list", STREAM, "--count", "1", "--json")))
    assert ([e["dlq_id"] for e in limited["entries"]], limited["total"]) == ([first], 2)
    table = ok(run(redis_server, "dlq", "list", STREAM))
    assert first in table and second in table and "RuntimeError: handler exploded" in table


def test_dlq_show_prints_the_traceback_and_the_fields(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    event = make_event(n=7)
    dlq_id = dead_letter(dlq, event)
    text = ok(run(redis_server, "dlq", "show", STREAM, dlq_id))
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: handler exploded" in text
    assert f"event_id: {event.event_id}" in text
    doc = json.loads(ok(run(redis_server, "dlq", "show", STREAM, dlq_id, "--json")))
    assert doc["dlq_id"] == dlq_id and "handler exploded" in doc["traceback"]
    assert json.loads(doc["fields"]["data"]) == {"n": 7}


def test_dlq_show_rejects_a_malformed_id_and_reports_a_missing_one(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    dead_letter(dlq, make_event())
    assert "invalid DLQ id 'nope'" in one_error_line(
        run(redis_server, "dlq", "show", STREAM, "nope")
    )
    missing = one_error_line(run(redis_server, "dlq", "show", STREAM, "1-0"))
    assert "no dead letter '1-0'" in missing


def test_dlq_replay_one_goes_to_the_retry_stream_of_the_failed_group(
    redis_server: LocalRedis, r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    grouped = dead_letter(dlq, make_event(n=1))
    groupless = dead_letter(dlq, make_event(n=2), group=None)
    new_id = ok(run(redis_server, "dlq", "replay", STREAM, grouped)).strip()
    assert entry_ids(r, bus.keys.retry_stream(STREAM, "workers")) == [new_id]
    assert [x.dlq_id for x in dlq.list_dlq_messages(STREAM)] == [groupless]

    new_id = ok(run(redis_server, "dlq", "replay", STREAM, groupless)).strip()
    assert [i for i, _ in stored_events(r)] == [new_id]
    assert dlq.count(STREAM) == 0


def test_dlq_replay_all_empties_the_dlq(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    for n in range(3):
        dead_letter(dlq, make_event(n=n), group=None)
    result = run(redis_server, "dlq", "replay", STREAM, "--all")
    new_ids = ok(result).split()
    assert "replayed 3 dead letter(s)" in result.stderr
    assert [i for i, _ in stored_events(r)] == new_ids
    assert dlq.count(STREAM) == 0


def test_dlq_replay_by_event_type_leaves_the_other_types(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    dead_letter(dlq, make_event(EventType.TASK_FAILED), group=None)
    kept = dead_letter(dlq, make_event(EventType.TASK_ASSIGNED), group=None)
    dead_letter(dlq, make_event(EventType.TASK_FAILED), group=None)
    out = ok(run(redis_server, "dlq", "replay", STREAM, "--event-type", "TASK_FAILED"))
    assert len(out.split()) == 2
    assert [e.event_type for _, e in stored_events(r)] == [EventType.TASK_FAILED] * 2
    assert [x.dlq_id for x in dlq.list_dlq_messages(STREAM)] == [kept]


def test_dlq_purge_refuses_without_yes_and_deletes_nothing(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    dead_letter(dlq, make_event())
    assert "add --yes" in one_error_line(run(redis_server, "dlq", "purge", STREAM))
    assert dlq.count(STREAM) == 1


def test_dlq_purge_with_yes_deletes_by_id_by_age_or_all(
    redis_server: LocalRedis, r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    ids = [dead_letter(dlq, make_event(n=n)) for n in range(3)]
    out = ok(run(redis_server, "dlq", "purge", STREAM, "--id", ids[0], "--yes"))
    assert out.startswith("purged 1 dead letter(s)")
    assert [x.dlq_id for x in dlq.list_dlq_messages(STREAM)] == ids[1:]
    out = ok(run(redis_server, "dlq", "purge", STREAM, "--older-than", "3600", "--yes"))
    assert out.startswith("purged 0 dead letter(s)")  # they are seconds old
    assert dlq.count(STREAM) == 2
    assert ok(run(redis_server, "dlq", "purge", STREAM, "--yes")).startswith("purged 2")
    assert dlq.count(STREAM) == 0


# -- errors, help, supervise -------------------------------------------------------------


def test_unreachable_redis_fails_fast_with_one_line(redis_server: LocalRedis) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    ok(run(redis_server, "stats"))  # the baseline: start-up and a few commands, this run
    baseline_s = time.monotonic() - started
    started = time.monotonic()
    err = one_error_line(run(redis_server, "stats", "--redis-url", url))
    failed_s = time.monotonic() - started
    assert err == f"eventbus: error: cannot reach Redis at {url} (Connection refused)"
    # No reconnect loop: about as quick as a run that works (start-up dominates both).
    assert failed_s < baseline_s + 5, (failed_s, baseline_s)
    secret_url = url.replace("redis://", "redis://:s3cret@")
    err = one_error_line(run(redis_server, "stats", "--redis-url", secret_url))
    assert "redis://:***@127.0.0.1" in err and "s3cret" not in err


@pytest.mark.parametrize(
    ("tenant", "stream", "expected"),
    [("a:b", STREAM, "invalid tenant id 'a:b'"), (TENANT, "x y", "invalid stream name 'x y'")],
)
def test_invalid_names_fail_before_connecting(
    redis_server: LocalRedis, tenant: str, stream: str, expected: str
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # the name is checked first
    result = run(redis_server, "--tenant", tenant, "dlq", "list", stream, "--redis-url", closed)
    assert expected in one_error_line(result)


@pytest.mark.parametrize("url", ["foo://127.0.0.1:6390/0", "redis://127.0.0.1:abc/0"])
def test_a_malformed_redis_url_is_named_in_one_line(redis_server: LocalRedis, url: str) -> None:
    result = run(redis_server, "stats", "--redis-url", url)
    assert f"invalid Redis URL '{url}'" in one_error_line(result)


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ([], "supervise"),
        (["publish"], "--context-ref"),
        (["tail"], "--from-start"),
        (["stats"], "--json"),
        (["dlq"], "replay"),
        (["dlq", "list"], "--count"),
        (["dlq", "show"], "traceback"),
        (["dlq", "replay"], "--event-type"),
        (["dlq", "purge"], "--older-than"),
    ],
)
def test_every_subcommand_has_help(
    argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert mentions in capsys.readouterr().out


def test_supervise_passes_its_arguments_to_the_supervisor(redis_server: LocalRedis) -> None:
    result = run(redis_server, "supervise", "--help")
    assert result.returncode == 0, result.stderr
    assert "--processes" in result.stdout  # the supervisor's own flags


def test_migrate_keys_renames_layout_1_keys_and_reports_each(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    r.xadd(f"t:{TENANT}:events:{STREAM}", {"x": "1"})
    r.set(f"t:{{{TENANT}}}:streams", "taken")
    r.sadd(f"t:{TENANT}:streams", STREAM)

    dry = run(redis_server, "migrate-keys", "--dry-run").stdout  # exit 1: a conflict
    assert f"would move t:{TENANT}:events:{STREAM} -> t:{{{TENANT}}}:events:{STREAM}" in dry
    assert r.exists(f"t:{{{TENANT}}}:events:{STREAM}") == 0

    result = run(redis_server, "migrate-keys")
    assert result.returncode == 1  # one key could not be renamed: said, not hidden
    assert f"moved t:{TENANT}:events:{STREAM} -> t:{{{TENANT}}}:events:{STREAM}" in result.stdout
    assert f"kept t:{TENANT}:streams: t:{{{TENANT}}}:streams exists already" in result.stdout
    assert r.xlen(f"t:{{{TENANT}}}:events:{STREAM}") == 1
