"""Readiness (what /readyz and the systemd watchdog ask): workers, Redis, periodic jobs,
and the grace period before the watchdog is no longer fed."""

from __future__ import annotations

import threading

from tests.conftest import wait_for
from workers.pool.health import Readiness
from workers.pool.jobs import PeriodicJob
from workers.tools.localredis import LocalRedis, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_with_all_workers_redis_and_ticking_jobs(redis_server: LocalRedis) -> None:
    job = PeriodicJob("tick", 0.05, lambda: None)
    job.start()
    try:
        health = Readiness(redis_server.url, lambda: (2, 2), lambda: [job])
        verdict = health.check()
        assert verdict.ready and verdict.problems == ()
        assert health.watchdog_ok(grace_s=0)
    finally:
        job.stop()


def test_a_missing_worker_makes_it_unready_and_the_watchdog_waits_out_the_grace(
    redis_server: LocalRedis,
) -> None:
    clock = Clock()
    workers = {"ready": 1}
    health = Readiness(redis_server.url, lambda: (workers["ready"], 2), lambda: [], clock=clock)
    verdict = health.check()
    assert not verdict.ready and verdict.problems == ("1 of 2 workers not ready",)
    assert health.watchdog_ok(grace_s=30)
    clock.now += 29
    assert health.watchdog_ok(grace_s=30)
    clock.now += 2
    assert not health.watchdog_ok(grace_s=30)
    workers["ready"] = 2
    clock.now += 1  # past the 1 s cache
    assert health.watchdog_ok(grace_s=30) and health.not_ready_since is None


def test_unreachable_redis_is_not_ready() -> None:
    health = Readiness(f"redis://127.0.0.1:{free_port()}/0", lambda: (1, 1), lambda: [])
    verdict = health.check()
    assert not verdict.ready
    assert verdict.problems[0].startswith("redis unreachable")


def test_a_stuck_job_is_not_ready(redis_server: LocalRedis) -> None:
    release = threading.Event()
    job = PeriodicJob("stuck", 0.02, lambda: release.wait(30))
    job.start()
    try:
        health = Readiness(redis_server.url, lambda: (1, 1), lambda: [job])
        # each check is cached for 1 s; poll until the job's last tick is 3 intervals old
        wait_for(lambda: not health.check().ready, 10)
        assert health.check().problems == ("jobs not ticking: stuck",)
    finally:
        release.set()
        job.stop()
