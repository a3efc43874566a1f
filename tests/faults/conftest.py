"""Fixtures of the fault suite: a private redis-server per test (AOF, fsync always, DEBUG
allowed from loopback), a ledger, pools that are always cleaned up, and a summary of every
test's ledger at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus import TenantEventBus
from tests.faults.harness import FaultPool, redis_args
from tests.faults.ledger import REPORTS, Ledger
from tests.process.pool import STREAM, TENANT
from workers.tools.localredis import LocalRedis


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    """A redis-server of the test's own (tests kill it), AOF with appendfsync always."""
    with LocalRedis(appendonly=True, appendfsync="always", extra_args=redis_args()) as srv:
        yield srv


@pytest.fixture
def client(server: LocalRedis) -> Iterator[redis.Redis]:
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def tbus(client: redis.Redis) -> TenantEventBus:
    return TenantEventBus(client, TENANT)


@pytest.fixture
def ledger(tmp_path: Path, client: redis.Redis, tbus: TenantEventBus) -> Ledger:
    return Ledger(tmp_path / "ledger.jsonl", client, tbus.keys.dlq(STREAM))


@pytest.fixture
def make_pool(server: LocalRedis, tmp_path: Path) -> Iterator[Callable[..., FaultPool]]:
    started: list[FaultPool] = []

    def make(**kwargs: Any) -> FaultPool:
        pool = FaultPool(server, tmp_path, **kwargs)
        started.append(pool)
        return pool

    yield make
    for pool in started:
        pool.kill_all()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    terminalreporter.section("fault suite ledgers")
    for name, line in REPORTS:
        terminalreporter.write_line(f"{name}: {line}")
