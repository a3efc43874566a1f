"""Chaos run: a private redis-server (AOF, fsync always), a publisher at a steady rate, a
real pool (the supervisor subprocess) with a recording handler, and faults at random:
worker SIGKILL, Redis SIGKILL + restart on the same data dir, CLIENT KILL of every
connection, DEBUG SLEEP stalls. Then it drains and prints the ledger; exit 1 on any loss.
With ``--cluster``: a Redis Cluster, and master kills with failover
(:mod:`workers.tools.chaos_cluster`).

    python -m workers.tools.chaos --duration 60 --rate 200 --processes 3 [--seed N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from eventbus import (
    AgentEvent,
    BusSettings,
    EventBusError,
    EventType,
    HandlerContext,
    TenantEventBus,
)
from eventbus import wants_context as _wants_context
from eventbus.logs import configure_logging
from workers.tools import chaos_cluster
from workers.tools.chaos_report import recovery_times, report_text
from workers.tools.localcluster import LocalCluster
from workers.tools.localredis import LocalRedis
from workers.tools.procs import is_worker, worker_pids

TENANT, STREAM, GROUP = "chaos", "work", "pool"
LEDGER_ENV = "EVENTBUS_CHAOS_LEDGER"
KINDS = ("worker_kill", "redis_kill", "client_kill", "debug_sleep")
SOCKET_TIMEOUT_S = 2.0  # the workers' client timeout: some stalls are longer


# -- the recording handler (runs in the pool's worker processes) -----------------------


@_wants_context
def record(event: AgentEvent, ctx: HandlerContext) -> None:
    """Do a little work, then append ``{"e": event_id, "a": attempt, "p": pid, "t": time}``."""
    time.sleep(float(event.data.get("work_ms", 0)) / 1000)
    line = json.dumps(
        {"e": event.event_id, "a": ctx.retry_count + 1, "p": os.getpid(), "t": time.time()}
    )
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class HandledLog:
    """Reads the handler's JSON lines incrementally (only complete lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.counts: Counter[str] = Counter()
        self.times: list[float] = []

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # cut short by a SIGKILL
            self.counts[row["e"]] += 1
            self.times.append(float(row["t"]))


# -- moving parts ----------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes at a steady rate; an event counts once ``publish`` returned. After an error
    it publishes the same event again (idempotent by event_id)."""

    def __init__(self, bus: TenantEventBus, rate: float, work_ms: float, stop: threading.Event):
        super().__init__(name="chaos-publisher", daemon=True)
        self.bus, self.interval_s, self.work_ms, self.stop = bus, 1.0 / rate, work_ms, stop
        self.acked: dict[str, float] = {}
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        next_at, n, event = time.monotonic(), 0, None
        while not self.stop.is_set():
            event = event or AgentEvent(
                event_type=EventType.TASK_ASSIGNED,
                tenant_id=TENANT,
                source_agent_id="chaos",
                call_chain=["chaos"],
                data={"n": n, "work_ms": self.work_ms},
            )
            try:
                self.bus.publish(STREAM, event)
            except EventBusError as exc:
                self.errors[type(exc).__name__] += 1
                self.stop.wait(0.05)
                continue
            self.acked[event.event_id] = time.time()
            event, n = None, n + 1
            next_at = max(next_at + self.interval_s, time.monotonic() - 1.0)  # no bursts > 1 s
            self.stop.wait(max(0.0, next_at - time.monotonic()))


class PoolProcess:
    """The supervisor subprocess (logs to a file) and its worker processes."""

    def __init__(self, url: str, workdir: Path, processes: int, *, cluster: bool = False) -> None:
        self.log_path = workdir / "pool.log"
        self.args = [
            sys.executable, "-m", "workers.pool.supervisor",
            "--redis-url", f"{url}?socket_timeout={SOCKET_TIMEOUT_S}",
            "--tenant", TENANT, "--stream", STREAM, "--group", GROUP,
            "--handler", "workers.tools.chaos:record",
            "--processes", str(processes),
            "--block-ms", "500",
            "--reclaim-interval-s", "2",
            "--reclaim-idle-ms", "10000",
            "--max-deliveries", "20",
            "--max-restarts-per-minute", "1000",
            "--grace-period-s", "10",
            "--log-format", "json",
            "--redis-cluster", "true" if cluster else "false",
        ]  # fmt: skip
        self.env = {**os.environ, LEDGER_ENV: str(workdir / "handled.jsonl")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=log, env=self.env
            )

    def worker_pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = worker_pids(self.proc.pid)
        self.seen.update(out)
        return out

    def count_logged(self, name: str) -> int:
        needle = f'"event": "{name}"'
        if not self.log_path.exists():
            return 0
        return sum(1 for line in self.log_path.open(errors="replace") if needle in line)

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (drain), SIGKILL after ``timeout_s``; then any worker left over."""
        code = None
        if self.proc is not None:
            self.worker_pids()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.seen:
            if is_worker(pid):
                os.kill(pid, signal.SIGKILL)
        return code


