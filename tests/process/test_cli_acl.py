"""``eventbus acl``: the printed lines create working, tenant-bound users."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
import redis

from eventbus import AgentEvent, EventType, TenantEventBus
from workers.tools.localredis import LocalRedis


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True, timeout=30
    )


def test_acl_lines_applied_by_an_admin_give_a_tenant_bound_worker(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    proc = run_cli(
        "acl", "acme", "--worker-password", "s3cret", "--publisher-password", "p",
        "--viewer-password", "v",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [
        "eventbus-acme-worker",
        "eventbus-acme-publisher",
        "eventbus-acme-viewer",
    ]
    for line in lines:
        assert r.execute_command(*shlex.split(line))  # ACL SETUSER ...
    try:
        worker = redis_server.client(username="eventbus-acme-worker", password="s3cret")
        bus = TenantEventBus(worker, "acme")
        event = AgentEvent(
            event_type=EventType.AGENT_HEALTH,
            tenant_id="acme",
            source_agent_id="a",
            call_chain=["a"],
        )
        assert bus.publish("health", event)
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.xadd("t:{globex}:events:health", {"x": "1"})
    finally:
        r.execute_command(
            "ACL", "DELUSER", "eventbus-acme-worker", "eventbus-acme-publisher",
            "eventbus-acme-viewer",
        )  # fmt: skip


def test_acl_refuses_a_bad_tenant_in_one_line() -> None:
    proc = run_cli("acl", "acme:*")
    assert proc.returncode == 1
    assert proc.stderr.startswith("eventbus: error: invalid tenant id 'acme:*'")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
