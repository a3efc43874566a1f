"""Newest-first DLQ pages, filtered search with a time budget, resumable batched replay /
purge (eventbus.dlqview), the audit stream, and the read-only viewer role, on real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from eventbus import AgentEvent, DeadLetterQueue, EventType, TenantEventBus
from eventbus.acl import tenant_users
from eventbus.audit import AuditLog
from eventbus.dlqview import DlqFilter, newest_first, run_step, start_run
from eventbus.errors import BusRefused
from eventbus.redis_io import AnyRedis
from tests.integration.helpers import on_every_node


def event(kind: EventType = EventType.TASK_FAILED, **data: object) -> AgentEvent:
    return AgentEvent(
        event_type=kind, tenant_id="acme", source_agent_id="a", call_chain=["a"], data=data
    )


def fill(r: redis.Redis, n: int, *, start_ms: int = 1_700_000_000_000) -> list[str]:
    """n dead letters with explicit ids one ms apart: every 3rd is a decode_error of group
    g2, the others handler_failed of g1; error text "boom <i>"."""
    ids = []
    for i in range(n):
        fields = event(EventType.TASK_ASSIGNED if i % 3 else EventType.TASK_FAILED, i=i)
        row = dict(fields.to_stream_dict())
        row.update(
            {
                "_dlq_reason": "decode_error" if i % 3 == 0 else "handler_failed",
                "_dlq_stream": "tasks",
                "_dlq_message_id": f"1-{i}",
                "_retry_count": "3",
                "_dlq_error_type": "RuntimeError",
                "_dlq_error": f"boom {i}",
                "_dlq_group": "g2" if i % 3 == 0 else "g1",
            }
        )
        ids.append(r.xadd("t:{acme}:events:tasks:dlq", row, id=f"{start_ms + i}-0").decode())
    return ids


def test_pages_walk_the_dlq_newest_first_each_letter_once(r: redis.Redis) -> None:
    ids = fill(r, 120)
    dlq = DeadLetterQueue(r, "acme")
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = newest_first(dlq, "tasks", before=before, count=50)
        seen += [x.dlq_id for x in page.letters]
        pages += 1
        if page.older is None:
            break
        before = page.older
    assert seen == list(reversed(ids)) and pages == 3


def test_filters_on_reason_type_group_text_and_time_range(r: redis.Redis) -> None:
    ids = fill(r, 30)
    dlq = DeadLetterQueue(r, "acme")

    def found(**params: str) -> list[str]:
        return [x.dlq_id for x in newest_first(dlq, "tasks", DlqFilter.parse(params)).letters]

    assert found(reason="decode_error") == [ids[i] for i in range(29, -1, -1) if i % 3 == 0]
    assert found(event_type="TASK_FAILED") == found(group="g2")
    assert found(q="BOOM 17") == [ids[17]]
    assert found(since="1700000000010", until="1700000000012") == [ids[12], ids[11], ids[10]]
    assert found(reason="handler_failed", since="1700000000010", until="1700000000012") == [
        ids[11],
        ids[10],
    ]


def test_a_search_stops_at_its_budget_and_resumes_from_its_cursor(r: redis.Redis) -> None:
    ids = fill(r, 3000)
    dlq = DeadLetterQueue(r, "acme")
    flt = DlqFilter.parse({"q": "boom 5"})  # 5, 50..59, 500..599: sparse
    want = [ids[i] for i in reversed(range(3000)) if f"boom {i}".startswith("boom 5")]
    got: list[str] = []
    before, hits = None, 0
    while True:
        page = newest_first(dlq, "tasks", flt, before=before, count=50, budget_s=0)
        got += [x.dlq_id for x in page.letters]
        hits += page.budget_hit
        if page.older is None:
            break
        before = page.older
    assert got == want and hits > 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reason": "bored"}, "unknown reason 'bored'"),
        ({"event_type": "nope"}, "unknown event type 'nope'"),
        ({"group": "a:b"}, "invalid group name"),
        ({"since": "yesterday"}, "invalid 'since' time 'yesterday'"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "'since' is after 'until'"),
    ],
)
def test_a_filter_that_does_not_parse_says_why(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DlqFilter.parse(params)


def test_replay_matching_in_batches_resumes_and_replays_each_letter_once(
    r: redis.Redis,
) -> None:
    fill(r, 250)
    bus, dlq = TenantEventBus(r, "acme"), DeadLetterQueue(r, "acme")
    bus.ensure_group("tasks", "g1")
    flt = DlqFilter.parse({"reason": "handler_failed"})
    run = start_run(dlq, "tasks", "replay", flt)
    run_step(dlq, run, batch_size=40)
    run_step(dlq, run, batch_size=40)
    # The console dies here; a new owner resumes from the cursor it had recorded.
    resumed = start_run(dlq, "tasks", "replay", flt)
    resumed.cursor, resumed.end = run.cursor, run.end
    # A letter that fails again after the start is newer than the run's end: left alone.
    late = dlq.send_to_dlq("tasks", "9-9", event(), "again", 1, reason="handler_failed")
    while not resumed.finished:
        run_step(dlq, resumed, batch_size=40)
    replayed = r.xrange("t:{acme}:events:tasks:retry:g1")
    origins = [f[b"_replay_of"] for _, f in replayed]
    assert len(replayed) == 166 == run.done + resumed.done
    assert len(set(origins)) == 166  # each letter replayed once
    left = [x.dlq_id for x in dlq.list_dlq_messages("tasks", count=500)]
    assert late in left and len(left) == 84 + 1


def test_purge_matching_in_batches_deletes_only_the_matches(r: redis.Redis) -> None:
    fill(r, 90)
    dlq = DeadLetterQueue(r, "acme")
    run = start_run(dlq, "tasks", "purge", DlqFilter.parse({"group": "g2"}))
    while not run.finished:
        run_step(dlq, run, batch_size=7)
    assert run.done == 30 and dlq.count("tasks") == 60
    assert all(x.group == "g1" for x in dlq.list_dlq_messages("tasks", count=100))


def test_a_run_over_an_empty_range_is_finished_at_once(r: redis.Redis) -> None:
    dlq = DeadLetterQueue(r, "acme")
    run = start_run(dlq, "tasks", "replay", DlqFilter())
    assert run.finished and run_step(dlq, run) == []


def test_audit_entries_read_back_newest_first(r: redis.Redis) -> None:
    audit = AuditLog(r, "acme")
    audit.record(actor="ann", action="replay", stream="tasks", ids=["1-0"], count=1)
    audit.record(actor="bob", action="purge", stream="tasks", ids=["2-0", "3-0"], count=2)
    first, second = audit.recent()
    assert (first.actor, first.action, first.ids, first.count) == (
        "bob",
        "purge",
        ["2-0", "3-0"],
        2,
    )
    assert second.actor == "ann" and r.exists("t:{acme}:audit")
    assert audit.recent(before=first.audit_id) == [second]


def test_the_viewer_role_reads_everything_and_can_change_nothing(
    make_client: Callable[..., AnyRedis], r: AnyRedis
) -> None:
    fill(r, 5)
    viewer = next(u for u in tenant_users("acme", viewer_password="v") if u.role == "viewer")
    assert "%R~t:{acme}:*" in viewer.setuser_line()
    on_every_node(r, "ACL", "SETUSER", *viewer.setuser_args())
    try:
        client = make_client(username=viewer.username, password="v")
        dlq = DeadLetterQueue(client, "acme")
        page = newest_first(dlq, "tasks")
        assert len(page.letters) == 5 and AuditLog(client, "acme").recent() == []
        with pytest.raises(BusRefused, match="NoPermissionError"):
            dlq.purge("tasks", ids=["0-0"])
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.xadd("t:{acme}:audit", {"x": "1"})
        with pytest.raises(BusRefused, match="NoPermissionError"):
            newest_first(DeadLetterQueue(client, "globex"), "tasks")
    finally:
        on_every_node(r, "ACL", "DELUSER", viewer.username)
