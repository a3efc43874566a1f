"""Restart policy (pure): how long to wait before respawning a worker that died.

Per slot, an exponential backoff over consecutive quick deaths (not applied to a death in
a handler, which the entry in hand explains: see ``slots.CrashBlame``); per pool, a budget
of restarts per minute (applied to every unplanned restart). The supervisor asks and
carries out; nothing here sleeps or spawns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

QUICK_EXIT_S = 10.0  # a worker that dies sooner than this counts towards backoff
BASE_BACKOFF_S = 0.5  # first delay after a quick death; doubles on each further one
MAX_BACKOFF_S = 30.0
WINDOW_S = 60.0


@dataclass
class SlotBackoff:
    """Consecutive quick deaths of one slot -> delay before its respawn."""

    quick_failures: int = 0

    def after_exit(self, lived_s: float) -> float:
        self.quick_failures = self.quick_failures + 1 if lived_s < QUICK_EXIT_S else 0
        if not self.quick_failures:
            return 0.0
        return float(min(BASE_BACKOFF_S * 2.0 ** (self.quick_failures - 1), MAX_BACKOFF_S))


@dataclass
class RestartBudget:
    """At most ``per_minute`` unplanned restarts in any 60 s window of the pool."""

    per_minute: int
    _times: deque[float] = field(default_factory=deque)

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] > WINDOW_S:
            self._times.popleft()

    def used(self, now: float) -> int:
        self._forget(now)
        return len(self._times)

    def wait_s(self, now: float) -> float:
        """0 if a restart fits the budget now, else how long until one does."""
        self._forget(now)
        if len(self._times) < self.per_minute:
            return 0.0
        return WINDOW_S - (now - self._times[0])

    def record(self, now: float) -> None:
        self._times.append(now)
