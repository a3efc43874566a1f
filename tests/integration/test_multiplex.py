"""Many subscriptions in one process (eventbus.multiplex) on a real Redis: every tenant's
events handled with the same guarantees, one blocking read, fair order, in-flight gate."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import redis
from structlog.testing import capture_logs

from eventbus import DeadLetterQueue, HandlerContext, TenantEventBus, wants_context
from eventbus.multiplex import IDLE_GRID_S, MAINTENANCE_GRID_S, Multiplexer
from eventbus.schemas import AgentEvent
from tests.conftest import wait_for
from tests.integration.helpers import FAST, consumer, make_event

TENANTS = ("acme", "globex", "initech")


def _member(
    mux: Multiplexer, r: redis.Redis, tenant: str, stream: str, handler: object, **kwargs: object
) -> TenantEventBus:
    bus = TenantEventBus(r, tenant)
    c = consumer(bus, DeadLetterQueue(r, tenant), stream=stream, name=mux.consumer_name)
    mux.add(c, handler, **kwargs)  # type: ignore[arg-type]
    return bus


@contextmanager
def running(mux: Multiplexer) -> Iterator[None]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            mux.run()
        except BaseException as exc:  # surfaced in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        mux.stop()
        thread.join(30)
    assert not thread.is_alive(), "the multiplexer did not stop"
    assert not errors, f"run raised {errors[0]!r}"


class Seen:
    def __init__(self, fail_tenant: str = "") -> None:
        self.calls: list[tuple[str, str, str]] = []  # (ctx.tenant, ctx.stream, event tenant)
        self.fail_tenant = fail_tenant
        self.lock = threading.Lock()

        @wants_context
        def handler(event: AgentEvent, ctx: HandlerContext) -> None:
            self.handle(event, ctx)

        self.handler = handler

    def handle(self, event: AgentEvent, ctx: HandlerContext) -> None:
        with self.lock:
            self.calls.append((ctx.tenant, ctx.stream, event.tenant_id))
        ctx.log.info("handling")
        if ctx.tenant == self.fail_tenant and ctx.retry_count == 0:
            raise RuntimeError("first attempt fails")


def test_every_subscription_is_handled_acked_and_told_its_tenant(r: redis.Redis) -> None:
    mux = Multiplexer("w-0", block_ms=100)
    seen = Seen(fail_tenant="globex")
    buses = {}
    for tenant in TENANTS:
        for stream in ("tasks", "reviews"):
            buses[tenant, stream] = _member(mux, r, tenant, stream, seen.handler)
    for (tenant, stream), bus in buses.items():
        for _ in range(5):
            bus.publish(stream, make_event(tenant))
    with capture_logs() as logs, running(mux):
        # globex's events fail once each: they come back as retries through promotion
        wait_for(lambda: len(seen.calls) == 30 + 10)
        wait_for(lambda: all(not b.get_pending(s, "workers") for (_, s), b in buses.items()))
    assert all(ctx_tenant == tenant for ctx_tenant, _, tenant in seen.calls)
    counts = Counter((t, s) for t, s, _ in seen.calls)
    assert counts[("acme", "tasks")] == 5 and counts[("globex", "reviews")] == 10
    handling = [e for e in logs if e["event"] == "handling"]
    assert handling and all("tenant" in e and "stream" in e for e in handling)


def test_a_quiet_tenant_is_not_stuck_behind_a_noisy_backlog(r: redis.Redis) -> None:
    order: list[str] = []

    def handler(event: AgentEvent) -> None:
        order.append(event.tenant_id)
        if event.tenant_id == "noisy":
            time.sleep(0.002)  # the backlog takes seconds to clear

    mux = Multiplexer("w-0", block_ms=100, count=50)
    noisy = _member(mux, r, "noisy", "tasks", handler)
    quiet = _member(mux, r, "quiet", "tasks", handler)
    noisy.publish_many("tasks", [make_event("noisy") for _ in range(1000)])
    with running(mux):
        wait_for(lambda: len(order) >= 50)
        for _ in range(10):
            quiet.publish("tasks", make_event("quiet"))
        wait_for(lambda: order.count("quiet") == 10)
        noisy_by_then = order.count("noisy")
        wait_for(lambda: order.count("noisy") == 1000)
    # all ten quiet events went in while most of the backlog was still waiting
    assert noisy_by_then < 900, noisy_by_then


def test_a_retry_due_after_the_idle_grid_is_kept_to_the_maintenance_grid(r: redis.Redis) -> None:
    """A retry due later than IDLE_GRID_S wakes the worker on the fine grid (at most
    MAINTENANCE_GRID_S after its time), not on the coarse grid of idle polls."""
    mux = Multiplexer("w-0", block_ms=100)
    bus = TenantEventBus(r, "acme")
    settings = replace(FAST, retry_poll_ms=60_000)  # no poll before the retry's time
    c = consumer(bus, DeadLetterQueue(r, "acme"), name="w-0", settings=settings,
                 retry_delays=[IDLE_GRID_S + 0.5])  # fmt: skip
    attempts: list[int] = []

    @wants_context
    def handler(event: AgentEvent, ctx: HandlerContext) -> None:
        attempts.append(ctx.retry_count)
        if ctx.retry_count == 0:
            raise RuntimeError("first attempt fails")

    mux.add(c, handler)
    bus.publish("tasks", make_event("acme"))
    wait_for(lambda: mux.round() >= 0 and attempts == [0])
    key = ("acme", "tasks", "workers")
    assert c.retry_due
    assert 0 <= mux._due_at[key] - c.maintenance_due_at() <= MAINTENANCE_GRID_S
    wait_for(lambda: mux.round() >= 0 and attempts == [0, 1])
    assert not bus.get_pending("tasks", "workers")
