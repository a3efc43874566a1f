"""What metrics and tracing cost a pool: the same backlog drained in turn by a pool with
``--metrics-port`` and an OpenTelemetry SDK (spans made and batched, then dropped) and by
a plain pool, in the same run; then how long a /metrics scrape takes.

    python -m workers.tools.bench_obs [--processes 2] [--events 20000] [--reps 5]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from eventbus import TenantEventBus
from workers.tools import bench_measure as m
from workers.tools.bench_procs import Pool
from workers.tools.localredis import LocalRedis, free_port

SIZE = 300


def _traced_fields(n: int, sampled_every: int) -> list[dict[str, str]]:
    """Events as a traced publisher writes them (each with its own traceparent), one in
    ``sampled_every`` with the sampled flag (a ParentBased sampler follows it)."""
    fields = m.encoded(m.make_events(n, SIZE))
    for i, f in enumerate(fields):
        flags = "01" if i % sampled_every == 0 else "00"
        f["traceparent"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}"
    return fields


#: name -> (handler module, metrics on, one in N traces sampled)
CONFIGS = {
    "off": ("workers.tools.bench_handlers:noop", False, 1),
    "metrics": ("workers.tools.bench_handlers:noop", True, 1),
    "metrics+traces 1%": ("workers.tools.bench_traced:noop", True, 100),
    "metrics+traces 100%": ("workers.tools.bench_traced:noop", True, 1),
}


def _scrape_ms(port: int, samples: int = 20) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            resp.read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="metrics + tracing on vs off, same run")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-obs-"))
    fields = {every: _traced_fields(args.events, every) for every in (1, 100)}
    ports: dict[str, int] = {}
    with LocalRedis() as server:
        client = server.client()
        bus = TenantEventBus(client, m.TENANT)
        pools: dict[str, Pool] = {}
        try:
            for i, (name, (handler, metrics_on, _)) in enumerate(CONFIGS.items()):
                stream = f"cfg{i}"
                bus.ensure_group(stream, "pool")
                pool = Pool(
                    server.url,
                    m.TENANT,
                    stream,
                    bus.keys.stream(stream),
                    args.processes,
                    latency_file=tmp / "latency.txt",
                )
                pool.args[pool.args.index("--handler") + 1] = handler
                if metrics_on:
                    ports[name] = free_port()
                    pool.args += ["--metrics-port", str(ports[name])]
                pools[name] = pool.start(client)
            rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
            cpus: dict[str, list[float]] = {name: [] for name in CONFIGS}
            names = list(CONFIGS)
            for rep in range(args.reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]  # drift cancels
                for name in order:
                    batch = fields[CONFIGS[name][2]]
                    got = m.drain(client, pools[name], batch, total=len(batch))
                    rates[name].append(got.rate)
                    cpus[name].append(got.cpu_us)
                    print(f"rep {rep + 1} {name}: {got.rate:,.0f} ev/s, {got.cpu_us:.1f} us/ev")
            scrape = _scrape_ms(ports["metrics"])
        finally:
            for pool in pools.values():
                pool.stop()
    off = statistics.median(rates["off"])
    print(f"{args.processes} processes, {args.events} events x {args.reps} reps (medians):")
    for name in CONFIGS:
        rate = statistics.median(rates[name])
        cpu = statistics.median(cpus[name])
        print(f"  {name:20} {rate:9,.0f} ev/s  {cpu:6.1f} us/ev  ratio {rate / off:.3f}")
    print(f"  /metrics scrape: {scrape:.1f} ms (median of 20, cache warm or cold)")


if __name__ == "__main__":
    main()
