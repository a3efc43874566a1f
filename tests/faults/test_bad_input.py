"""Bad input from a foreign producer (raw XADD into the stream) reaches real worker
processes: each bad entry goes to the DLQ once with its reason, no worker crashes, and the
good events around them are handled. And publish refuses an oversized event before it
touches Redis."""

from __future__ import annotations

import json

import pytest
import redis

from eventbus import DeadLetterQueue, EventTooLarge, TenantEventBus
from tests.conftest import wait_for
from tests.faults.harness import make_event
from tests.faults.ledger import Ledger, assert_nothing_lost
from tests.process.pool import STREAM, TENANT, pending_count
from workers.tools.localredis import free_port

MIB = 1024 * 1024


def raw(**overrides: str | bytes | None) -> dict[bytes, bytes]:
    fields = {k.encode(): v.encode() for k, v in make_event(i=0).to_stream_dict().items()}
    for name, value in overrides.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value if isinstance(value, bytes) else value.encode()
    return fields


BAD: dict[str, tuple[dict[bytes, bytes], str, str]] = {
    # name: (fields, reason, words the error must contain)
    "not json": (raw(data='{"x": '), "decode_error", "data"),
    "missing fields": (raw(event_type=None, source_agent_id=None), "decode_error", "event_type"),
    "missing event id": (raw(event_id=None), "decode_error", "'event_id'"),
    "other tenant": (raw(tenant_id="globex"), "wrong_tenant", "'globex'"),
    "unknown major version": (raw(version="7.0"), "decode_error", "version"),
    "non-UTF-8 value": (raw(call_chain=b'["\xff\xfe"]'), "decode_error", "UTF-8"),
    "non-UTF-8 field name": ({**raw(), b"\xc3\x28": b"x"}, "decode_error", "UTF-8"),
    "nothing of ours": ({b"foo": b"bar"}, "decode_error", "version"),
    "over the size limit": (
        raw(data=json.dumps({"blob": "x" * (MIB + 1024)})),
        "too_large",
        "limit",
    ),
}


def test_foreign_bad_entries_are_dead_lettered_once_and_no_worker_crashes(
    make_pool, tbus: TenantEventBus, ledger: Ledger, client: redis.Redis
) -> None:
    pool = make_pool(processes=1, args=["--reclaim-interval-s", "1"]).start()
    key = tbus.keys.stream(STREAM)
    ids: dict[str, str] = {}
    for name, (fields, _, _) in BAD.items():
        before = make_event(i=1)  # a good event before each bad one...
        tbus.publish(STREAM, before)
        ledger.published(before.event_id)
        ids[name] = client.xadd(key, fields).decode()  # type: ignore[arg-type]
    after = make_event(i=2)  # ...and one after the last
    tbus.publish(STREAM, after)
    ledger.published(after.event_id)

    dlq = DeadLetterQueue(client, TENANT)
    wait_for(lambda: dlq.count(STREAM) >= len(BAD), 30)
    ledger.wait_settled(60)
    wait_for(lambda: pending_count(tbus) == 0, 30)
    letters = dlq.list_dlq_messages(STREAM, count=100)
    by_id = {letter.original_message_id: letter for letter in letters}
    assert len(letters) == len(BAD) and set(by_id) == set(ids.values())  # each exactly once
    for name, (_, reason, words) in BAD.items():
        letter = by_id[ids[name]]
        assert letter.reason == reason, name
        assert words in f"{letter.error_type} {letter.error}", (name, letter.error)
    assert_nothing_lost("foreign bad entries", ledger.report(dead_letters=len(letters)))
    assert pool.worker_exits() == [] and not pool.logged("worker_respawned")
    assert pool.stop() == 0


def test_publish_refuses_an_event_over_the_limit_before_touching_redis(
    tbus: TenantEventBus, client: redis.Redis
) -> None:
    big = make_event(blob="x" * MIB)  # the default limit is 1 MiB, encoded
    nowhere = TenantEventBus(redis.Redis(port=free_port(), retry=None), TENANT)
    with pytest.raises(EventTooLarge, match="over the limit"):
        nowhere.publish(STREAM, big)  # no server there: a Redis call would fail differently
    with pytest.raises(EventTooLarge):
        tbus.publish(STREAM, big)
    assert client.exists(tbus.keys.stream(STREAM)) == 0
