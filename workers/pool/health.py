"""Health of a pool: alive (the supervisor answers) and ready (workers up, Redis
reachable, periodic jobs ticking). ``/readyz`` and the systemd watchdog ask the same
:class:`Readiness`, so the watchdog stops being fed once the pool has not been ready for
longer than a grace period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
from redis.exceptions import RedisClusterException

from eventbus.redis_io import connect
from workers.pool.jobs import PeriodicJob

CACHE_S = 1.0  # a check is reused this long: probes and the watchdog cannot load Redis
PING_TIMEOUT_S = 1.0
JOB_LATE_FACTOR = 3.0  # a job is stuck when its last tick is this many intervals old


@dataclass(frozen=True)
class Verdict:
    ready: bool
    #: What is wrong, one short sentence per problem (empty when ready).
    problems: tuple[str, ...] = ()
    checks: dict[str, object] = field(default_factory=dict)


class Readiness:
    """Evaluates readiness on demand (cached for ``CACHE_S``) and remembers since when the
    pool has not been ready."""

    def __init__(
        self,
        redis_url: str,
        workers: Callable[[], tuple[int, int]],
        jobs: Callable[[], Sequence[PeriodicJob]],
        clock: Callable[[], float] = time.monotonic,
        *,
        cluster: bool = False,
    ) -> None:
        self._client = connect(
            redis_url,
            cluster=cluster,
            socket_timeout=PING_TIMEOUT_S,
            socket_connect_timeout=PING_TIMEOUT_S,
            client_name="eventbus-health",
        )
        self._workers = workers  # () -> (ready, configured)
        self._jobs = jobs
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Verdict | None = None
        self._last_at = 0.0
        self.not_ready_since: float | None = None

    def check(self) -> Verdict:
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._last_at >= CACHE_S:
                self._last = self._evaluate(now)
                self._last_at = now
                if self._last.ready:
                    self.not_ready_since = None
                elif self.not_ready_since is None:
                    self.not_ready_since = now
            return self._last

    def _evaluate(self, now: float) -> Verdict:
        problems = []
        ready, configured = self._workers()
        if ready < configured:
            problems.append(f"{configured - ready} of {configured} workers not ready")
        try:
            redis_ok = bool(self._client.ping())
        except (redis.RedisError, RedisClusterException) as exc:
            redis_ok = False
            problems.append(f"redis unreachable: {type(exc).__name__}")
        late = [
            job.name
            for job in self._jobs()
            if not job.is_alive() or now - job.last_tick > JOB_LATE_FACTOR * job.interval_s
        ]
        if late:
            problems.append("jobs not ticking: " + ", ".join(late))
        checks = {"workers_ready": ready, "workers": configured, "redis": redis_ok, "late": late}
        return Verdict(not problems, tuple(problems), checks)

    def watchdog_ok(self, grace_s: float) -> bool:
        """Feed the watchdog? Yes while ready, and for ``grace_s`` after readiness is lost."""
        verdict = self.check()
        if verdict.ready or self.not_ready_since is None:
            return True
        return self._clock() - self.not_ready_since <= grace_s

    def close(self) -> None:
        self._client.close()
