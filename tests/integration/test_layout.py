"""Key layout 1 -> 2: old keys are found and renamed with their data, TTLs and groups;
nothing is overwritten or silently dropped."""

from __future__ import annotations

import redis

from eventbus import AgentEvent, EventType, TenantEventBus
from eventbus.layout import legacy_hint, legacy_keys, migrate


def _layout_1(r: redis.Redis) -> None:
    """What a layout-1 deployment of tenant acme left behind (plus another tenant's key)."""
    r.xadd("t:acme:events:tasks", {"x": "1"})
    r.xgroup_create("t:acme:events:tasks", "workers", id="0")
    r.set("t:acme:dedupe:tasks:e-1", "1-0", px=600_000)
    r.sadd("t:acme:streams", "tasks")
    r.xadd("t:globex:events:tasks", {"x": "2"})


def test_legacy_keys_lists_only_the_tenants_layout_1_keys(r: redis.Redis) -> None:
    _layout_1(r)
    TenantEventBus(r, "acme").publish("tasks", _event())  # a layout-2 key: not listed

    assert legacy_keys(r, "acme") == [
        "t:acme:dedupe:tasks:e-1",
        "t:acme:events:tasks",
        "t:acme:streams",
    ]


def test_migrate_renames_with_groups_and_ttls_and_the_bus_reads_them(r: redis.Redis) -> None:
    _layout_1(r)

    done = migrate(r, "acme")

    assert ("t:acme:events:tasks", "t:{acme}:events:tasks") in done.renamed
    assert len(done.renamed) == 3 and done.conflicts == []
    assert legacy_keys(r, "acme") == []
    assert r.xinfo_groups("t:{acme}:events:tasks")[0]["name"] == b"workers"
    assert 0 < r.pttl("t:{acme}:dedupe:tasks:e-1") <= 600_000
    assert r.exists("t:globex:events:tasks") == 1  # another tenant's key is not touched
    read = r.xreadgroup("workers", "c", {TenantEventBus(r, "acme").keys.stream("tasks"): ">"})
    assert [fields for _, fields in read[0][1]] == [{b"x": b"1"}]


def test_migrate_never_overwrites_a_layout_2_key(r: redis.Redis) -> None:
    _layout_1(r)
    r.sadd("t:{acme}:streams", "other")

    done = migrate(r, "acme")

    assert done.conflicts == [("t:acme:streams", "t:{acme}:streams")]
    assert r.smembers("t:acme:streams") == {b"tasks"}  # kept, reported
    assert r.smembers("t:{acme}:streams") == {b"other"}


def test_a_run_that_died_between_restore_and_del_is_finished_by_the_next(r: redis.Redis) -> None:
    _layout_1(r)
    # what a crash right after RESTORE (before the DEL) leaves: both names, same value
    r.restore("t:{acme}:events:tasks", 0, r.dump("t:acme:events:tasks"))

    done = migrate(r, "acme")

    assert ("t:acme:events:tasks", "t:{acme}:events:tasks") in done.renamed
    assert done.conflicts == [] and legacy_keys(r, "acme") == []
    assert r.xinfo_groups("t:{acme}:events:tasks")[0]["name"] == b"workers"


def test_dry_run_renames_nothing(r: redis.Redis) -> None:
    _layout_1(r)

    done = migrate(r, "acme", dry_run=True)

    assert len(done.renamed) == 3
    assert len(legacy_keys(r, "acme")) == 3


def _event() -> AgentEvent:
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id="acme",
        source_agent_id="planner",
        call_chain=["planner"],
    )


def test_legacy_hint_finds_the_old_registry_or_stream_without_a_scan(r: redis.Redis) -> None:
    assert legacy_hint(r, "acme", "tasks") is None
    r.xadd("t:acme:events:tasks", {"x": "1"})
    assert legacy_hint(r, "acme", "tasks") == "t:acme:events:tasks"
    assert legacy_hint(r, "acme", "billing") is None  # another stream, no old registry
    r.sadd("t:acme:streams", "tasks")
    assert legacy_hint(r, "acme", "billing") == "t:acme:streams"
