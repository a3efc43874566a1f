"""Shared fixtures: a private redis-server for the session (never the user's Redis)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from hypothesis import HealthCheck, settings

from eventbus import DeadLetterQueue, TenantEventBus
from workers.tools.localredis import LocalRedis

# Timing on a loaded 2-core machine says nothing about correctness: no per-example deadline.
settings.register_profile("eventbus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("eventbus")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def r(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def bus(r: redis.Redis) -> TenantEventBus:
    return TenantEventBus(r, "acme")


@pytest.fixture
def dlq(r: redis.Redis) -> DeadLetterQueue:
    return DeadLetterQueue(r, "acme")


#: Environment variable that replays the random choices of a test (see the ``seed`` fixture).
SEED_ENV = "EVENTBUS_TEST_SEED"


@pytest.fixture
def seed() -> int:
    """The seed of a test that draws at random: ``$EVENTBUS_TEST_SEED`` to replay a run,
    else a fresh one. Printed (pytest shows it with a failure); put it in assertion messages."""
    raw = os.environ.get(SEED_ENV, "").strip()
    value = int(raw) if raw else random.randrange(1 << 31)
    print(f"random seed {value} (replay: {SEED_ENV}={value})")
    return value


def wait_for(
    condition: Callable[[], object], timeout_s: float = 30.0, interval_s: float = 0.01
) -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout_s``.

    The bound only turns "never" into a failure: keep it generous (a loaded machine is
    slow, and the test must check the guarantee, not the speed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {condition}")
        time.sleep(interval_s)
