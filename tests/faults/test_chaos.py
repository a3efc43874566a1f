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
    # A fixed seed: its schedule injects a CLIENT KILL at 0.9 s and a Redis kill at 4.8 s
    # of waiting, both of which always count, so the run holds two faults on any machine.
    report = run_chaos(
        tmp_path,
        *("--duration", "8", "--rate", "100", "--processes", "2"),
        *("--seed", "11", "--fault-interval-s", "1.5", "--drain-timeout-s", "200"),
        timeout_s=280,
    )
    note("chaos smoke", _summary(report))
    assert report["lost"] == 0, report
    # Enough happened to mean something (floors a loaded machine meets; speed is the
    # benchmark's business, not this test's).
    assert report["published"] >= 100 and sum(report["faults"].values()) >= 2, report


@pytest.mark.slow  # about 25 s: a cluster of 6 nodes, a failover, the drain
def test_chaos_cluster_smoke_with_a_master_kill_loses_nothing(tmp_path: Path) -> None:
    # Seed 11 draws every cluster fault kind once within 12 s (a bag: each kind per round),
    # the SIGKILL of the tenant's master with its failover among them.
    report = run_chaos(
        tmp_path,
        *("--cluster", "--duration", "12", "--rate", "100", "--processes", "2"),
        *("--seed", "11", "--fault-interval-s", "2", "--drain-timeout-s", "200"),
        timeout_s=400,
    )
    note("chaos cluster smoke", _summary(report))
    assert report["lost"] == 0, report
    assert report["faults"].get("master_kill", 0) >= 1, report
    assert report["published"] >= 100, report


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_60_seconds_loses_nothing(tmp_path: Path, seed: int) -> None:
    report = run_chaos(
        tmp_path,
        *("--duration", "60", "--rate", "200", "--processes", "3"),
        *("--seed", str(seed), "--drain-timeout-s", "300"),
        timeout_s=540,
    )
    note(f"chaos 60s (seed {report['seed']})", _summary(report))
    assert report["lost"] == 0, report
    # Every kind gets a turn in each round of four faults (chaos.py draws them from a bag);
    # 60 s at a mean of one fault per 3 s makes fewer than four about a 1e-5 chance.
    kinds = {"worker_kill", "redis_kill", "client_kill", "debug_sleep"}
    assert set(report["faults"]) == kinds, f"seed {seed}: {report['faults']}"
    assert report["published"] >= 1_000, report  # a floor, not a throughput claim


def test_chaos_refuses_unknown_fault_kinds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workers.tools.chaos", "--faults", "meteor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "meteor" in proc.stderr
