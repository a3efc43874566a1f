"""The supervisor's verdict on a worker that died (``workers.pool.slots.CrashBlame``),
against a real Redis: an entry in the handler is the culprit, dead-lettered (reason
``max_deliveries``) once it has been delivered ``max_deliveries`` times and left pending
before that; a death with nothing in hand is unexplained. The slot is real shared memory,
written by the workers' own :class:`SlotReporter`."""

from __future__ import annotations

import multiprocessing as mp

import structlog

from eventbus import DeadLetterQueue, TenantEventBus
from tests.integration.helpers import make_event
from workers.pool.flags import parse_settings
from workers.pool.jobs import PoolGroups
from workers.pool.settings import PoolSettings
from workers.pool.slots import CrashBlame, Slot, new_slot
from workers.pool.worker import SlotReporter

ENV = {
    "EVENTBUS_TENANT": "acme",
    "EVENTBUS_STREAM": "tasks",
    "EVENTBUS_GROUP": "writers",
    "EVENTBUS_HANDLER": "pkg.mod:handle",
    "EVENTBUS_MAX_DELIVERIES": "2",
}


def _died_in_handler(bus: TenantEventBus, deliveries: int) -> tuple[PoolSettings, Slot, str]:
    """A slot whose worker read one entry ``deliveries`` times and died in its handler."""
    settings = parse_settings([], ENV)
    slot = new_slot(mp.get_context("spawn"), 0, settings.consumer_name(0))
    message_id = bus.publish("tasks", make_event())
    bus.ensure_group("tasks", "writers")
    key = bus.keys.stream("tasks")
    for n in range(deliveries):  # ">" delivers it; "0" delivers it again (own pending)
        bus.redis.xreadgroup("writers", slot.name, {key: "0" if n else ">"}, count=1)
    SlotReporter(slot.state, "acme", "tasks", "writers").started(key, message_id, 0)
    return settings, slot, message_id


def _blame(bus: TenantEventBus, settings: PoolSettings) -> tuple[CrashBlame, list[tuple[str, str]]]:
    counted: list[tuple[str, str]] = []
    log = structlog.get_logger("test")
    groups = PoolGroups(bus.redis, settings)
    return CrashBlame(groups, log, lambda what, reason: counted.append((what, reason))), counted


def test_an_entry_that_used_up_its_deliveries_in_a_handler_is_dead_lettered(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    settings, slot, message_id = _died_in_handler(bus, deliveries=2)
    blame, counted = _blame(bus, settings)
    assert blame.judge(slot, settings) is True  # explained: respawned at once
    (letter,) = dlq.list_dlq_messages("tasks")
    assert letter.reason == "max_deliveries"
    assert letter.error_type == "MaxDeliveriesExceeded"
    assert bus.get_pending("tasks", "writers") == []  # moved and acked in one script
    assert counted == [("dead_lettered", "max_deliveries")]
    assert slot.state.busy_since.value == 0.0
    assert message_id


def test_an_entry_with_deliveries_left_stays_pending_for_the_successor(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    settings, slot, message_id = _died_in_handler(bus, deliveries=1)
    blame, counted = _blame(bus, settings)
    assert blame.judge(slot, settings) is True
    assert dlq.list_dlq_messages("tasks") == []
    assert [(p.message_id, p.deliveries) for p in bus.get_pending("tasks", "writers")] == [
        (message_id, 1)
    ]
    assert counted == []
    # the successor is told which subscription to recover last
    delivery = slot.state.delivery()
    assert delivery is not None and delivery[:3] == ("acme", "tasks", "writers")


def test_a_death_with_nothing_in_the_handler_is_unexplained(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    settings, slot, message_id = _died_in_handler(bus, deliveries=2)
    slot.state.busy_since.value = 0.0  # the handler had returned: died between events
    blame, counted = _blame(bus, settings)
    assert blame.judge(slot, settings) is False  # the backoff applies
    assert dlq.list_dlq_messages("tasks") == []
    assert slot.state.delivery() is None  # no suspect for the successor
