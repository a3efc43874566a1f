"""Finding a pool's processes from outside (tests, benchmark, chaos run): the one /proc
scanner. Linux only, like the pool's parent-death signal."""

from __future__ import annotations

from pathlib import Path

# multiprocessing's spawn start method runs children as `python -c "from
# multiprocessing.spawn import spawn_main; ..."`; the resource tracker does not match.
_WORKER_MARK = b"spawn_main"


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (empty if it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def is_worker(pid: int) -> bool:
    """True if ``pid`` is alive and is a spawned worker process."""
    try:
        return _WORKER_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def worker_pids(supervisor_pid: int) -> list[int]:
    """The live worker processes of a supervisor."""
    return [pid for pid in children(supervisor_pid) if is_worker(pid)]


def rss_mb(pid: int) -> float:
    """VmRSS of a process, in MB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pids: list[int]) -> float:
    """CPU time the processes (all their threads) have used, in seconds (ns precision)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def state(pid: int) -> str:
    """The process state letter (R, S, T = stopped...), "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
