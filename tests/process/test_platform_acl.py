"""A platform pool under its least-privilege user (``eventbus acl --platform``): tenants
registered by the provisioner (``eventbus tenants add``) are consumed; the tenants' own
users can neither read nor change the registry, the provisioner cannot touch tenant data,
the pool's user cannot scan the keyspace; ``eventbus stats --all-tenants`` lists every
tenant's groups by lag."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus import TenantEventBus
from eventbus.acl import tenant_users
from eventbus.keys import platform_tenants
from tests.conftest import wait_for
from tests.process.pool import HANDLER, Pool, tenant_event
from workers.tools.localredis import LocalRedis

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as srv:
        admin = srv.client()
        proc = run_cli("acl", "--platform", "--pool-password", "pp", "--provisioner-password", "vp")
        assert proc.returncode == 0, proc.stderr
        for line in proc.stdout.splitlines():
            admin.execute_command(*shlex.split(line))
        for tenant in ("acme", "globex"):
            for user in tenant_users(tenant, worker_password="w", publisher_password="p"):
                admin.execute_command("ACL", "SETUSER", *user.setuser_args())
        yield srv


def url(srv: LocalRedis, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{srv.port}/0"


def test_the_platform_pool_runs_under_its_least_privilege_user(
    server: LocalRedis, tmp_path: Path
) -> None:
    provisioner = url(server, "eventbus-platform-provisioner", "vp")
    added = run_cli("tenants", "--redis-url", provisioner, "add", "acme", "globex")
    assert added.returncode == 0, added.stderr
    listed = run_cli("tenants", "--redis-url", provisioner, "list")
    assert listed.stdout.split() == ["acme", "globex"]

    config = tmp_path / "pool.toml"
    config.write_text(
        f'[[subscription]]\ntenant = "*"\nstream = "tasks"\ngroup = "agents"\n'
        f'handler = "{HANDLER}"\n'
    )
    pool = Pool(server, tmp_path, processes=2, config=config)
    pool.args[pool.args.index("--redis-url") + 1] = url(server, "eventbus-platform-pool", "pp")
    try:
        pool.start()
        ids = set()
        for tenant in ("acme", "globex"):
            publisher = server.client(username=f"eventbus-{tenant}-publisher", password="p")
            for i in range(5):
                event = tenant_event(tenant, i=i)
                ids.add(event.event_id)
                TenantEventBus(publisher, tenant).publish("tasks", event)
        wait_for(lambda: ids <= pool.done_ids(), 60)
        stats = run_cli("stats", "--all-tenants", "--json", "--redis-url", pool.args[1])
        assert stats.returncode == 0, stats.stderr
        rows = json.loads(stats.stdout)["groups"]
        assert {(r["tenant"], r["stream"], r["group"]) for r in rows} == {
            ("acme", "tasks", "agents"),
            ("globex", "tasks", "agents"),
        }
        assert pool.stop() == 0
    finally:
        pool.kill_all()
    text = pool.log_path.read_text()
    assert "NOPERM" not in text and "job_tick_failed" not in text


def test_nobody_reaches_beyond_their_part(server: LocalRedis) -> None:
    tenant_worker = server.client(username="eventbus-acme-worker", password="w")
    for command in (("SMEMBERS", platform_tenants()), ("SADD", platform_tenants(), "evil")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            tenant_worker.execute_command(*command)
    provisioner = server.client(username="eventbus-platform-provisioner", password="vp")
    with pytest.raises(redis.exceptions.NoPermissionError):
        provisioner.xlen(TenantEventBus(tenant_worker, "acme").keys.stream("tasks"))
    pool = server.client(username="eventbus-platform-pool", password="pp")
    for command in (("KEYS", "*"), ("SCAN", "0"), ("SADD", platform_tenants(), "evil")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            pool.execute_command(*command)


def test_acl_wants_a_tenant_or_platform() -> None:
    for args in ((), ("acme", "--platform")):
        proc = run_cli("acl", *args)
        assert proc.returncode == 2
        assert "give TENANT or --platform" in proc.stderr