# -- faults ----------------------------------------------------------------------------


class Injector:
    """Injects one fault of a random kind at a time; records (kind, end) where end is
    time.time() once the fault is complete (kill sent, Redis back up, stall over)."""

    def __init__(self, server: LocalRedis, pool: PoolProcess, rng: random.Random) -> None:
        self.server, self.pool, self.rng = server, pool, rng
        self.control = server.client(socket_timeout=30)
        self.injected: list[tuple[str, float]] = []
        self.actions: dict[str, Callable[[], bool]] = {
            "worker_kill": self._worker_kill,
            "redis_kill": self._redis_kill,
            "client_kill": self._client_kill,
            "debug_sleep": self._debug_sleep,
        }

    @classmethod
    def on_cluster(cls, cluster: LocalCluster, pool: PoolProcess, rng: random.Random) -> Injector:
        """The faults of a cluster run (chaos_cluster.CLUSTER_KINDS)."""
        injector = cls.__new__(cls)
        injector.pool, injector.rng, injector.injected = pool, rng, []
        faults = chaos_cluster.ClusterFaults(cluster, TENANT, STREAM, rng)
        injector.actions = {
            "worker_kill": lambda: chaos_cluster.kill_one(pool.worker_pids(), rng),
            "master_kill": faults.master_kill,
            "client_kill": faults.client_kill,
        }
        return injector

    def inject(self, kind: str) -> None:
        if self.actions[kind]():
            self.injected.append((kind, time.time()))

    def _worker_kill(self) -> bool:
        pids = self.pool.worker_pids()
        if not pids:
            return False
        os.kill(self.rng.choice(pids), signal.SIGKILL)
        return True

    def _redis_kill(self) -> bool:
        self.server.kill()
        time.sleep(self.rng.uniform(0.2, 1.5))  # down for a while
        self.server.start(timeout_s=60)  # same port and data dir: the AOF is replayed
        return True

    def _client_kill(self) -> bool:
        self.control.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
        return True

    def _debug_sleep(self) -> bool:
        stall_s = round(self.rng.uniform(0.5, 3.0), 2)
        self.control.execute_command("DEBUG", "SLEEP", stall_s)  # type: ignore[no-untyped-call]
        return True


# -- the run ---------------------------------------------------------------------------


def _dead_lettered(client: Any) -> set[str]:
    key = TenantEventBus(client, TENANT).keys.dlq(STREAM)
    out: set[str] = set()
    start = "-"
    while True:
        rows: Any = client.xrange(key, min=start, count=1000)
        out.update(f.get(b"event_id", b"").decode("utf-8", "replace") for _, f in rows)
        if len(rows) < 1000:
            return out
        start = "(" + rows[-1][0].decode()


