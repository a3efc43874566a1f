"""The ledger of a fault test: what was published (acknowledged by ``publish``), what the
handlers did (JSON lines written by tests/faults/handlers.py in the worker processes) and
what ended in the DLQ. The claim it checks: ``published <= handled | dead_lettered``.

Handler phases: ``start`` (called), ``fail`` (about to raise), ``done`` (the handler's work,
its side effect, is done), ``skipped`` (the dedupe guard found it done already).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.conftest import wait_for

#: Reports of the session, printed at the end of the run by tests/faults/conftest.py.
REPORTS: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Report:
    published: int
    handled: int  # distinct published events whose work was done at least once
    dead_lettered: int  # distinct published events in the DLQ
    calls: int  # handler calls of any kind
    lost: list[str]  # published, neither handled nor dead-lettered
    duplicates: dict[str, int]  # event_id -> times its work was done (> 1)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        parts = [
            f"published={self.published}",
            f"handled={self.handled}",
            f"dead_lettered={self.dead_lettered}",
            f"lost={len(self.lost)}",
            f"duplicates={len(self.duplicates)}",
            f"calls={self.calls}",
        ]
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        return " ".join(parts)

    def __str__(self) -> str:
        text = self.line()
        if self.lost:
            text += f"\n  lost (first 10): {self.lost[:10]}"
        if self.duplicates:
            sample = dict(list(self.duplicates.items())[:10])
            text += f"\n  duplicates (first 10, times done): {sample}"
        return text


def read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``path``; a line cut short by a SIGKILL is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class Ledger:
    """Published ids (recorded here) against handler calls and dead letters (read back)."""

    def __init__(self, path: Path, client: redis.Redis, dlq_key: str) -> None:
        self.path = path
        self.client = client
        self.dlq_key = dlq_key
        self._lock = threading.Lock()
        self._published: dict[str, float] = {}

    # -- recording -------------------------------------------------------------------------

    def published(self, event_id: str) -> None:
        """``publish`` returned for ``event_id`` (it is acknowledged by Redis)."""
        with self._lock:
            self._published.setdefault(event_id, time.time())

    def published_many(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self.published(event_id)

    def published_ids(self) -> set[str]:
        with self._lock:
            return set(self._published)

    def out_of_order(self) -> int:
        """Events first handled after an event published later than them (no ordering
        across consumers: a count of how often that showed)."""
        with self._lock:
            order = list(self._published)
        first_done: dict[str, float] = {}
        for row in self.calls("done"):
            first_done.setdefault(row["event_id"], row["t"])
        times = [first_done[e] for e in order if e in first_done]
        latest, count = float("-inf"), 0
        for t in times:
            count += t < latest
            latest = max(latest, t)
        return count

    # -- reading back ----------------------------------------------------------------------

    def calls(self, phase: str | None = None) -> list[dict[str, Any]]:
        rows = read_lines(self.path)
        return rows if phase is None else [r for r in rows if r["phase"] == phase]

    def done(self) -> Counter[str]:
        return Counter(r["event_id"] for r in self.calls("done"))

    def calls_of(self, event_id: str, phase: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.calls(phase) if r["event_id"] == event_id]

    def dead_letters(self) -> Counter[str]:
        """event_id -> dead letters carrying it (foreign entries without one count as '')."""
        rows = self.client.xrange(self.dlq_key)
        return Counter(
            fields.get(b"event_id", b"").decode("utf-8", "replace") for _, fields in rows
        )

    # -- checking --------------------------------------------------------------------------

    def report(self, **extra: Any) -> Report:
        published = self.published_ids()
        done = self.done()
        dead = self.dead_letters()
        lost = sorted(published - set(done) - set(dead))
        duplicates = {e: n for e, n in done.items() if n > 1}
        return Report(
            published=len(published),
            handled=len(published & set(done)),
            dead_lettered=len(published & set(dead)),
            calls=sum(1 for r in self.calls() if r["phase"] == "start"),
            lost=lost,
            duplicates=duplicates,
            extra=extra,
        )

    def settled(self) -> bool:
        published = self.published_ids()
        return published <= set(self.done()) | set(self.dead_letters())

    def wait_settled(self, timeout_s: float) -> Report:
        """Wait (bounded) until every published event is handled or dead-lettered."""
        try:
            wait_for(self.settled, timeout_s, interval_s=0.1)
        except AssertionError:
            raise AssertionError(
                f"events lost (not settled in {timeout_s}s): {self.report()}"
            ) from None
        return self.report()


def note(test_name: str, line: str) -> None:
    """Print a ledger line (shown with -s / on failure) and keep it for the summary."""
    print(f"ledger {test_name}: {line}")
    REPORTS.append((test_name, line))


def record_report(test_name: str, report: Report) -> Report:
    note(test_name, str(report))
    REPORTS[-1] = (test_name, report.line())
    return report


def assert_nothing_lost(test_name: str, report: Report) -> None:
    record_report(test_name, report)
    assert not report.lost, f"{test_name}: lost events: {report}"
