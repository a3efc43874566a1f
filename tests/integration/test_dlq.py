"""DeadLetterQueue on a real Redis: list, get, replay, purge, count, retention."""

from __future__ import annotations

import pytest
import redis

from eventbus import (
    AgentEvent,
    DeadLetterQueue,
    EventType,
    HandlerContext,
    TenantEventBus,
    wants_context,
)
from eventbus.errors import DLQEntryNotFound
from tests.integration.helpers import Recorder, always_fail, consumer, drain, make_event

DLQ_KEY = "t:{acme}:events:tasks:dlq"


def dead_letter_via(bus: TenantEventBus, dlq: DeadLetterQueue, event: AgentEvent) -> str:
    """Publish ``event``; group ``billing`` fails on it at once, ``audit`` handles it."""
    message_id = bus.publish("tasks", event)
    before = dlq.count("tasks")
    billing = consumer(bus, dlq, group="billing", max_retries=0)
    drain(billing, Recorder(fail=always_fail), lambda: dlq.count("tasks") == before + 1)
    audit = Recorder()
    drain(consumer(bus, dlq, group="audit"), audit, lambda: event.event_id in audit.ids())
    return message_id


def old_letters(r: redis.Redis, n: int) -> list[str]:
    """Dead letters written long ago (ids from 1970), by hand."""
    return [
        r.xadd(DLQ_KEY, {"_dlq_reason": "manual"}, id=f"{1000 + i}-0").decode() for i in range(n)
    ]


# -- listing --------------------------------------------------------------------------


def test_list_returns_decoded_dead_letters_oldest_first_with_their_metadata(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    events = [make_event(data={"n": i}) for i in range(3)]
    ids = [dead_letter_via(bus, dlq, e) for e in events]

    letters = dlq.list_dlq_messages("tasks")

    assert [x.event for x in letters] == events
    assert [x.original_message_id for x in letters] == ids
    assert [x.dlq_id for x in letters] == sorted(x.dlq_id for x in letters)
    first = letters[0]
    assert (first.reason, first.group, first.retry_count) == ("handler_failed", "billing", 0)
    assert first.fields["event_id"] == events[0].event_id
    assert not any(k.startswith("_") for k in first.fields)
    assert first.as_dict()["event_type"] == "task_assigned"
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks", count=2)] == [
        x.dlq_id for x in letters[:2]
    ]