def run(args: argparse.Namespace, stop: threading.Event) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="eventbus-chaos-"))
    server: LocalRedis | LocalCluster = LocalRedis(
        appendonly=True,
        appendfsync="always",
        extra_args=["--enable-debug-command", "local"],
    )
    settings = BusSettings()
    if args.cluster:
        server, settings = chaos_cluster.new_cluster(), chaos_cluster.PUBLISHER_SETTINGS
    pool = PoolProcess(server.url, workdir, args.processes, cluster=args.cluster)
    publisher: Publisher | None = None
    pub_stop = threading.Event()
    report: dict[str, Any] = {"seed": args.seed, "workdir": str(workdir)}
    try:
        server.start()
        client = server.client(socket_timeout=30)
        pool.start()
        handled = HandledLog(workdir / "handled.jsonl")
        bus = TenantEventBus(server.client(socket_timeout=5), TENANT, settings=settings)
        bus.ensure_group(STREAM, GROUP)
        publisher = Publisher(bus, args.rate, args.work_ms, pub_stop)
        publisher.start()
        if isinstance(server, LocalCluster):
            injector = Injector.on_cluster(server, pool, rng)
        else:
            injector = Injector(server, pool, rng)
        every = chaos_cluster.CLUSTER_KINDS if args.cluster else KINDS
        kinds = [k for k in every if k in args.faults]
        bag: list[str] = []  # every kind once per round, in random order: all get a turn
        started = time.monotonic()
        end = started + args.duration
        while not stop.is_set() and time.monotonic() < end:
            stop.wait(min(rng.expovariate(1.0 / args.fault_interval_s), end - time.monotonic()))
            if kinds and not stop.is_set() and time.monotonic() < end:
                bag = bag or rng.sample(kinds, len(kinds))
                injector.inject(bag.pop())
        pub_stop.set()
        publisher.join(30)
        published = set(publisher.acked)
        drain_start = time.monotonic()
        lost: set[str] = published
        while time.monotonic() - drain_start < args.drain_timeout_s and not stop.is_set():
            handled.refresh()
            lost = published - set(handled.counts)
            if lost:
                lost -= _dead_lettered(client)
            if not lost:
                break
            stop.wait(0.5)
        handled.refresh()
        dead = _dead_lettered(client) & published
        report.update(
            duration_s=round(time.monotonic() - started, 1),
            drain_s=round(time.monotonic() - drain_start, 1),
            published=len(published),
            publish_errors=dict(publisher.errors),
            handled=len(published & set(handled.counts)),
            handler_calls=sum(handled.counts.values()),
            dead_lettered=len(dead),
            lost=len(lost),
            lost_ids=sorted(lost)[:20],
            duplicates=sum(1 for n in handled.counts.values() if n > 1),
            faults=dict(Counter(kind for kind, _ in injector.injected)),
            recovery=recovery_times(injector.injected, handled.times),
            worker_respawns=pool.count_logged("worker_respawned"),
            restart_limit_reached=pool.count_logged("restart_limit_reached"),
        )
        report["pool_exit_code"] = pool.stop()
        return report
    finally:
        pub_stop.set()
        pool.stop(timeout_s=15)
        server.close()
        if report.get("lost", 1) == 0 and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workers.tools.chaos",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=60, help="seconds of load and faults")
    p.add_argument("--rate", type=float, default=200, help="events published per second")
    p.add_argument("--processes", type=int, default=3, help="worker processes in the pool")
    p.add_argument("--seed", type=int, default=None, help="random seed (None: a random one)")
    p.add_argument("--json", default=None, help="also write the ledger to this file")
    p.add_argument("--fault-interval-s", type=float, default=3.0, help="mean time between faults")
    p.add_argument(
        "--faults",
        default=None,
        help=f"kinds to inject, comma-separated (default: {','.join(KINDS)}; "
        f"with --cluster: {','.join(chaos_cluster.CLUSTER_KINDS)})",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="a Redis Cluster of 3 masters + 3 replicas; faults include master kills "
        "(failover); the publisher uses min_replicas=1",
    )
    p.add_argument("--work-ms", type=float, default=2.0, help="handler work per event (ms)")
    p.add_argument("--drain-timeout-s", type=float, default=120, help="longest drain")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, ledger)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = chaos_cluster.CLUSTER_KINDS if args.cluster else KINDS
    args.faults = {k.strip() for k in (args.faults or ",".join(kinds)).split(",") if k.strip()}
    unknown = args.faults - set(kinds)
    if unknown or args.rate <= 0 or args.processes < 1 or args.duration <= 0:
        sys.stderr.write(f"chaos: bad arguments (unknown faults: {sorted(unknown)})\n")
        return 2
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    configure_logging("warning", "console")  # the library's own warnings, on stderr
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # record intent; the loops end and clean up

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    report = run(args, stop)
    sys.stdout.write(report_text(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report.get("lost", 1) else 0


if __name__ == "__main__":
    raise SystemExit(main())
