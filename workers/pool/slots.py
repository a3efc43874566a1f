"""The supervisor's view of its slots: one per worker process (stable index and consumer
name across respawns), the watch that kills a hung handler and fails its attempt on the
worker's behalf (retry, then the DLQ), and the verdict on a worker that died in a
handler (the entry in hand is the culprit: dead-lettered once it has used up its
deliveries, and the worker is replaced at once)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any

from eventbus.errors import EventBusError
from eventbus.handler import OutcomeCallback
from eventbus.logs import log_context
from eventbus.outcomes import Outcomes
from eventbus.records import REASON_MAX_DELIVERIES, FailureInfo
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


class CrashBlame:
    """Judges a worker that died unplanned. If its handler held an entry (the slot's
    ``busy_since`` is set, ``current`` names the entry), that entry is the culprit:

    * once it has been delivered ``max_deliveries`` times (Redis's count, the one the
      intake screen uses), it is dead-lettered here, with the atomic ack-and-dead-letter
      script on the dead consumer's behalf (reason ``max_deliveries``), before the
      successor starts. Its next delivery would only have been screened out as poison
      anyway; dead-lettering it now spares a respawn and a recovery pass, and it is the
      same single entry: the batch-mates it leaves pending are never blamed (the
      successor recovers its own pending entries one at a time, issue 8's rule);
    * the death is *explained*, so the slot is respawned at once, without the crash-loop
      backoff: other tenants' entries the worker had read wait for its successor, so a
      backoff after each pill stalled them (11 ev/s instead of ~4,700). The pool's
      restart budget (``max_restarts_per_minute``) still counts these restarts.

    A death with no entry in hand (a crash at import, a broken connection setup, a kill
    between events) is unexplained and keeps the backoff.
    """

    def __init__(self, groups: PoolGroups, log: Any, count: OutcomeCallback) -> None:
        self._groups = groups
        self._log = log
        self._count = count

    def judge(self, slot: Slot, settings: PoolSettings) -> bool:
        """Whether the death of ``slot``'s worker is explained by an entry in its handler
        (dead-lettering that entry if it has used up its deliveries)."""
        delivery = slot.state.delivery() if slot.state.busy_since.value > 0 else None
        slot.state.busy_since.value = 0.0
        if delivery is None:
            slot.state.current.value = b""  # nothing to tell the successor
            return False
        # ``current`` is left for the successor: a platform worker recovers the other
        # subscriptions' entries before this one's (workers.pool.platform).
        group = self._groups.group(delivery.tenant, delivery.stream, delivery.group)
        context = {
            "tenant": delivery.tenant,
            "stream": delivery.stream,
            "consumer": slot.name,
            "message_id": delivery.message_id,
        }
        with log_context(**context):
            try:
                deliveries = group.delivery_count(slot.name, delivery.key, delivery.message_id)
                if deliveries < settings.max_deliveries:
                    self._log.warning(
                        "worker_died_in_handler",
                        deliveries=deliveries,
                        max_deliveries=settings.max_deliveries,
                    )
                    return True
                outcomes = Outcomes(group, self._count)
                failure = FailureInfo(
                    "MaxDeliveriesExceeded",
                    f"delivered {deliveries} times (limit {settings.max_deliveries}), the "
                    "last delivery killed its worker: dead-lettered by the supervisor",
                    "",
                )
                plan = outcomes.plan_dead_letter(
                    delivery.key,
                    delivery.message_id,
                    slot.name,
                    reason=REASON_MAX_DELIVERIES,
                    failure=failure,
                )
                outcomes.carry_out(plan)  # logs dead_lettered (or why not)
            except EventBusError as exc:  # Redis away: the successor's screen decides
                self._log.warning("crash_blame_unwritten", error=str(exc))
        return True
