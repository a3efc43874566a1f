from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus import TenantEventBus
from tests.process.pool import TENANT, Pool
from workers.tools.localredis import LocalRedis


@pytest.fixture
def pools(redis_server: LocalRedis, r: redis.Redis, tmp_path: Path) -> Iterator[list[Pool]]:
    """Pools started by a test; whatever is left is killed at the end."""
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.kill_all()


@pytest.fixture
def tbus(r: redis.Redis) -> TenantEventBus:
    return TenantEventBus(r, TENANT)


@pytest.fixture
def make_pool(redis_server: LocalRedis, tmp_path: Path, pools: list[Pool]):  # type: ignore[no-untyped-def]
    def make(**kwargs: object) -> Pool:
        pool = Pool(redis_server, tmp_path, **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    return make
