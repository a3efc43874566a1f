"""Benchmark, fairness section: a real platform pool (``--config`` with a ``"*"``
subscription) and its baseline measured in the same run.

* quiet tenants publishing at a fixed rate: their p99 wait (publish -> handler start)
  beside a noisy tenant's backlog vs with the noisy tenant absent;
* throughput of the platform pool draining that backlog vs a pool of the one stream alone;
* 10 equally weighted backlogged tenants: the worst window's Jain index of events handled;
* weights 1:2:4: the largest relative error of the shares of handler time;
* idle: worker CPU and RSS of a pool subscribed to many tenant streams vs one stream;
* retries: one event per tenant stream of a many-tenant pool, failing twice
  (``retry_delays = [1, 8]``; ``[1, 3]`` in ``--smoke``): how late each retry starts
  (p50, p99; max printed), and the Redis commands per second per subscription while
  idle with those retries scheduled vs idle with nothing scheduled (``INFO
  commandstats``).

Handlers (``bench_handlers:fair``) sleep ``cost_s`` and append ``tenant sent received``
lines (monotonic ns) to a file; ``bench_handlers:retry_twice`` appends ``tenant attempt
started``.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from eventbus import AgentEvent, EventType, TenantEventBus
from eventbus.fairness import jain_index
from eventbus.multiplex import MAINTENANCE_GRID_S
from eventbus.platform import TenantRegistry
from workers.tools.bench_procs import PlatformPool
from workers.tools.bench_report import Line
from workers.tools.procs import cpu_s, rss_mb

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "workers.tools.bench_handlers:fair"
RETRY_HANDLER = "workers.tools.bench_handlers:retry_twice"
STREAM = "agents"


@dataclass(frozen=True)
class FairSizes:
    processes: int
    backlog: int  # the noisy tenant's backlog
    quiet: int  # quiet tenants
    quiet_rate: float  # events/s of each quiet tenant
    quiet_s: float  # seconds of quiet publishing per phase
    cost_s: float  # handler time per event
    equal_n: int  # backlog per tenant, 10 equal tenants and the 1:2:4 case
    window_s: float  # Jain's index window
    idle_streams: int  # tenant streams of the idle pool
    idle_s: float  # seconds of idle CPU measured
    retry_streams: int  # tenant streams of the retry pool (one event each)
    retry_delays: tuple[float, float]  # s: the first retry, the second (> the 2 s idle grid)


SIZES = {
    "normal": FairSizes(
        4, 100_000, 50, 5.0, 10.0, 0.001, 6_000, 10.0, 1_000, 20.0, 1_000, (1.0, 8.0)
    ),
    "quick": FairSizes(4, 20_000, 20, 5.0, 5.0, 0.001, 2_000, 2.0, 1_000, 10.0, 1_000, (1.0, 8.0)),
    "smoke": FairSizes(2, 1_500, 5, 5.0, 1.5, 0.001, 150, 0.5, 50, 1.0, 50, (1.0, 3.0)),
}
_MOST = max(SIZES.values(), key=lambda s: s.idle_streams)


def quiet_tenants(n: int) -> list[str]:
    return [f"bench-quiet{i}" for i in range(n)]


def idle_tenants(n: int) -> list[str]:
    return [f"bench-idle{i}" for i in range(n)]


def retry_tenants(n: int) -> list[str]:
    return [f"bench-retry{i}" for i in range(n)]


EQUAL = [f"bench-eq{i}" for i in range(10)]
WEIGHTS = {"bench-w1": 1, "bench-w2": 2, "bench-w4": 4}
NOISY, SOLO = "bench-noisy", "bench-solo"
#: Every tenant the section may write (cleanup on a Redis given with --redis-url).
TENANTS = [
    NOISY, SOLO, *EQUAL, *WEIGHTS,
    *quiet_tenants(max(s.quiet for s in SIZES.values())), *idle_tenants(_MOST.idle_streams),
    *retry_tenants(max(s.retry_streams for s in SIZES.values())),
]  # fmt: skip


def forget(client: redis.Redis) -> None:
    """Take the benchmark's tenants out of the platform registry."""
    TenantRegistry(client).remove(*TENANTS)


def _event(tenant: str, **data: object) -> AgentEvent:
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id=tenant,
        source_agent_id="bench",
        call_chain=["bench"],
        data=data,
    )


