"""Small helpers for the integration tests: events, fast consumer settings, a loop thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.cluster import RedisCluster

from eventbus import (
    AgentEvent,
    ConsumerSettings,
    DeadLetterQueue,
    EventConsumer,
    EventType,
    TenantEventBus,
)
from eventbus.handler import Handler
from eventbus.redis_io import AnyRedis
from tests.conftest import wait_for


def on_every_node(r: AnyRedis, *command: object) -> None:
    """Run an admin command (ACL SETUSER...) on the server, or on every node of a cluster:
    ACLs are per node."""
    if isinstance(r, RedisCluster):
        r.execute_command(*command, target_nodes=RedisCluster.ALL_NODES)
    else:
        r.execute_command(*command)


def client_list(r: AnyRedis) -> list[dict[str, Any]]:
    """CLIENT LIST of the server, or of every master of a cluster."""
    if isinstance(r, RedisCluster):
        per_node = r.client_list(target_nodes=RedisCluster.PRIMARIES)
        return [c for rows in per_node.values() for c in rows]
    return list(r.client_list())


#: Short waits everywhere so that the tests stay fast; retries 50 ms apart.
FAST = ConsumerSettings(block_ms=100, retry_poll_ms=50, reclaim_interval_s=60.0)
FAST_DELAYS = [0.05, 0.05, 0.05]


def make_event(tenant: str = "acme", **overrides: Any) -> AgentEvent:
    values: dict[str, Any] = {
        "event_type": EventType.TASK_ASSIGNED,
        "tenant_id": tenant,
        "source_agent_id": "planner",
        "call_chain": ["user", "planner"],
        "data": {"n": 0},
    }
    values.update(overrides)
    return AgentEvent(**values)


def consumer(
    bus: TenantEventBus,
    dlq: DeadLetterQueue,
    *,
    stream: str = "tasks",
    group: str = "workers",
    name: str = "c1",
    settings: ConsumerSettings = FAST,
    retry_delays: list[float] | None = None,
    **kwargs: Any,
) -> EventConsumer:
    delays = FAST_DELAYS if retry_delays is None else retry_delays
    return EventConsumer(
        bus, stream, group, name, dlq, settings=settings, retry_delays=delays, **kwargs
    )


class Recorder:
    """A handler that records the events it saw (with a monotonic timestamp) and can fail."""

    def __init__(self, fail: Callable[[AgentEvent, int], bool] = lambda e, n: False) -> None:
        self.calls: list[tuple[float, AgentEvent]] = []
        self._fail = fail
        self._lock = threading.Lock()

    def __call__(self, event: AgentEvent) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), event))
            attempt = sum(1 for _, e in self.calls if e.event_id == event.event_id)
        if self._fail(event, attempt):
            raise RuntimeError(f"handler failed on attempt {attempt}")

    def ids(self) -> list[str]:
        with self._lock:
            return [e.event_id for _, e in self.calls]

    def times_of(self, event_id: str) -> list[float]:
        with self._lock:
            return [t for t, e in self.calls if e.event_id == event_id]


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The captured log entries (structlog.testing.capture_logs) of one event name."""
    return [e for e in logs if e["event"] == event]


def always_fail(event: AgentEvent, attempt: int) -> bool:
    return True


@contextmanager
def running(c: EventConsumer, handler: Handler, stop_within_s: float = 30.0) -> Iterator[None]:
    """Run ``c.process_loop(handler)`` in a thread; stop it and check it ended on exit."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            c.process_loop(handler)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"loop-{c.consumer_name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        c.stop()
        thread.join(stop_within_s)
    assert not thread.is_alive(), "process_loop did not stop"
    assert not errors, f"process_loop raised {errors[0]!r}"


def drain(
    c: EventConsumer, handler: Handler, until: Callable[[], object], timeout_s: float = 30.0
) -> None:
    """Run ``process_batch`` rounds (20 ms reads) until ``until()`` is truthy (bounded)."""

    def one_round_then_check() -> object:
        c.process_batch(handler, block_ms=20)
        return until()

    wait_for(one_round_then_check, timeout_s)