def test_undecodable_dead_letters_are_listed_with_their_decode_error(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    r.xadd(DLQ_KEY, {"event_id": "e-1", "version": "9.0", "_dlq_reason": "decode_error"})

    [letter] = dlq.list_dlq_messages("tasks")

    assert letter.event is None
    assert letter.decode_error is not None and "'9.0'" in letter.decode_error
    assert letter.reason == "decode_error"
    assert letter.as_dict()["event_id"] == "e-1"


def test_get_of_an_unknown_or_malformed_id_raises_dlq_entry_not_found(
    dlq: DeadLetterQueue,
) -> None:
    with pytest.raises(KeyError, match="no dead letter '1-1' in the DLQ of stream 'tasks'"):
        dlq.get("tasks", "1-1")
    with pytest.raises(DLQEntryNotFound, match="invalid DLQ message id 'nope'"):
        dlq.get("tasks", "nope")


# -- replay ---------------------------------------------------------------------------


def test_replay_hands_the_event_back_only_to_the_group_that_failed(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    dead_letter_via(bus, dlq, event)
    [letter] = dlq.list_dlq_messages("tasks")

    new_id = dlq.replay_message("tasks", letter.dlq_id)

    assert new_id != letter.dlq_id
    assert dlq.count("tasks") == 0
    retried: list[tuple[str, int]] = []

    @wants_context
    def billing_handler(e: AgentEvent, ctx: HandlerContext) -> None:
        retried.append((ctx.message_id, ctx.retry_count))

    drain(consumer(bus, dlq, group="billing"), billing_handler, lambda: retried)
    assert retried == [(new_id, 0)]
    audit = Recorder()
    consumer(bus, dlq, group="audit").process_batch(audit, block_ms=50)
    assert audit.calls == []  # audit handled it already: no second delivery
    assert bus.get_pending("tasks", "billing") == []


def test_a_replayed_event_that_fails_again_still_names_its_published_id(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    message_id = dead_letter_via(bus, dlq, make_event())
    dlq.replay_message("tasks", dlq.list_dlq_messages("tasks")[0].dlq_id)

    billing = consumer(bus, dlq, group="billing", max_retries=1)
    drain(billing, Recorder(fail=always_fail), lambda: dlq.count("tasks") == 1)

    [letter] = dlq.list_dlq_messages("tasks")
    assert (letter.original_message_id, letter.retry_count) == (message_id, 1)


def test_replay_of_an_unknown_id_raises_a_clear_key_error(dlq: DeadLetterQueue) -> None:
    with pytest.raises(DLQEntryNotFound) as info:
        dlq.replay_message("tasks", "12345-0")

    assert isinstance(info.value, KeyError)
    assert str(info.value) == "no dead letter '12345-0' in the DLQ of stream 'tasks'"


def test_replay_all_with_an_event_type_filter_replays_only_that_type(
    r: redis.Redis, bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    done = make_event(event_type=EventType.TASK_COMPLETED)
    assigned = [make_event(), make_event()]
    for e in [assigned[0], done, assigned[1]]:
        dead_letter_via(bus, dlq, e)

    new_ids = dlq.replay_all("tasks", event_type="task_assigned")

    assert len(new_ids) == 2
    assert [x.event for x in dlq.list_dlq_messages("tasks")] == [done]
    replayed = r.xrange("t:{acme}:events:tasks:retry:billing")
    assert [f[b"event_id"].decode() for _, f in replayed] == [e.event_id for e in assigned]
    assert dlq.replay_all("tasks", limit=0) == []
    assert len(dlq.replay_all("tasks")) == 1 and dlq.count("tasks") == 0


def test_replay_all_accepts_the_event_type_by_name_and_refuses_unknown_types(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    dead_letter_via(bus, dlq, make_event())
    with pytest.raises(ValueError, match="'TASK_EXPLODED'"):
        dlq.replay_all("tasks", event_type="TASK_EXPLODED")
    assert dlq.count("tasks") == 1
    assert len(dlq.replay_all("tasks", event_type="TASK_ASSIGNED")) == 1
    assert dlq.count("tasks") == 0


# -- by hand, count and purge ---------------------------------------------------------


def test_send_to_dlq_by_hand_records_the_error_and_does_not_ack(
    bus: TenantEventBus, dlq: DeadLetterQueue
) -> None:
    event = make_event()
    try:
        raise LookupError("customer 42 unknown")
    except LookupError as exc:
        dlq_id = dlq.send_to_dlq("tasks", "7-0", event, exc, retry_count=2, group="ops")
    dlq.send_to_dlq("tasks", "8-0", {"event_id": "raw"}, "operator said so", retry_count=0)

    first, second = dlq.list_dlq_messages("tasks")

    assert first.dlq_id == dlq_id
    assert first.event == event
    assert (first.reason, first.error_type, first.error) == (
        "manual",
        "LookupError",
        "customer 42 unknown",
    )
    assert first.traceback is not None and "LookupError" in first.traceback
    assert (first.original_message_id, first.retry_count, first.group) == ("7-0", 2, "ops")
    assert (second.event, second.error, second.fields) == (
        None,
        "operator said so",
        {"event_id": "raw"},
    )
    assert dlq.count("tasks") == 2


def test_purge_without_arguments_deletes_every_dead_letter(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    old_letters(r, 3)

    assert dlq.purge("tasks") == 3
    assert dlq.count("tasks") == 0


def test_purge_by_ids_deletes_only_those(r: redis.Redis, dlq: DeadLetterQueue) -> None:
    ids = old_letters(r, 3)

    assert dlq.purge("tasks", ids=[ids[0], ids[2], "999-0"]) == 2
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks")] == [ids[1]]


def test_purge_with_an_empty_id_list_deletes_nothing(r: redis.Redis, dlq: DeadLetterQueue) -> None:
    old_letters(r, 3)

    assert dlq.purge("tasks", ids=[]) == 0
    assert dlq.count("tasks") == 3


def test_purge_older_than_keeps_younger_dead_letters(r: redis.Redis, dlq: DeadLetterQueue) -> None:
    old_letters(r, 2)
    young = dlq.send_to_dlq("tasks", "1-0", {"event_id": "x"}, "recent", retry_count=0)

    assert dlq.purge("tasks", older_than_s=3600) == 2
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks")] == [young]


def test_count_of_a_stream_without_dead_letters_is_zero(dlq: DeadLetterQueue) -> None:
    assert dlq.count("nothing") == 0


# -- retention ------------------------------------------------------------------------


def test_retention_caps_the_length_but_never_deletes_young_dead_letters(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    old_letters(r, 5)
    young = [dlq.send_to_dlq("tasks", "1-0", {"n": str(i)}, "e", retry_count=0) for i in range(4)]

    deleted = dlq.apply_retention("tasks", max_age_s=0, max_len=2, min_age_s=60)

    assert deleted == 5
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks")] == young  # over the cap, kept


def test_retention_caps_old_dead_letters_to_max_len_keeping_the_newest(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    ids = old_letters(r, 5)

    assert dlq.apply_retention("tasks", max_age_s=0, max_len=2, min_age_s=60) == 3
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks")] == ids[3:]


def test_retention_drops_dead_letters_older_than_max_age(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    old_letters(r, 3)
    young = dlq.send_to_dlq("tasks", "1-0", {"n": "1"}, "e", retry_count=0)

    assert dlq.apply_retention("tasks", max_age_s=3600, max_len=0, min_age_s=0) == 3
    assert [x.dlq_id for x in dlq.list_dlq_messages("tasks")] == [young]


def test_purge_refuses_ids_and_age_together(r: redis.Redis, dlq: DeadLetterQueue) -> None:
    dlq.send_to_dlq("tasks", "1-0", {"a": "b"}, "boom", 0)
    with pytest.raises(ValueError, match="not both"):
        dlq.purge("tasks", ids=["1-0"], older_than_s=10)
    assert dlq.count("tasks") == 1


def test_a_hand_written_dead_letter_with_a_bad_retry_count_is_still_listed(
    r: redis.Redis, dlq: DeadLetterQueue
) -> None:
    r.xadd("t:{acme}:events:tasks:dlq", {"_retry_count": "many", "_dlq_reason": "manual"})
    (letter,) = dlq.list_dlq_messages("tasks")
    assert letter.retry_count == 0 and letter.reason == "manual"
