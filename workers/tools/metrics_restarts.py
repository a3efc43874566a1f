"""How a /metrics scrape and the metrics directory grow with worker restarts: 1,000
short-lived worker processes (4 slots) count and time through the pool's own code path
(:func:`eventbus.metrics.use_multiprocess_dir` + :class:`~eventbus.metrics.Tally`), then
the supervisor's collector is timed. Once with files keyed by slot (what the pool does),
once keyed by pid (prometheus_client's default), for comparison.

    python -m workers.tools.metrics_restarts [--restarts 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time

SLOTS = 4


def _worker(path: str, index: int, by_pid: bool) -> None:
    from prometheus_client import values

    from eventbus.metrics import Tally, use_multiprocess_dir

    if by_pid:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    else:
        use_multiprocess_dir(path, f"slot{index % SLOTS}")
    tally = Tally("acme", "tasks", "writers")
    for what in ("handled", "failed", "retried", "redelivered", "reclaimed", "decode_error"):
        tally.count(what)
    tally.count("dead_lettered", "handler_failed")
    for seconds in (0.0004, 0.02, 3.0):
        tally.observe("duration", seconds)
        tally.observe("latency", seconds)
    tally.flush()


def _scrape_ms(path: str, samples: int = 20) -> tuple[float, int]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        body = generate_latest(registry)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(body)


def run(restarts: int, by_pid: bool) -> dict[str, float]:
    path = tempfile.mkdtemp(prefix="eventbus-metrics-bench-")
    ctx = mp.get_context("fork")
    try:
        for i in range(restarts):
            proc = ctx.Process(target=_worker, args=(path, i, by_pid))
            proc.start()
            proc.join()
            assert proc.exitcode == 0, proc.exitcode
        names = os.listdir(path)
        size = sum(os.path.getsize(os.path.join(path, n)) for n in names)
        scrape_ms, body = _scrape_ms(path)
        return {"files": len(names), "dir_kib": size / 1024, "scrape_ms": scrape_ms, "body": body}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--restarts", type=int, default=1000)
    args = parser.parse_args()
    for label, by_pid in (("by slot (eventbus)", False), ("by pid (library default)", True)):
        r = run(args.restarts, by_pid)
        print(
            f"{label:26} {args.restarts} restarts: {r['files']:.0f} files, "
            f"{r['dir_kib']:.0f} KiB, scrape {r['scrape_ms']:.1f} ms (median of 20), "
            f"{r['body']:.0f} bytes"
        )


if __name__ == "__main__":
    main()
