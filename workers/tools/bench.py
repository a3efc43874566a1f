"""Benchmark: the bus against plain Redis, on one machine, in one run.

    python -m workers.tools.bench [--smoke | --quick] [--depth N] [--json FILE] [--redis-url URL]

Starts a private redis-server (unless ``--redis-url``), then measures, each line as the
median of repetitions (min-max) next to a plain baseline measured in the same run:
publish (``publish`` / ``publish_many`` vs raw XADD), end to end through the real worker
pool vs a plain consumer-group loop (backlog, concurrent publisher), latency publish ->
handler at a fixed rate, cost growth with event size and backlog depth, Redis memory per
stored event, worker RSS, and fairness across tenants in one platform pool
(:mod:`workers.tools.bench_fair`). Prints a table and writes JSON with the ratio ours/plain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from eventbus import TenantEventBus
from eventbus.settings import BusSettings
from eventbus.trace import read_trace
from workers.tools import bench_fair
from workers.tools import bench_measure as m
from workers.tools.bench_procs import Plain, Pool
from workers.tools.bench_report import Line, table, write_json
from workers.tools.localredis import LocalRedis

SMALL = 300  # the usual event size (bytes encoded)


@dataclass(frozen=True)
class Sizes:
    reps: int
    publish_n: int  # events published one by one per repetition
    pipeline_n: int  # events published in batches of 100 per repetition
    backlog: int  # end to end: entries laid down per repetition (300 B)
    processes: tuple[int, ...]
    latency_s: float  # seconds of probes per repetition, at latency_rate
    latency_rate: float
    by_size: tuple[tuple[int, int], ...]  # (event bytes, backlog) for the growth lines
    depths: tuple[int, ...]  # stored entries for the depth lines
    depth_measure: int  # entries drained (and published) in a deep stream
    memory_n: int  # events stored for the memory lines


NORMAL = Sizes(
    reps=5,
    publish_n=5_000,
    pipeline_n=20_000,
    backlog=30_000,
    processes=(1, 2, 4),
    latency_s=3.0,
    latency_rate=1000.0,
    by_size=((300, 20_000), (4096, 10_000), (65536, 1_500)),
    depths=(10_000, 1_000_000),
    depth_measure=5_000,
    memory_n=10_000,
)
QUICK = replace(
    NORMAL,
    reps=3,
    publish_n=2_000,
    pipeline_n=10_000,
    backlog=10_000,
    latency_s=2.0,
    by_size=((300, 5_000), (4096, 3_000), (65536, 500)),
    depths=(10_000, 100_000),
    memory_n=5_000,
)
SMOKE = Sizes(
    reps=2,
    publish_n=200,
    pipeline_n=500,
    backlog=600,
    processes=(1, 2, 4),
    latency_s=0.3,
    latency_rate=1000.0,
    by_size=((300, 300), (4096, 200), (65536, 40)),
    depths=(1_000, 3_000),
    depth_measure=300,
    memory_n=300,
)


class Bench:
    def __init__(self, url: str, sizes: Sizes, tmp: Path) -> None:
        self.url = url
        self.sizes = sizes
        self.tmp = tmp
        self.client = redis.Redis.from_url(url, socket_timeout=60)  # 1M-entry fills
        self.bus = TenantEventBus(self.client, m.TENANT)
        self.lines: list[Line] = []

    def line(self, section: str, name: str, unit: str, **kw: Any) -> Line:
        line = Line(section, name, unit, **kw)
        self.lines.append(line)
        return line

    def say(self, text: str) -> None:
        sys.stderr.write(f"[bench] {text}\n")
        sys.stderr.flush()

    # -- 1. publish ----------------------------------------------------------------------

    def publish(self) -> None:
        sz = self.sizes
        single = self.line("publish", "publish one by one / XADD", "ev/s", baseline="XADD")
        single.target = ("ratio>=", 0.8)
        many = self.line("publish", "publish_many (100) / pipelined XADD", "ev/s")
        many.baseline, many.target = "XADD pipeline", ("ratio>=", 0.5)
        for rep in range(sz.reps):
            self.say(f"publish rep {rep + 1}/{sz.reps}")
            for line, n, batch in ((single, sz.publish_n, 1), (many, sz.pipeline_n, m.BATCH)):
                events = m.make_events(n, SMALL)
                stream = f"pub{batch}-{rep}"
                raw_key = f"bench:raw:{stream}"
                # As in use: the streams have a group whose consumers keep up (so publish
                # trims acknowledged history past maxlen); a backlog is in "scaling".
                self.bus.ensure_group(stream, "readers")
                self.client.xgroup_create(raw_key, "readers", id="0", mkstream=True)
                ours, raw = m.publish_rates(self.bus, stream, raw_key, events, batch, "readers")
                line.ours.append(ours)
                line.plain.append(raw)
                self.client.delete(self.bus.keys.stream(stream), raw_key)

    def guards(self) -> None:
        """The agent guards' cost: publishing with the request trace on vs off (same run,
        alternating turns; both check halts and budgets), and a 10,000-event tree rebuilt."""
        sz = self.sizes
        traced = TenantEventBus(self.client, m.TENANT, settings=BusSettings(trace=True))
        for name, n, batch in (
            ("publish", sz.publish_n, 1),
            ("publish_many (100)", sz.pipeline_n, m.BATCH),
        ):
            line = self.line("guards", f"{name}, trace on / off", "ev/s", baseline="trace off")
            line.target = ("ratio>=", 0.9)
            for rep in range(sz.reps):
                self.say(f"guards: {name} rep {rep + 1}/{sz.reps}")
                events = m.make_events(n, SMALL)
                on, off = f"traced{batch}-{rep}", f"untraced{batch}-{rep}"
                rates = m.alternate(
                    [(traced, on), (self.bus, off)], events, batch, readers="readers"
                )
                line.ours.append(rates[0])
                line.plain.append(rates[1])
                self.client.delete(self.bus.keys.stream(on), self.bus.keys.stream(off))
                self.client.delete(self.bus.keys.trace("bench"))
        traced_n = 10_000 if sz.publish_n >= 1000 else 1_000  # --smoke: 1,000
        rebuild = self.line(
            "guards", f"trace of {traced_n:,} events rebuilt / XRANGE", "ms", baseline="XRANGE"
        )
        rebuild.target = ("ours<=", 100.0)
        events = m.make_events(traced_n, SMALL)
        for i in range(0, len(events), m.BATCH):
            traced.publish_many("rebuild", events[i : i + m.BATCH])
        for _ in range(sz.reps):
            t0 = time.perf_counter()
            tree = read_trace(traced, "bench")
            rebuild.ours.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            self.client.xrange(self.bus.keys.trace("bench"))  # the read alone
            rebuild.plain.append((time.perf_counter() - t0) * 1000)
            assert len(tree.nodes) == traced_n, len(tree.nodes)
        self.client.delete(self.bus.keys.stream("rebuild"), self.bus.keys.trace("bench"))

    # -- 4b. memory ----------------------------------------------------------------------

    def memory(self) -> None:
        for size, _ in self.sizes.by_size:
            n = max(10, self.sizes.memory_n * SMALL // size)
            self.say(f"memory per stored event, {size} B")
            got = m.memory_per_event(self.client, self.bus, f"mem{size}", m.make_events(n, size))
            line = self.line("memory", f"Redis bytes per stored event, {m.size_text(size)}", "B")
            line.ours, line.plain, line.baseline = [got["ours"]], [got["plain"]], "XADD"
            if size == SMALL:
                line.target = ("ratio<=", 2.0)
                marker = self.line("memory", "  of which the dedupe marker", "B")
                marker.ours, marker.plain = [got["ours_marker"]], [got["plain"]]
                marker.baseline = f"XADD; marker TTL {got['marker_ttl_s']:.0f} s"

    # -- 2-5. through the pool -------------------------------------------------------------

    def pools(self) -> None:
        for n in self.sizes.processes:
            latency_file = self.tmp / f"latency-{n}.txt"
            with ExitStack() as stack:
                stream = f"e2e{n}"
                self.say(f"starting a pool and {n} plain loop(s) of {n} process(es)")
                pool = Pool(
                    self.url,
                    m.TENANT,
                    stream,
                    self.bus.keys.stream(stream),
                    n,
                    latency_file=latency_file,
                )
                stack.callback(pool.stop)
                pool.start(self.client)
                plain = Plain(self.url, f"bench:plain:{stream}", "plain", n, latency_file)
                stack.callback(plain.stop)
                plain.start(self.client)
                self.end_to_end(pool, plain, stream, n)
                if n == 2 or len(self.sizes.processes) == 1:
                    self.latency(pool, plain, stream, latency_file)
                    self.growth(pool, plain, stream)
                rss = self.line("rss", f"worker RSS after the run, {n} process(es)", "MB")
                rss.ours, rss.plain, rss.target = pool.rss_mb(), plain.rss_mb(), ("ours<=", 80)

    def _pair(
        self,
        name: str,
        measure: Callable[[Pool | Plain], m.Drained],
        *,
        section: str = "end_to_end",
        cpu: bool = False,
        reps: int = 0,
        **kw: Any,
    ) -> None:
        """ours and plain in turn, ``reps`` times: events/s (and consumer CPU per event)."""
        line = self.line(section, name, "ev/s", **kw)
        cpu_line = self.line(section, f"  consumer CPU per event, {name.split(', ')[-1]}", "us")
        reps = reps or self.sizes.reps
        for rep in range(reps):
            self.say(f"{name} rep {rep + 1}/{reps}")
            sides: list[tuple[Pool | Plain, list[float], list[float]]] = [
                (self.current_pool, line.ours, cpu_line.ours),
                (self.current_plain, line.plain, cpu_line.plain),
            ]
            for c, rates, cpus in sides if rep % 2 == 0 else sides[::-1]:  # drift cancels
                got = measure(c)
                rates.append(got.rate)
                cpus.append(got.cpu_us)
        if not cpu:
            self.lines.remove(cpu_line)

    def end_to_end(self, pool: Pool, plain: Plain, stream: str, n: int) -> None:
        self.current_pool, self.current_plain = pool, plain
        fields = m.encoded(m.make_events(self.sizes.backlog, SMALL))
        total = len(fields)
        target = ("ratio>=", 0.5)

        def backlog(c: Pool | Plain) -> m.Drained:
            return m.drain(self.client, c, fields, total=total)

        def concurrent(c: Pool | Plain) -> m.Drained:
            ours = c is pool
            publisher = m.Publisher(self.url, stream if ours else c.key, ours, total // 2, SMALL)
            return m.drain(
                self.client, c, fields[: total // 2], total=total // 2, publisher=publisher
            )

        self._pair(f"pool vs plain loop, backlog, {n} proc", backlog, cpu=True, target=target)
        self._pair(f"pool vs plain loop, + publisher, {n} proc", concurrent, target=target)

    def latency(self, pool: Pool, plain: Plain, stream: str, latency_file: Path) -> None:
        sz = self.sizes
        rate = sz.latency_rate
        lines = {
            q: self.line(
                "latency", f"publish -> handler {q} at {rate:.0f}/s, {pool.processes} proc", "ms"
            )
            for q in ("p50", "p99", "max")
        }
        lines["p99"].target = ("ours<=", 2.0)
        for rep in range(sz.reps):
            self.say(f"latency rep {rep + 1}/{sz.reps}")
            for c, ours in ((pool, True), (plain, False)):
                got = m.latency(
                    self.client,
                    c,
                    latency_file,
                    ours=ours,
                    stream=stream,
                    rate=rate,
                    seconds=sz.latency_s,
                    size=SMALL,
                )
                for q, line in lines.items():
                    (line.ours if ours else line.plain).append(got[q])

    def growth(self, pool: Pool, plain: Plain, stream: str) -> None:
        self.current_pool, self.current_plain = pool, plain
        for size, count in self.sizes.by_size:
            fields = m.encoded(m.make_events(count, size))

            def by_size(c: Pool | Plain, fields: Sequence[dict[str, str]] = fields) -> m.Drained:
                return m.drain(self.client, c, fields, total=len(fields))

            self._pair(f"backlog of {m.size_text(size)} events, 2 proc", by_size, section="scaling")
        fields = m.encoded(m.make_events(1000, SMALL))
        k = self.sizes.depth_measure
        for depth in self.sizes.depths:

            def deep(c: Pool | Plain, depth: int = depth) -> m.Drained:
                return m.drain(self.client, c, fields, total=depth, measure=k)

            name = f"first {k:,} of {depth:,} stored entries, 2 proc"
            self._pair(name, deep, section="scaling", reps=min(3, self.sizes.reps))
            self.deep_publish(pool, plain, stream, depth, fields)

    def deep_publish(
        self, pool: Pool, plain: Plain, stream: str, depth: int, fields: list[dict[str, str]]
    ) -> None:
        """publish one by one into a stream holding ``depth`` unread entries."""
        line = self.line(
            "scaling", f"publish into {depth:,} unread entries", "ev/s", baseline="XADD"
        )
        for c in (pool, plain):
            c.wait_idle(self.client)
            c.pause()
            m.fill(self.client, c.key, fields, depth)
        reps = min(3, self.sizes.reps)
        for rep in range(reps):
            self.say(f"publish into {depth:,} rep {rep + 1}/{reps}")
            events = m.make_events(self.sizes.depth_measure, SMALL)
            ours, raw = m.publish_rates(self.bus, stream, plain.key, events)
            line.ours.append(ours)
            line.plain.append(raw)
        for c in (pool, plain):
            self.client.xtrim(c.key, maxlen=0, approximate=False)
            c.resume()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workers.tools.bench", description=__doc__.split("\n")[0]
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="everything at a tiny size (seconds)")
    mode.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions")
    p.add_argument("--depth", "--size", type=int, help="stored entries of the deep case (1M)")
    p.add_argument("--reps", type=int, help="repetitions per line")
    p.add_argument("--processes", help="pool sizes, e.g. 1,2,4")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--redis-url", help="use this Redis (default: a private redis-server)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else NORMAL
    if args.depth:
        sizes = replace(sizes, depths=(min(sizes.depths[0], args.depth), args.depth))
    if args.reps:
        sizes = replace(sizes, reps=args.reps)
    if args.processes:
        sizes = replace(sizes, processes=tuple(int(x) for x in args.processes.split(",")))
    started = time.time()
    with ExitStack() as stack:
        if args.redis_url:
            url = args.redis_url
        else:
            url = stack.enter_context(LocalRedis()).url
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="eventbus-bench-")))
        bench = Bench(url, sizes, tmp)
        bench.publish()
        bench.guards()
        bench.memory()
        bench.pools()
        mode = "smoke" if args.smoke else "quick" if args.quick else "normal"
        bench.lines += bench_fair.run(url, bench.client, bench_fair.SIZES[mode], bench.say)
        if args.redis_url:
            m.cleanup(bench.client)
        info = bench.client.info("server")
    lines = sorted(bench.lines, key=lambda x: SECTION_ORDER.index(x.section))
    print(table(lines))
    meta = {
        "mode": mode,
        "sizes": sizes.__dict__,
        "redis_version": info.get("redis_version"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "seconds": round(time.time() - started, 1),
    }
    if args.json:
        write_json(args.json, lines, meta)
    return 0


SECTION_ORDER = (
    "publish", "guards", "end_to_end", "latency", "scaling", "memory", "rss", "fairness"
)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
