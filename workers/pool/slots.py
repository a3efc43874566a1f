"""The supervisor's view of its slots: one per worker process (stable index and consumer
name across respawns), and the watch that kills a hung handler and fails its attempt on
the worker's behalf (retry, then the DLQ)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any

from eventbus.handler import OutcomeCallback
from eventbus.logs import log_context
from eventbus.outcomes import Outcomes
from eventbus.records import FailureInfo
from workers.pool.jobs import PoolGroups
from workers.pool.restarts import SlotBackoff
from workers.pool.settings import PoolSettings
from workers.pool.worker import InHand, SlotState


@dataclass
class Slot:
    index: int
    name: str
    state: SlotState
    process: SpawnProcess | None = None
    started_at: float = 0.0
    backoff: SlotBackoff = field(default_factory=SlotBackoff)
    respawn_at: float | None = None
    planned_exit: str | None = None  # "reload" | "timeout" | "shutdown" when we stop it
    planned_respawn: bool = False  # the coming respawn follows a planned exit
    reload_deadline: float | None = None  # set while this slot is being reloaded

    @property
    def consuming(self) -> bool:
        """Its worker is alive and has said it is ready."""
        return self.state.ready and self.process is not None and self.process.is_alive()


def new_slot(ctx: Any, index: int, name: str) -> Slot:
    """A slot with its shared state (plain shared memory of ``ctx``, a spawn context)."""
    state = SlotState(
        busy_since=ctx.Value("d", 0.0, lock=False),
        current=ctx.Array("c", 1024, lock=False),
        ready_flag=ctx.Value("b", False, lock=False),
        in_flight=ctx.Array("c", 128, lock=False),
    )
    return Slot(index, name, state)


class HungHandlers:
    """Kills a worker whose handler has run longer than ``handler_timeout_s`` (0 = off);
    the attempt counts as failed: retried, then dead-lettered, like a handler that raised."""

    def __init__(self, groups: PoolGroups, log: Any, count: OutcomeCallback) -> None:
        self._groups = groups
        self._log = log
        self._count = count  # metrics: count("handler_timeout"), and the outcomes

    def check(self, slots: Sequence[Slot], settings: PoolSettings) -> None:
        timeout = settings.handler_timeout_s
        if timeout <= 0:
            return
        now = time.monotonic()
        for slot in slots:
            busy = slot.state.busy_since.value
            process = slot.process
            if process is None or busy <= 0 or now - busy < timeout or slot.planned_exit:
                continue
            delivery = slot.state.delivery()
            slot.planned_exit = "timeout"
            self._count("handler_timeout", "")
            process.kill()
            process.join(10)
            if delivery is not None:
                self._fail(slot, delivery, now - busy, settings)

    def _fail(self, slot: Slot, delivery: InHand, ran_s: float, settings: PoolSettings) -> None:
        key, message_id, retry_count = delivery.key, delivery.message_id, delivery.retry_count
        context = {
            "tenant": delivery.tenant,
            "stream": delivery.stream,
            "consumer": slot.name,
            "message_id": message_id,
            "attempt": retry_count + 1,
        }
        with log_context(**context):
            self._log.error(
                "handler_timeout", ran_s=round(ran_s, 1), timeout_s=settings.handler_timeout_s
            )
            failure = FailureInfo(
                "HandlerTimeout",
                f"handler ran longer than {settings.handler_timeout_s}s; worker killed",
                "",
            )
            group = self._groups.group(delivery.tenant, delivery.stream, delivery.group)
            Outcomes(group, self._count).fail(
                key,
                message_id,
                slot.name,
                retry_count=retry_count,
                failure=failure,
                policy=settings.retry_policy(),
            )
