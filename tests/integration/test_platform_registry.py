"""The platform's tenant registry and ``stats --all-tenants`` rows on a real Redis."""

from __future__ import annotations

import pytest
import redis

from eventbus import TenantEventBus
from eventbus.errors import InvalidName
from eventbus.platform import TenantRegistry
from tests.integration.helpers import make_event
from workers.cli.platform import all_tenants_rows


def test_registry_adds_removes_and_lists_valid_tenant_ids(r: redis.Redis) -> None:
    registry = TenantRegistry(r)
    assert registry.add("globex", "acme") == 2
    assert registry.add("acme") == 0
    r.sadd(registry.key, "not a tenant!")  # written by hand: skipped, not trusted
    assert registry.tenants() == ["acme", "globex"]
    assert registry.remove("globex") == 1
    assert registry.tenants() == ["acme"]
    with pytest.raises(InvalidName, match="acme:\\*"):
        registry.add("acme:*")


def test_all_tenants_rows_come_largest_lag_first(r: redis.Redis) -> None:
    TenantRegistry(r).add("acme", "globex", "idle")
    for tenant, backlog in (("acme", 2), ("globex", 5)):
        bus = TenantEventBus(r, tenant)
        bus.ensure_group("tasks", "agents")
        bus.publish_many("tasks", [make_event(tenant) for _ in range(backlog)])
    rows = all_tenants_rows(r)
    assert [(x["tenant"], x["lag"]) for x in rows] == [("globex", 5), ("acme", 2)]
    assert rows[0]["stream"] == "tasks" and rows[0]["group"] == "agents"
