"""The supervisor: spawns one worker process per consumer, restarts the ones that die,
kills hung handlers, runs the reclaimer and the DLQ sweeper, talks to systemd, and
shuts down in two phases (quiet, then drain until the grace period, then kill).

    python -m workers.pool.supervisor --tenant acme --stream tasks --group writers \\
        --handler myagents.writer:handle --processes 4

Signals: TERM/INT drain and exit 0 (a second one kills at once); HUP reloads the env file
and restarts the workers one by one. Handlers only record the signal; the loop acts.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

import structlog

from eventbus import layout, metrics
from eventbus.logs import configure_logging
from eventbus.redis_io import connect
from workers.pool import sdnotify
from workers.pool.flags import parse_settings
from workers.pool.health import Readiness
from workers.pool.jobs import PeriodicJob, PoolGroups, Reclaimer, Sweeper
from workers.pool.loader import HandlerLoadError, load_handler
from workers.pool.restarts import RestartBudget
from workers.pool.settings import (
    PoolSettings,
    SettingsError,
    handler_environment,
)
from workers.pool.signals import SignalInbox
from workers.pool.slots import CrashBlame, HungHandlers, Slot, new_slot
from workers.pool.worker import EXIT_HANDLER_LOAD, run_worker

if TYPE_CHECKING:
    from workers.pool.metrics import MetricsServer

READY_TIMEOUT_S = 30.0  # READY=1 is sent after this even if some worker is not up yet


class Supervisor:
    """Runs one pool: (tenant, stream, group, handler) x N processes."""

    def __init__(self, settings: PoolSettings, argv: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.argv = list(argv or [])
        self.ctx = mp.get_context("spawn")
        subs = settings.subscriptions
        where = {"tenant": subs[0].tenant, "stream": subs[0].stream, "group": subs[0].group}
        self.log = structlog.get_logger("workers.pool.supervisor").bind(
            **(where if len(subs) == 1 else {}), pid=os.getpid()
        )
        self.slots = [self._new_slot(i) for i in range(settings.processes)]
        self._inbox = SignalInbox()
        self._signals = self._inbox.queue
        self._client = connect(
            settings.redis_url, cluster=settings.redis_cluster, client_name="eventbus-supervisor"
        )
        self._groups = PoolGroups(self._client, settings)
        self._hung = HungHandlers(self._groups, self.log, self._count)
        self._blame = CrashBlame(self._groups, self.log, self._count)
        self._jobs: list[PeriodicJob] = []
        self._readiness = Readiness(
            settings.redis_url,
            self.workers_ready,
            lambda: self._jobs,
            cluster=settings.redis_cluster,
        )
        self._metrics: MetricsServer | None = None
        self._count_lock = threading.Lock()
        self._reload_queue: list[int] = []
        self._budget = RestartBudget(settings.max_restarts_per_minute)
        self._shutting_down = False

    # -- slots -----------------------------------------------------------------------------

    def _new_slot(self, index: int) -> Slot:
        return new_slot(self.ctx, index, self.settings.consumer_name(index))

    def workers_ready(self) -> tuple[int, int]:
        """(workers up and consuming, workers configured)."""
        return sum(1 for s in self.slots if s.consuming), len(self.slots)

    def _count(
        self, what: str, reason: str = "", where: tuple[str, str, str] | None = None
    ) -> None:
        """Count on the supervisor's own tally (restarts, timeouts, its reclaims and dead
        letters; ``where``: the subscription, in a platform pool), when metrics are on."""
        if self._metrics is not None:
            with self._count_lock:  # the main loop and the reclaimer thread both count
                tally = self._metrics.tally_for(where)
                tally.count(what, reason if what == "dead_lettered" else "")

    def live_names(self) -> list[str]:
        return [s.name for s in self.slots if s.process is not None and s.process.is_alive()]

    def _spawn(self, slot: Slot) -> None:
        slot.state.ready_flag.value = False
        slot.state.busy_since.value = 0.0
        slot.state.in_flight.value = b""
        slot.name = self.settings.consumer_name(slot.index)
        process = self.ctx.Process(
            target=run_worker,
            args=(
                self.settings,
                slot.index,
                os.getpid(),
                slot.state,
                self._metrics.dir if self._metrics else None,
                [s.state for s in self.slots],
            ),
            name=f"eventbus-worker-{slot.name}",
            daemon=False,
        )
        # Signals stay blocked while the child starts, so none lands half-way.
        old = signal.pthread_sigmask(
            signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        )
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        slot.process = process
        slot.started_at = time.monotonic()
        slot.respawn_at = None
        slot.planned_exit = None
        self.log.info("worker_spawned", consumer=slot.name, worker_pid=process.pid)

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        self._inbox.install()
        self.log.info(
            "supervisor_starting", processes=len(self.slots), handler=self.settings.handler
        )
        layout.warn_legacy_keys(
            self._client, [(x.tenant, x.stream) for x in self.settings.subscriptions
             if not x.every_tenant], self.log)  # fmt: skip
        self._start_metrics()  # first: the workers write into its directory
        for slot in self.slots:
            self._spawn(slot)
        self._start_jobs()
        started = time.monotonic()
        ready_sent = False
        watchdog_s = sdnotify.watchdog_interval_s()
        next_watchdog = 0.0
        while True:
            self._wait(0.25)
            while self._signals:
                signum = self._signals.popleft()
                if signum in (signal.SIGTERM, signal.SIGINT):
                    return self._shutdown(signum)
                if signum == signal.SIGHUP:
                    self._begin_reload()
            self._reap_and_respawn()
            self._hung.check(self.slots, self.settings)  # hung handlers
            self._advance_reload()
            now = time.monotonic()
            if not ready_sent and (
                all(s.state.ready for s in self.slots) or now - started > READY_TIMEOUT_S
            ):
                ready_sent = True
                sdnotify.notify(
                    f"READY=1\nSTATUS=running {len(self.slots)} workers\nMAINPID={os.getpid()}"
                )
                self.log.info("supervisor_ready", workers=self.live_names())
            if ready_sent and watchdog_s and now >= next_watchdog:
                next_watchdog = now + watchdog_s
                self._feed_watchdog()

    def _wait(self, timeout_s: float) -> None:
        sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
        wait([*sentinels, self._inbox.fd], timeout=timeout_s)
        self._inbox.drain()

    def _feed_watchdog(self) -> None:
        """WATCHDOG=1, unless the pool has been unready (as /readyz says) for longer than
        the grace period: then systemd restarts it after WatchdogSec."""
        if self._readiness.watchdog_ok(self.settings.watchdog_grace_s):
            sdnotify.notify("WATCHDOG=1")
            return
        verdict = self._readiness.check()
        self.log.error("watchdog_withheld", problems=list(verdict.problems))

    def _start_metrics(self) -> None:
        st = self.settings
        if not st.metrics_port:
            return
        from workers.pool.metrics import MetricsServer

        self._metrics = MetricsServer(
            st.metrics_host,
            st.metrics_port,
            self._groups,
            self._readiness,
            self.workers_ready,
            st.metrics_max_tenants,
        )
        self._metrics.start()

    def _start_jobs(self) -> None:
        reclaimer = Reclaimer(self._groups, self.live_names, self._count)
        sweeper = Sweeper(self._groups, self.live_names)
        self._jobs = [
            PeriodicJob("reclaimer", reclaimer.interval_s, reclaimer.tick),
            PeriodicJob("sweeper", sweeper.interval_s, sweeper.tick),
        ]
        for job in self._jobs:
            job.start()

    # -- dying workers -----------------------------------------------------------------------

    def _reap_and_respawn(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                slot.state.in_flight.value = b""  # its in-flight place is free again
                self._on_exit(slot, process.exitcode, now)
                slot.process = None
            if slot.process is None and slot.respawn_at is not None and now >= slot.respawn_at:
                planned = slot.planned_respawn
                if not planned:
                    self._budget.record(now)
                    self._count("worker_restart")
                self._spawn(slot)
                self.log.log(
                    logging.INFO if planned else logging.WARNING,
                    "worker_respawned",
                    consumer=slot.name,
                    planned=planned,
                    restarts_last_minute=self._budget.used(now),
                )

    def _on_exit(self, slot: Slot, exitcode: int | None, now: float) -> None:
        slot.planned_respawn = slot.planned_exit in ("reload", "timeout")
        if slot.planned_respawn:
            slot.state.current.value = b""  # no suspect for the successor (CrashBlame)
            slot.respawn_at = now
            return
        if exitcode == EXIT_HANDLER_LOAD:
            self.log.critical("worker_handler_load_failed", consumer=slot.name)
        lived = now - slot.started_at
        # Died in a handler: the entry in hand is blamed (dead-lettered once it used up its
        # deliveries) and the slot comes back at once, so the other tenants' entries the
        # worker had read are not held up by a backoff (slots.CrashBlame).
        explained = self._blame.judge(slot, self.settings)
        delay = 0.0 if explained else slot.backoff.after_exit(lived)
        budget_wait = self._budget.wait_s(now)
        if budget_wait > 0:
            delay = max(delay, budget_wait)
            self.log.critical(
                "restart_limit_reached",
                consumer=slot.name,
                restarts_last_minute=self._budget.used(now),
                limit=self.settings.max_restarts_per_minute,
                respawn_in_s=round(delay, 1),
            )
        self.log.error(
            "worker_exited",
            consumer=slot.name,
            exitcode=exitcode,
            lived_s=round(lived, 2),
            died_in_handler=explained,
            respawn_in_s=round(delay, 2),
        )
        slot.respawn_at = now + delay

    # -- reload -----------------------------------------------------------------------------

    def _begin_reload(self) -> None:
        try:
            new = parse_settings(self.argv)  # the env file is read again
        except (SettingsError, SystemExit) as exc:
            self.log.error("reload_refused", error=str(exc))
            return
        os.environ.update(handler_environment(new.env_file))  # for the workers started next
        if new.processes != self.settings.processes:
            self.log.warning(
                "reload_processes_unchanged", detail="changing --processes needs a restart"
            )
            new = replace(new, processes=self.settings.processes)
        self.settings = new
        self._groups.settings = new  # the jobs follow the new subscriptions
        self._reload_queue = [s.index for s in self.slots]
        self.log.info("reload_started", env_file=new.env_file)

    def _advance_reload(self) -> None:
        """One slot at a time: stop it gracefully, wait until its successor is ready."""
        if not self._reload_queue:
            return
        slot = self.slots[self._reload_queue[0]]
        now = time.monotonic()
        if slot.reload_deadline is None:
            if slot.process is None:  # waiting for a respawn: it gets the new settings
                self._reload_queue.pop(0)
                return
            slot.planned_exit = "reload"
            slot.reload_deadline = now + self.settings.grace_period_s
            slot.process.terminate()
            return
        if slot.planned_exit == "reload":  # the old worker is still finishing
            if now > slot.reload_deadline and slot.process is not None:
                slot.process.kill()
            return
        if slot.process is not None and slot.state.ready:
            slot.reload_deadline = None
            self._reload_queue.pop(0)
            if not self._reload_queue:
                self.log.info("reload_done", workers=self.live_names())

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self, signum: int) -> int:
        sdnotify.notify("STOPPING=1")
        self.log.info(
            "shutdown_started",
            signal=signal.Signals(signum).name,
            grace_period_s=self.settings.grace_period_s,
        )
        for job in self._jobs:
            job.stop()
        for slot in self.slots:
            slot.planned_exit = "shutdown"
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + self.settings.grace_period_s
        while any(s.process is not None and s.process.is_alive() for s in self.slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._second_stop():
                for slot in self.slots:
                    if slot.process is not None and slot.process.is_alive():
                        self.log.error("worker_killed_after_grace", consumer=slot.name)
                        slot.process.kill()
                break
            self._wait(min(remaining, 0.25))
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(10)
        for job in self._jobs:
            job.join(5)
        if self._metrics is not None:
            self._metrics.close()
        self._readiness.close()
        self.log.info("supervisor_stopped")
        return 0

    def _second_stop(self) -> bool:
        while self._signals:
            if self._signals.popleft() in (signal.SIGTERM, signal.SIGINT):
                self.log.warning("hard_stop")
                return True
        return False


def main(argv: Sequence[str] | None = None, *, prog: str = "eventbus-supervisor") -> int:
    """Console entry point: ``eventbus-supervisor``, and ``eventbus supervise`` with its
    own ``prog``. A missing or bad setting or handler: one line on stderr, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(argv, prog=prog)
    except SettingsError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
    try:
        os.environ.update(handler_environment(settings.env_file))  # the workers inherit it
        for sub in settings.subscriptions:
            load_handler(sub.handler)
    except HandlerLoadError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    if settings.metrics_port and not metrics.available():
        sys.stderr.write(
            "eventbus-supervisor: error: --metrics-port needs prometheus_client: "
            "pip install 'eventbus[metrics]'\n"
        )
        return 2
    return Supervisor(settings, argv).run()


if __name__ == "__main__":
    raise SystemExit(main())
