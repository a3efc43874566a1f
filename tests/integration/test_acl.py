"""Tenant isolation enforced by Redis ACLs: the library and the pool run under a tenant's
restricted users, and those users get NOPERM on everything of another tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus import (
    AgentEvent,
    DeadLetterQueue,
    EventConsumer,
    EventType,
    InvalidName,
    TenantEventBus,
    TenantMismatch,
)
from eventbus.acl import FORBIDDEN, ROLES, TenantUser, tenant_users
from eventbus.errors import BusRefused
from eventbus.scripts import load_source
from tests.conftest import wait_for
from workers.tools.localredis import LocalRedis


@pytest.fixture(scope="module")
def acl_server() -> Iterator[LocalRedis]:
    # DEBUG enabled by config, so that only the ACL can be what refuses it.
    with LocalRedis(extra_args=["--enable-debug-command", "yes"]) as server:
        admin = server.client()
        for tenant in ("acme", "globex"):
            for user in tenant_users(
                tenant, worker_password="w-" + tenant, publisher_password="p-" + tenant
            ):
                admin.execute_command("ACL", "SETUSER", *user.setuser_args())
        admin.close()
        yield server


def client_as(server: LocalRedis, tenant: str, role: str) -> redis.Redis:
    password = ("w-" if role == "worker" else "p-") + tenant
    return server.client(username=f"eventbus-{tenant}-{role}", password=password)


def ev(tenant: str = "acme", **data: object) -> AgentEvent:
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id=tenant,
        source_agent_id="a",
        call_chain=["a"],
        data=data,
    )


def test_roles_grant_no_dangerous_command() -> None:
    for role, commands in ROLES.items():
        assert not set(commands) & set(FORBIDDEN), role
    user = TenantUser("u", "pw", "worker", "acme")
    line = user.setuser_line()
    assert "~t:{acme}:*" in line and "-@all" in line and "allkeys" not in line


def test_whole_library_path_works_under_the_tenant_worker_user(acl_server: LocalRedis) -> None:
    r = client_as(acl_server, "acme", "worker")
    bus, dlq = TenantEventBus(r, "acme"), DeadLetterQueue(r, "acme")
    bus.publish_many("tasks", [ev(i=i) for i in range(3)])
    failing = ev(fail=True)
    bus.publish("tasks", failing)
    consumer = EventConsumer(bus, "tasks", "g", "c1", dlq, retry_delays=[0.05])
    handled: list[str] = []

    def handler(event: AgentEvent) -> None:
        if event.data.get("fail"):
            raise RuntimeError("no")
        handled.append(event.event_id)

    rounds: list[int] = []

    def one_round() -> bool:
        rounds.append(consumer.process_batch(handler, block_ms=50))
        return dlq.count("tasks") == 1

    wait_for(one_round)
    assert len(handled) == 3
    # Three handled, and the failing event's 4 attempts (3 retries, then the DLQ).
    assert sum(rounds) == 3 + 4
    (letter,) = dlq.list_dlq_messages("tasks")
    dlq.replay_message("tasks", letter.dlq_id)
    assert dlq.count("tasks") == 0
    assert consumer.reclaim_abandoned(1) == []
    assert bus.get_stream_info("tasks")["length"] == 4
    assert bus.streams() == ["tasks"]
    assert dlq.purge("tasks") == 0


def test_publisher_user_can_publish_but_not_consume(acl_server: LocalRedis) -> None:
    r = client_as(acl_server, "acme", "publisher")
    bus = TenantEventBus(r, "acme")
    assert bus.publish("orders", ev())
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.xreadgroup("g", "c", {"t:{acme}:events:orders": ">"})


@pytest.mark.parametrize(
    "attack",
    [
        lambda r: r.xadd("t:{globex}:events:tasks", {"x": "1"}),
        lambda r: r.xrange("t:{globex}:events:tasks"),
        lambda r: r.xlen("t:{globex}:events:tasks"),
        lambda r: r.xreadgroup("g", "c", {"t:{globex}:events:tasks": ">"}),
        lambda r: r.xread({"t:{globex}:events:tasks": "0"}),
        lambda r: r.xgroup_create("t:{globex}:events:tasks", "g", id="0", mkstream=True),
        lambda r: r.xack("t:{globex}:events:tasks", "g", "1-0"),
        lambda r: r.xautoclaim("t:{globex}:events:tasks", "g", "c", 0),
        lambda r: r.get("t:{globex}:dedupe:tasks:x"),
        lambda r: r.zadd("t:{globex}:sched:tasks:g", {"m": 1}),
        lambda r: r.smembers("t:{globex}:streams"),
        lambda r: r.register_script(load_source("publish.lua"))(
            keys=["t:{globex}:events:tasks", "t:{globex}:dedupe:tasks:x", "t:{globex}:streams"],
            args=[1000, 0, 0, "tasks", "event_id", "x"],
        ),
        lambda r: r.register_script(load_source("replay.lua"))(
            keys=["t:{globex}:events:tasks:dlq", "t:{acme}:events:tasks"], args=["1-0"]
        ),
        lambda r: r.keys("*"),
        lambda r: r.scan(0),
        lambda r: r.flushall(),
        lambda r: r.flushdb(),
        lambda r: r.config_get("*"),
        lambda r: r.execute_command("DEBUG", "SLEEP", "0"),
        lambda r: r.eval("return 1", 0),
        lambda r: r.sort("t:{acme}:events:tasks"),
        lambda r: r.execute_command("ACL", "WHOAMI"),
    ],
)
def test_tenant_credentials_get_noperm_on_other_tenants_keys_and_global_commands(
    acl_server: LocalRedis, attack
) -> None:
    for role in ("worker", "publisher"):
        r = client_as(acl_server, "acme", role)
        with pytest.raises(redis.exceptions.NoPermissionError):
            attack(r)


def test_a_bus_named_for_another_tenant_is_refused_by_redis(acl_server: LocalRedis) -> None:
    r = client_as(acl_server, "acme", "worker")
    with pytest.raises(BusRefused, match="NoPermissionError"):
        TenantEventBus(r, "globex").publish("tasks", ev("globex"))


@pytest.mark.parametrize(
    "name", ["acme:evil", "*", "{x}", "../globex", "x" * 200, "", "a b", "t:{globex}:events"]
)
def test_no_crafted_name_reaches_a_key_outside_the_tenant(acl_server: LocalRedis, name) -> None:
    r = client_as(acl_server, "acme", "worker")
    bus, dlq = TenantEventBus(r, "acme"), DeadLetterQueue(r, "acme")
    for call in (
        lambda: bus.publish(name, ev()),
        lambda: bus.subscribe(name, "g", "c"),
        lambda: bus.subscribe("tasks", name, "c"),
        lambda: bus.subscribe("tasks", "g", name),
        lambda: dlq.list_dlq_messages(name),
        lambda: TenantEventBus(r, name),
    ):
        with pytest.raises(InvalidName):
            call()
    with pytest.raises(TenantMismatch):
        bus.publish("tasks", ev("globex"))


def test_pool_runs_under_the_restricted_worker_user(acl_server: LocalRedis, tmp_path: Path) -> None:
    from tests.process.pool import GROUP, STREAM, Pool, event

    worker = next(u for u in tenant_users("acme", worker_password="w-acme") if u.role == "worker")
    pool = Pool(
        acl_server,
        tmp_path,
        processes=2,
        args=["--reclaim-interval-s", "0.2", "--sweep-interval-s", "0.2"],
    )
    pool.args[pool.args.index("--redis-url") + 1] = worker.url(port=acl_server.port)
    try:
        pool.start()
        bus = TenantEventBus(client_as(acl_server, "acme", "publisher"), "acme")
        events = [event(i=i) for i in range(20)]
        bus.publish_many(STREAM, events)
        wait_for(lambda: {e.event_id for e in events} <= pool.done_ids(), 30)
        wait_for(lambda: len(pool.logged("sweep")) >= 2, 30)
        assert pool.stop() == 0
    finally:
        pool.kill_all()
    text = pool.log_path.read_text()
    assert "NOPERM" not in text and "job_tick_failed" not in text
    assert GROUP in text
