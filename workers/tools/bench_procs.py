"""Benchmark processes: a real pool (``python -m workers.pool.supervisor``) or N plain loops
(``python -m workers.tools.bench_plain``), each consuming one stream with one group. The bench
pauses them (SIGSTOP) while it lays a backlog down, and reads their RSS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from workers.tools.bench_handlers import LATENCY_FILE_ENV
from workers.tools.procs import rss_mb, worker_pids

ROOT = Path(__file__).resolve().parents[1]
HANDLER = "workers.tools.bench_handlers:noop"


class Consumers:
    """N consumer processes of ``group`` on the stream ``key``, named ``<group>-<i>``."""

    kind = ""

    def __init__(self, url: str, key: str, group: str, processes: int, latency_file: Path):
        self.url = url
        self.key = key
        self.group = group
        self.processes = processes
        self.names = [f"{group}-{i}" for i in range(processes)]
        self.env = {**os.environ, LATENCY_FILE_ENV: str(latency_file)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{group}-", suffix=".log")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def pause(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.pids()]

    def _popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=self.env,
            cwd=ROOT,
        )

    def wait_idle(self, client: redis.Redis, timeout_s: float = 60.0) -> None:
        """Until every consumer is connected and blocked in XREADGROUP, nothing pending."""
        deadline = time.monotonic() + timeout_s
        while True:
            blocked = {
                c["name"]
                for c in client.client_list()
                if "b" in c.get("flags", "") and c.get("name") in self.names
            }
            if len(blocked) == len(self.names) and pending(client, self.key, self.group) == 0:
                return
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} process exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} consumers not idle: {self.log_tail()}")
            time.sleep(0.01)

    def log_tail(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.resume()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._log.close()


class Pool(Consumers):
    """The real thing: the supervisor and its worker processes, default settings."""

    kind = "pool"

    def __init__(self, url: str, tenant: str, stream: str, key: str, processes: int, **kw: Path):
        super().__init__(url, key, "pool", processes, **kw)
        self.args = [
            "workers.pool.supervisor",
            *("--redis-url", url, "--tenant", tenant, "--stream", stream),
            *("--group", self.group, "--handler", HANDLER, "--processes", str(processes)),
            *("--log-format", "json", "--log-level", "info"),
        ]

    def start(self, client: redis.Redis) -> Pool:
        self.procs = [self._popen(self.args)]
        self.wait_idle(client)
        return self

    def pids(self) -> list[int]:
        """The worker processes (children of the supervisor that came from spawn)."""
        return worker_pids(self.procs[0].pid) if self.procs else []

    def rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.pids()]

    def stop(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)
        super().stop()


class Plain(Consumers):
    """The baseline: ``workers.tools.bench_plain`` loops, one process each."""

    kind = "plain"

    def start(self, client: redis.Redis) -> Plain:
        try:
            client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.procs = [
            self._popen(["workers.tools.bench_plain", self.url, self.key, self.group, name])
            for name in self.names
        ]
        self.wait_idle(client)
        return self


class PlatformPool:
    """``eventbus-supervisor --config`` in a subprocess; waits for its workers."""

    def __init__(self, url: str, tmp: Path, name: str, tables: str, processes: int) -> None:
        self.config = tmp / f"{name}.toml"
        self.config.write_text(tables)
        self.waits = tmp / f"{name}.waits"
        self.waits.write_text("")
        self.log = tmp / f"{name}.log"
        self.args = [
            "--redis-url", url, "--config", str(self.config), "--processes", str(processes),
            "--log-format", "json", "--log-level", "info", "--grace-period-s", "5",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PlatformPool:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.pool.supervisor", *self.args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, LATENCY_FILE_ENV: str(self.waits)},
                cwd=ROOT,
            )
        return self

    def pids(self) -> list[int]:
        return worker_pids(self.proc.pid) if self.proc else []

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until the supervisor says its workers are up (READY)."""
        deadline = time.monotonic() + timeout_s
        while '"supervisor_ready"' not in self.log.read_text(errors="replace"):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pool exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"pool not ready: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def handled(self) -> list[tuple[str, int, int]]:
        out = []
        for line in self.waits.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.append((parts[0], int(parts[1]), int(parts[2])))
        return out

    def wait_handled(self, n: int, timeout_s: float = 600.0) -> list[tuple[str, int, int]]:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.handled()
            if len(got) >= n:
                return got
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pool exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {n} handled: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def pending(client: redis.Redis, key: str, group: str) -> int:
    for g in client.xinfo_groups(key):
        if _s(g["name"]) == group:
            return int(g["pending"])
    return 0


def last_delivered(client: redis.Redis, key: str, group: str) -> tuple[tuple[int, int], int]:
    """(last-delivered-id as a tuple, pending count) of ``group``."""
    for g in client.xinfo_groups(key):
        if _s(g["name"]) == group:
            return id_tuple(_s(g["last-delivered-id"])), int(g["pending"])
    raise RuntimeError(f"no group {group!r} on {key!r}")


def id_tuple(message_id: str | bytes) -> tuple[int, int]:
    ms, _, seq = _s(message_id).partition("-")
    return int(ms), int(seq or 0)


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