def _table(tenant: str, group: str, handler: str = HANDLER, **extra: object) -> str:
    rows = [
        "[[subscription]]", f'tenant = "{tenant}"', f'stream = "{STREAM}"',
        f'group = "{group}"', f'handler = "{handler}"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]  # fmt: skip
    return "\n".join(rows) + "\n"


def _backlog(client: redis.Redis, tenant: str, n: int, cost_s: float) -> None:
    bus = TenantEventBus(client, tenant)
    batch = []
    for _ in range(n):
        batch.append(_event(tenant, cost_s=cost_s, t=time.monotonic_ns()))
        if len(batch) == 100:
            bus.publish_many(STREAM, batch)
            batch = []
    if batch:
        bus.publish_many(STREAM, batch)


def _quiet(
    client: redis.Redis, tenants: list[str], rate: float, seconds: float, cost: float
) -> int:
    """Each tenant publishes ``rate`` events/s for ``seconds`` (spread evenly)."""
    buses = [TenantEventBus(client, t) for t in tenants]
    gap = 1.0 / (rate * len(tenants))
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        bus = buses[sent % len(buses)]
        bus.publish(STREAM, _event(bus.tenant_id, cost_s=cost, t=time.monotonic_ns()))
        sent += 1
        next_at = start + sent * gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def _rate(rows: list[tuple[str, int, int]], tenant: str) -> float:
    """Events/s (of every tenant) between the first and the last handler start of
    ``tenant``'s events."""
    own = [r for t, _, r in rows if t == tenant]
    first, last = min(own), max(own)
    span = (last - first) / 1e9
    n = sum(1 for _, _, r in rows if first <= r <= last)
    return n / span if span > 0 else float("nan")


def _p99_ms(rows: list[tuple[str, int, int]], tenants: set[str], since_ns: int) -> float:
    waits = sorted((r - s) / 1e6 for t, s, r in rows if t in tenants and s >= since_ns)
    return waits[int(0.99 * (len(waits) - 1))] if waits else float("nan")


class Fairness:
    def __init__(
        self, url: str, client: redis.Redis, sizes: FairSizes, say: Callable[[str], None]
    ) -> None:
        self.url = url
        self.client = client
        self.sizes = sizes
        self.say = say
        self.tmp = Path(tempfile.mkdtemp(prefix="eventbus-bench-fair-"))
        self.registry = TenantRegistry(client)
        self.lines: list[Line] = []

    def line(self, name: str, unit: str, baseline: str) -> Line:
        line = Line("fairness", name, unit, baseline=baseline)
        self.lines.append(line)
        return line

    def run(self) -> list[Line]:
        try:
            self.noisy_and_quiet()
            self.equal_and_weighted()
            self.idle()
            self.retries()
        finally:
            forget(self.client)
        return self.lines

    # -- noisy backlog, quiet tenants ---------------------------------------------------

    def noisy_and_quiet(self) -> None:
        sz = self.sizes
        quiet = quiet_tenants(sz.quiet)
        self.registry.add(NOISY, *quiet)
        pool = PlatformPool(self.url, self.tmp, "noisy", _table("*", "fair"), sz.processes)
        try:
            pool.start().wait_ready()
            self.say("fairness: quiet tenants alone")
            since = time.monotonic_ns()
            sent = _quiet(self.client, quiet, sz.quiet_rate, sz.quiet_s, sz.cost_s)
            rows = pool.wait_handled(sent)
            alone = _p99_ms(rows, set(quiet), since)
            self.say("fairness: quiet tenants beside a noisy backlog")
            done_before = len(rows)
            _backlog(self.client, NOISY, sz.backlog, sz.cost_s)
            since = time.monotonic_ns()
            sent2 = _quiet(self.client, quiet, sz.quiet_rate, sz.quiet_s, sz.cost_s)
            rows = pool.wait_handled(done_before + sent2 + sz.backlog)
            beside = _p99_ms(rows, set(quiet), since)
            rate = _rate(rows[done_before:], NOISY)
            noisy_at = [r for t, _, r in rows if t == NOISY]
            still_backlogged = max(noisy_at) > since + int(sz.quiet_s * 1e9)
        finally:
            pool.stop()
        wait = self.line(
            f"quiet tenants' p99 wait, noisy backlog / absent, {sz.quiet} x {sz.quiet_rate:g}/s",
            "ms",
            baseline="noisy absent",
        )
        wait.ours, wait.plain, wait.target = [beside], [alone], ("ratio<=", 2.0)
        if not still_backlogged:
            wait.name += " (backlog ran out: enlarge it)"
        alone_rate = self.one_stream_rate()
        thr = self.line(
            f"platform pool draining {sz.backlog:,} / pool of that stream alone",
            "ev/s",
            baseline="one stream",
        )
        thr.ours, thr.plain, thr.target = [rate], [alone_rate], ("ratio>=", 0.8)

    def one_stream_rate(self) -> float:
        sz = self.sizes
        self.say("fairness: the same backlog, a pool of one stream")
        tables = _table(SOLO, "solo")
        pool = PlatformPool(self.url, self.tmp, "solo", tables, sz.processes)
        # one concrete subscription: the supervisor runs today's single-stream worker
        try:
            _backlog(self.client, SOLO, sz.backlog, sz.cost_s)
            pool.start()
            return _rate(pool.wait_handled(sz.backlog), SOLO)
        finally:
            pool.stop()

    # -- equal and weighted shares --------------------------------------------------------

    def equal_and_weighted(self) -> None:
        sz = self.sizes
        equal = EQUAL
        self.say("fairness: 10 equal backlogged tenants")
        rows = self._drain(
            "equal", "".join(_table(t, "eq") for t in equal), equal, [sz.equal_n] * 10
        )
        jain = self._worst_window_jain(rows, equal)
        line = self.line(
            f"10 equal backlogged tenants: worst {sz.window_s:g} s window's Jain index",
            "index",
            baseline="perfectly fair",
        )
        line.ours, line.plain, line.target = [jain], [1.0], ("ratio>=", 0.95)

        self.say("fairness: weights 1:2:4")
        weights = WEIGHTS
        tables = "".join(_table(t, "w", weight=w) for t, w in weights.items())
        rows = self._drain("weighted", tables, list(weights), [sz.equal_n * w for w in (1, 2, 4)])
        error = self._weight_error(rows, weights)
        line = self.line(
            "weights 1:2:4: largest share error while all backlogged", "%", baseline="bound"
        )
        line.ours, line.plain, line.target = [max(error, 0.01)], [10.0], ("ours<=", 10.0)

    def _drain(
        self, name: str, tables: str, tenants: list[str], counts: list[int]
    ) -> list[tuple[str, int, int]]:
        # every backlog is down before the pool starts (its groups read from the start)
        for tenant, n in zip(tenants, counts, strict=True):
            _backlog(self.client, tenant, n, self.sizes.cost_s)
        pool = PlatformPool(self.url, self.tmp, name, tables, self.sizes.processes)
        try:
            pool.start()
            return pool.wait_handled(sum(counts))
        finally:
            pool.stop()

    def _all_backlogged(
        self, rows: list[tuple[str, int, int]], tenants: list[str]
    ) -> list[tuple[str, int]]:
        """(tenant, received) while every tenant still had events waiting."""
        last = {t: max(r for x, _, r in rows if x == t) for t in tenants}
        first_done = min(last.values())
        start = min(r for _, _, r in rows)
        # leave out the start (workers reading their first batches) and the tail
        return [(t, r) for t, _, r in rows if start + 0.1 * (first_done - start) <= r <= first_done]

    def _worst_window_jain(self, rows: list[tuple[str, int, int]], tenants: list[str]) -> float:
        handled = self._all_backlogged(rows, tenants)
        windows: dict[int, Counter[str]] = defaultdict(Counter)
        start = min(r for _, r in handled)
        width = int(self.sizes.window_s * 1e9)
        for t, r in handled:
            windows[(r - start) // width][t] += 1
        full = [w for k, w in windows.items() if k < max(windows)] or list(windows.values())
        return min(jain_index([w[t] for t in tenants]) for w in full)

    def _weight_error(self, rows: list[tuple[str, int, int]], weights: dict[str, int]) -> float:
        handled = Counter(t for t, _ in self._all_backlogged(rows, list(weights)))
        total = sum(handled.values())
        wsum = sum(weights.values())
        return max(
            abs(handled[t] / total - w / wsum) / (w / wsum) * 100 for t, w in weights.items()
        )

    # -- idle -------------------------------------------------------------------------------

    def idle(self) -> None:
        sz = self.sizes
        forget(self.client)  # "*" below: exactly the idle tenants
        self.registry.add(*idle_tenants(sz.idle_streams))
        cpu = self.line(
            f"idle worker CPU, {sz.idle_streams:,} tenant streams / one stream",
            "% core",
            baseline="one stream",
        )
        rss = self.line(
            f"idle worker RSS, {sz.idle_streams:,} tenant streams / one stream",
            "MB",
            baseline="one stream",
        )
        cpu.target, rss.target = ("ours<=", 1.0), ("ours<=", 80.0)
        for name, tables, out_cpu, out_rss in (
            ("idle-many", _table("*", "idle"), cpu.ours, rss.ours),
            ("idle-one", _table(idle_tenants(1)[0], "idle1"), cpu.plain, rss.plain),
        ):
            self.say(f"fairness: {name}")
            pool = PlatformPool(self.url, self.tmp, name, tables, self.sizes.processes)
            try:
                pool.start()
                self._wait_settled(pool)
                pids = pool.pids()
                before = cpu_s(pids)
                time.sleep(sz.idle_s)  # measuring an idle interval, not waiting for a state
                used = cpu_s(pids) - before
                out_cpu.append(max(0.001, 100 * used / sz.idle_s / max(1, len(pids))))
                out_rss.append(max(rss_mb(p) for p in pids))
            finally:
                pool.stop()

    def _wait_settled(self, pool: PlatformPool, timeout_s: float = 300.0) -> None:
        """Until every worker has created its groups (CPU per second drops to idle)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = pool.pids()
            if len(pids) == self.sizes.processes:
                before = cpu_s(pids)
                time.sleep(1.0)
                if cpu_s(pids) - before < 0.05 * len(pids):
                    return
            else:
                time.sleep(0.2)
        raise TimeoutError(f"idle pool never settled: {pool.log.read_text()[-2000:]}")

    # -- scheduled retries ----------------------------------------------------------------

    def retries(self) -> None:
        sz = self.sizes
        n = sz.retry_streams
        tenants = retry_tenants(n)
        forget(self.client)  # "*" below: exactly the retry tenants
        self.registry.add(*tenants)
        delays = ", ".join(f"{d:g}" for d in sz.retry_delays)
        tables = f"retry_delays = [{delays}]\n" + _table("*", "retry", RETRY_HANDLER)
        self.say(f"fairness: retries of {n:,} subscriptions")
        pool = PlatformPool(self.url, self.tmp, "retries", tables, sz.processes)
        try:
            pool.start()
            self._wait_settled(pool)
            idle_rate = self._commands_per_s(min(sz.idle_s, 5.0)) / n
            for tenant in tenants:
                TenantEventBus(self.client, tenant).publish(STREAM, _event(tenant))
            starts = _wait_attempts(pool, n, 2)  # the second retries are now scheduled
            window_end_ns = min(a[1] for a in starts.values()) + int(sz.retry_delays[1] * 1e9)
            window_s = (window_end_ns - time.monotonic_ns()) / 1e9 - 0.2
            scheduled_rate = self._commands_per_s(max(0.2, window_s)) / n
            starts = _wait_attempts(pool, n, 3)
        finally:
            pool.stop()
        for k, delay in enumerate(sz.retry_delays, start=1):
            late = sorted((a[k] - a[k - 1] - int(delay * 1e9)) / 1e6 for a in starts.values())
            p50, p99 = late[len(late) // 2], late[int(0.99 * (len(late) - 1))]
            before = [a[k - 1] for a in starts.values()]
            self.say(
                f"fairness: retry {k} ({delay:g} s delay) late by p50 {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, max {late[-1]:.0f} ms, min {late[0]:.0f} ms; the "
                f"attempts before it spanned {(max(before) - min(before)) / 1e6:.0f} ms"
            )
            line = self.line(
                f"retry lateness after a {delay:g} s delay, {n:,} subscriptions: p99 / p50",
                "ms",
                baseline="p50",
            )
            line.ours, line.plain = [max(0.01, p99)], [max(0.01, p50)]
            line.target = ("ours<=", 500.0)
        self.say(
            f"fairness: Redis commands/s per subscription: {scheduled_rate:.3f} with "
            f"retries scheduled ({window_s:.1f} s), {idle_rate:.3f} idle"
        )
        calls = self.line(
            f"Redis commands/s per subscription, {n:,} retries scheduled / none scheduled",
            "calls/s",
            baseline="none scheduled",
        )
        calls.ours, calls.plain = [max(0.001, scheduled_rate)], [max(0.001, idle_rate)]
        calls.target = ("ours<=", 1 / MAINTENANCE_GRID_S)  # one per subscription per tick

    def _commands_per_s(self, seconds: float) -> float:
        """Redis commands per second (all clients but this one's INFO) over ``seconds``."""
        before = _commands(self.client)
        start = time.monotonic()
        time.sleep(seconds)  # measuring an interval, not waiting for a state
        after = _commands(self.client)
        return (sum(after.values()) - sum(before.values())) / (time.monotonic() - start)


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}


def _wait_attempts(
    pool: PlatformPool, n: int, attempts: int, timeout_s: float = 300.0
) -> dict[str, list[int]]:
    """Until each of ``n`` tenants' handler started ``attempts`` times: tenant -> the
    start times (monotonic ns) by attempt."""
    deadline = time.monotonic() + timeout_s
    while True:
        starts: dict[str, dict[int, int]] = defaultdict(dict)
        for line in pool.waits.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                starts[parts[0]].setdefault(int(parts[1]), int(parts[2]))
        done = {t: [a[k] for k in range(attempts)] for t, a in starts.items() if len(a) >= attempts}
        if len(done) >= n:
            return done
        if pool.proc is not None and pool.proc.poll() is not None:
            raise RuntimeError(f"pool exited: {pool.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)} of {n} retried: {pool.log.read_text()[-2000:]}")
        time.sleep(0.05)


def run(url: str, client: redis.Redis, sizes: FairSizes, say: Callable[[str], None]) -> list[Line]:
    return Fairness(url, client, sizes, say).run()
