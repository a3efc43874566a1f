"""The chaos run (python -m workers.tools.chaos) as a test: a short smoke and a 60-second run.
Each starts its own private redis-server, publisher, pool and faults; the ledger it writes
must show no lost event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.harness import ROOT
from tests.faults.ledger import note


def run_chaos(tmp_path: Path, *args: str, timeout_s: float) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "-m", "workers.tools.chaos", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    print(proc.stdout)
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert proc.returncode == (1 if report["lost"] else 0), proc.stderr[-3000:]
    return report  # type: ignore[no-any-return]


def _summary(report: dict) -> str:  # type: ignore[type-arg]
    keys = ("published", "handled", "dead_lettered", "lost", "duplicates", "faults")
    return " ".join(f"{k}={report[k]}" for k in keys) + f" recovery={report['recovery']}"


@pytest.mark.slow  # about 12 s with start-up and drain
def test_chaos_smoke_loses_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        tmp_path,
        *("--duration", "8", "--rate", "100", "--processes", "2"),
        *("--seed", "11", "--fault-interval-s", "1.5"),
        timeout_s=120,
    )
    note("chaos smoke", _summary(report))
    assert report["lost"] == 0, report
    assert report["published"] > 400 and sum(report["faults"].values()) >= 2


@pytest.mark.slow
def test_chaos_60_seconds_loses_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        tmp_path,
        *("--duration", "60", "--rate", "200", "--processes", "3"),
        timeout_s=280,
    )
    note(f"chaos 60s (seed {report['seed']})", _summary(report))
    assert report["lost"] == 0, report
    assert set(report["faults"]) == {"worker_kill", "redis_kill", "client_kill", "debug_sleep"}
    assert report["published"] > 10_000


def test_chaos_refuses_unknown_fault_kinds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workers.tools.chaos", "--faults", "meteor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "meteor" in proc.stderr
