"""The consumer's cost per event, counted in instructions (deterministic) rather than timed.

    python -m workers.tools.bench_cpu [--traced]      # prints instructions per event

Runs this module twice under ``valgrind --tool=callgrind`` (``--drain N``): each run starts
a private redis-server, has a child process (not counted) publish N 300-byte events, then
drains them in this process with ``EventConsumer.process_batch`` (no-op handler, JSON logs
at info, as in a pool's worker); the difference between the runs' totals, divided by the
difference in events, is the consumer's cost per event without start-up. ``--traced``:
the entries carry a ``traceparent`` (1 in 100 sampled) and an OpenTelemetry SDK provider
with a batch span processor (spans dropped) is set, as ``workers.tools.bench_traced`` does.
Wall-clock figures on a shared machine move by tens of percent; these do not.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from eventbus import DeadLetterQueue, EventConsumer, TenantEventBus
from eventbus.logs import configure_logging
from workers.tools import bench_measure as m
from workers.tools.localredis import LocalRedis

STREAM = "cpu"
RUNS = (1_000, 5_000)  # events drained by the two counted runs


def _fill(url: str, n: int, traced: bool) -> None:
    """Publish ``n`` events (a child process: its work is not counted)."""
    client = redis.Redis.from_url(url)
    bus = TenantEventBus(client, m.TENANT)
    fields = m.encoded(m.make_events(n, 300))
    if traced:
        rnd = random.Random(1)
        for i, f in enumerate(fields):
            flags = "01" if i % 100 == 0 else "00"
            f["traceparent"] = f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-{flags}"
    pipe = client.pipeline(transaction=False)
    for f in fields:
        pipe.xadd(bus.keys.stream(STREAM), f)  # type: ignore[arg-type]
    pipe.execute()


def _drain(n: int, traced: bool) -> None:
    configure_logging("info", "json")
    if traced:
        import workers.tools.bench_traced  # noqa: F401  (sets the SDK provider)
    with LocalRedis() as server:
        subprocess.run(
            [sys.executable, "-m", "workers.tools.bench_cpu", "--fill", server.url, str(n)]
            + (["--traced"] if traced else []),
            check=True,
        )
        client = server.client()
        bus = TenantEventBus(client, m.TENANT)
        consumer = EventConsumer(bus, STREAM, "g", "c1", DeadLetterQueue(client, m.TENANT))
        seen = [0]

        def handler(event: object) -> None:
            seen[0] += 1

        while seen[0] < n:
            consumer.process_batch(handler, block_ms=1)


def _instructions(n: int, traced: bool, out: Path) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    args = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"]
    args += [sys.executable, "-m", "workers.tools.bench_cpu", "--drain", str(n)]
    args += ["--traced"] if traced else []
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="consumer instructions per event")
    parser.add_argument("--traced", action="store_true", help="1%% sampled traces, SDK on")
    parser.add_argument("--fill", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--drain", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        _fill(args.fill[0], int(args.fill[1]), args.traced)
        return
    if args.drain:
        _drain(args.drain, args.traced)
        return
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        low, high = (_instructions(n, args.traced, Path(tmp) / f"cg.{n}") for n in RUNS)
    per_event = (high - low) / (RUNS[1] - RUNS[0])
    what = "tracing on, 1% sampled" if args.traced else "tracing off"
    print(f"consumer, {what}: {per_event:,.0f} instructions per event")


if __name__ == "__main__":
    main()
