"""Run a real supervisor (and its worker processes) against the private redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from eventbus import AgentEvent, EventType, TenantEventBus
from tests.conftest import wait_for
from workers.tools.localredis import LocalRedis, pid_alive
from workers.tools.procs import worker_pids

TENANT, STREAM, GROUP = "acme", "tasks", "pool"
HANDLER = "tests.process.handlers:record"


def event(**data: Any) -> AgentEvent:
    return tenant_event(TENANT, **data)


def tenant_event(tenant: str, **data: Any) -> AgentEvent:
    """A planner's task for ``tenant`` carrying ``data``."""
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id=tenant,
        source_agent_id="planner",
        call_chain=["planner"],
        data=data,
    )


class Pool:
    """``eventbus-supervisor`` in a subprocess, its logs in a file, a ledger of calls."""

    def __init__(
        self,
        server: LocalRedis,
        tmp: Path,
        *,
        processes: int = 2,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        name: str = "pool",
        config: Path | None = None,
    ) -> None:
        self.server = server
        self.tmp = tmp
        self.ledger_path = tmp / "ledger.jsonl"
        self.log_path = tmp / f"{name}.log"
        one = ["--tenant", TENANT, "--stream", STREAM, "--group", GROUP, "--handler", HANDLER]
        self.args = [
            "--redis-url",
            server.url,
            *(["--config", str(config)] if config else one),
            "--processes",
            str(processes),
            "--block-ms",
            "200",
            "--log-format",
            "json",
            "--grace-period-s",
            "10",
            *(args or []),
        ]
        self.env = {
            **os.environ,
            "EVENTBUS_TEST_LEDGER": str(self.ledger_path),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Pool:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.pool.supervisor", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
            cwd=Path(__file__).parents[2],
        )
        log.close()
        if wait_ready:
            wait_for(lambda: self.logged("supervisor_ready"), 60)
        return self

    # -- observing -------------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "line": line})
        return out

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("event") == name]

    def ledger(self) -> list[dict[str, Any]]:
        """The calls so far; a line a worker is still writing (no newline yet) is left for
        the next look."""
        if not self.ledger_path.exists():
            return []
        text = self.ledger_path.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(x) for x in complete.splitlines() if x]

    def done_ids(self) -> set[str]:
        return {x["event_id"] for x in self.ledger() if x["phase"] == "done"}

    def starts(self) -> Counter[str]:
        return Counter(x["event_id"] for x in self.ledger() if x["phase"] == "start")

    def worker_pids(self) -> list[int]:
        """Live worker processes (children of the supervisor, without the resource tracker)."""
        assert self.proc is not None
        return worker_pids(self.proc.pid)

    # -- stopping --------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill_all(self) -> None:
        if self.proc is None:
            return
        pids = self.worker_pids() if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def logged_at(entry: dict[str, Any]) -> float:
    """The time (epoch seconds) of a JSON log line, from its ISO timestamp."""
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def pending_count(bus: TenantEventBus) -> int:
    total = 0
    for key in (bus.keys.stream(STREAM), bus.keys.retry_stream(STREAM, GROUP)):
        if bus.redis.exists(key):
            for g in bus.redis.xinfo_groups(key):
                total += int(g["pending"])
    return total
