"""The pool as people run it: many events, graceful stop, restarts, reclaim, config."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from eventbus import AgentEvent, DeadLetterQueue, EventType, TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import GROUP, STREAM, TENANT, event, logged_at, pending_count


def test_pool_of_four_handles_2000_events_at_least_once(make_pool, tbus: TenantEventBus) -> None:
    events = [event(i=i) for i in range(2000)]
    for start in range(0, len(events), 500):
        tbus.publish_many(STREAM, events[start : start + 500])
    pool = make_pool(processes=4).start()
    wanted = {e.event_id for e in events}
    wait_for(lambda: wanted <= pool.done_ids(), 60)
    assert len(pool.worker_pids()) == 4
    consumers = {x["consumer"] for x in pool.ledger()}
    assert consumers <= {f"{GROUP}-{i}" for i in range(4)}
    assert pool.stop() == 0
    assert pending_count(tbus) == 0


def test_sigterm_drains_the_event_in_hand_and_exits_0(make_pool, tbus: TenantEventBus) -> None:
    pool = make_pool(processes=2).start()
    slow = [event(sleep_s=1.0) for _ in range(2)]
    tbus.publish_many(STREAM, slow)
    wait_for(lambda: len(pool.starts()) == 2, 30)
    assert pool.stop() == 0
    # Both handlers were allowed to finish and their events were acknowledged.
    assert {e.event_id for e in slow} <= pool.done_ids()
    assert pending_count(tbus) == 0
    assert pool.logged("supervisor_stopped")


def test_sigterm_past_the_grace_period_kills_and_leaves_the_entry_pending(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = make_pool(processes=1, args=["--grace-period-s", "0.5"]).start()
    stuck = event(sleep_s=30)
    tbus.publish(STREAM, stuck)
    wait_for(lambda: pool.starts()[stuck.event_id] == 1, 30)
    assert pool.stop() == 0
    assert pool.logged("worker_killed_after_grace")
    assert pending_count(tbus) == 1  # not acked, not lost: recovered by the next pool


def test_restarted_worker_resumes_its_own_pending_entry(make_pool, tbus: TenantEventBus) -> None:
    pool = make_pool(processes=1).start()
    victim = event(sleep_s=0.5)
    tbus.publish(STREAM, victim)
    wait_for(lambda: pool.starts()[victim.event_id] == 1, 30)
    (pid,) = pool.worker_pids()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: victim.event_id in pool.done_ids(), 30)
    calls = [x for x in pool.ledger() if x["event_id"] == victim.event_id and x["phase"] == "start"]
    assert [c["consumer"] for c in calls] == [f"{GROUP}-0", f"{GROUP}-0"]
    assert calls[1]["delivery"] == 2
    assert pool.logged("worker_respawned")
    assert pool.stop() == 0
    assert pending_count(tbus) == 0


def test_reclaimer_recovers_entries_of_a_consumer_that_never_comes_back(
    make_pool, tbus: TenantEventBus
) -> None:
    lost = [event(i=i) for i in range(5)]
    tbus.publish_many(STREAM, lost)
    tbus.subscribe(STREAM, GROUP, "ghost", count=10, block=100)  # reads, then "dies"
    assert pending_count(tbus) == 5
    pool = make_pool(
        processes=2, args=["--reclaim-idle-ms", "300", "--reclaim-interval-s", "0.3"]
    ).start()
    wait_for(lambda: {e.event_id for e in lost} <= pool.done_ids(), 30)
    assert pool.stop() == 0
    assert pending_count(tbus) == 0


def test_poison_pill_that_kills_its_worker_ends_in_the_dlq_and_the_pool_goes_on(
    make_pool, tbus: TenantEventBus, r
) -> None:
    pool = make_pool(processes=2, args=["--max-deliveries", "2"]).start()
    pill = event(poison=True)
    tbus.publish(STREAM, pill)
    dlq = DeadLetterQueue(r, TENANT)
    wait_for(lambda: dlq.count(STREAM) == 1, 30)
    (letter,) = dlq.list_dlq_messages(STREAM)
    assert letter.reason == "max_deliveries"
    assert letter.event is not None and letter.event.event_id == pill.event_id
    assert pool.starts()[pill.event_id] == 2  # called max_deliveries times, never again
    good = [event(i=i) for i in range(10)]
    tbus.publish_many(STREAM, good)
    wait_for(lambda: {e.event_id for e in good} <= pool.done_ids(), 30)
    assert len(pool.logged("worker_respawned")) <= 3
    assert pool.stop() == 0


def test_unimportable_handler_stops_the_supervisor_with_a_clear_error(redis_server) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.pool.supervisor",
            "--redis-url",
            redis_server.url,
            "--tenant",
            TENANT,
            "--stream",
            STREAM,
            "--group",
            GROUP,
            "--handler",
            "no_such_module.sub:handle",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "no_such_module" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EVENTBUS_PROCESSES": "zero"}, "EVENTBUS_PROCESSES"),
        ({"EVENTBUS_RETRY_DELAYS": "1,-4"}, "EVENTBUS_RETRY_DELAYS"),
        ({"EVENTBUS_TENANT": "acme:evil"}, "EVENTBUS_TENANT"),
        ({"EVENTBUS_LOG_LEVEL": "loud"}, "EVENTBUS_LOG_LEVEL"),
    ],
)
def test_bad_setting_is_refused_at_start_naming_the_setting(
    redis_server, env: dict[str, str], named: str
) -> None:
    base = {
        "EVENTBUS_REDIS_URL": redis_server.url,
        "EVENTBUS_TENANT": TENANT,
        "EVENTBUS_STREAM": STREAM,
        "EVENTBUS_GROUP": GROUP,
        "EVENTBUS_HANDLER": "tests.process.handlers:record",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.pool.supervisor"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sighup_restarts_workers_one_by_one_with_the_new_env_file(
    make_pool, tbus: TenantEventBus, r, tmp_path
) -> None:
    env_file = tmp_path / "pool.env"
    env_file.write_text("EVENTBUS_RETRY_DELAYS=60,60\n")
    pool = make_pool(processes=2, args=["--env-file", str(env_file)]).start()
    before = set(pool.worker_pids())
    env_file.write_text("EVENTBUS_RETRY_DELAYS=0.2,0.2\n")
    batch = [event(i=i, sleep_s=0.02) for i in range(100)]
    tbus.publish_many(STREAM, batch)  # the workers are busy while they are replaced
    pool.signal(signal.SIGHUP)
    wait_for(lambda: pool.logged("reload_done"), 60)
    after = set(pool.worker_pids())
    assert len(after) == 2 and not (before & after)
    wait_for(lambda: {e.event_id for e in batch} <= pool.done_ids())

    # The new value is in effect: a failing event is retried 0.2 s apart (with the old
    # 60 s delays it would wait two minutes for the DLQ), and the new consumers say so.
    failing = event(fail=True)
    tbus.publish(STREAM, failing)
    dlq = DeadLetterQueue(r, TENANT)
    wait_for(lambda: dlq.count(STREAM) == 1)
    assert pool.starts()[failing.event_id] == 3  # first attempt + 2 retries
    retries = [e for e in pool.logged("retry_scheduled") if e["event_id"] == failing.event_id]
    assert [e["delay_s"] for e in retries] == [0.2, 0.2]
    logs = pool.logs()
    reload_at = next(i for i, e in enumerate(logs) if e["event"] == "reload_started")
    delays = [e["retry_delays_s"] for e in logs if e["event"] == "consumer_started"]
    old_delays = [e["retry_delays_s"] for e in logs[:reload_at] if e["event"] == "consumer_started"]
    assert old_delays == [[60.0, 60.0]] * 2
    assert delays[2:] == [[0.2, 0.2]] * 2

    # One by one, in the order the log file got them: each old worker stops, its
    # successor is spawned and starts; only then is the next one stopped. (Causal, except
    # that "started" is written just after the readiness the supervisor waits for, while
    # the supervisor's next step is at least one 0.25 s loop turn later.)
    steps = [
        (e["event"], e["worker_pid"] if e["event"] == "worker_spawned" else e["pid"])
        for e in logs[reload_at:]
        if e["event"] in ("worker_stopped", "worker_spawned", "worker_started")
    ]
    old_1, old_2 = (pid for event_name, pid in steps if event_name == "worker_stopped")
    new_1, new_2 = (pid for event_name, pid in steps if event_name == "worker_spawned")
    assert {old_1, old_2} == before and {new_1, new_2} == after
    assert steps == [
        ("worker_stopped", old_1),
        ("worker_spawned", new_1),
        ("worker_started", new_1),
        ("worker_stopped", old_2),
        ("worker_spawned", new_2),
        ("worker_started", new_2),
    ]
    assert pool.stop() == 0
    assert pending_count(tbus) == 0


def test_example_writer_agent_publishes_a_follow_up_with_the_chain_extended(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = make_pool(processes=1, args=["--handler", "workers.examples:writer_agent"]).start()
    task = event(topic="release notes")
    tbus.publish(STREAM, task)

    def follow_ups() -> list[AgentEvent]:
        rows = tbus.redis.xrange(tbus.keys.stream("results"))
        return [AgentEvent.from_stream_dict(fields) for _, fields in rows]

    (done,) = wait_for(follow_ups, 30)
    assert done.event_type is EventType.TASK_COMPLETED
    assert done.call_chain == [*task.call_chain, "writer"]
    assert done.parent_event_id == task.event_id
    assert done.correlation_id == task.event_id
    assert pool.stop() == 0


def test_restart_cap_is_logged_loudly_and_holds_respawns_back(
    make_pool, tbus: TenantEventBus
) -> None:
    pool = make_pool(
        processes=1, args=["--max-restarts-per-minute", "2", "--max-deliveries", "100"]
    ).start()
    tbus.publish(STREAM, event(poison=True))
    (limit,) = wait_for(lambda: pool.logged("restart_limit_reached"), 60)
    assert limit["level"] == "critical" and limit["limit"] == 2
    respawns = [x for x in pool.logged("worker_respawned") if not x["planned"]]
    assert len(respawns) == 2
    # Held back until the minute that began with the first restart has room again (not
    # just the slot's short backoff): measured on the log's own clock.
    minute_left_s = 60 - (logged_at(limit) - logged_at(respawns[0]))
    assert limit["respawn_in_s"] == pytest.approx(minute_left_s, abs=2.0), minute_left_s
    assert pool.stop() == 0
