"""Safe trimming of a deep stream: once its groups have caught up, the next trim removes
the acknowledged history in whole nodes, keeps exactly the newest ``maxlen`` entries, and
does it in one short step (no entry-by-entry copy into Lua that stalls Redis)."""

from __future__ import annotations

import time

import redis

from eventbus import TenantEventBus
from tests.integration.helpers import make_event

STREAM_KEY = "t:{acme}:events:tasks"


def _fill(r: redis.Redis, n: int) -> list[bytes]:
    """``n`` entries like events, added server-side (fast); returns their ids."""
    flat = [x for kv in make_event().to_stream_dict().items() for x in kv]
    r.eval(
        "for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2)) end",
        1,
        STREAM_KEY,
        n,
        *flat,
    )
    return [m for m, _ in r.xrange(STREAM_KEY)]


def test_trim_after_a_group_caught_up_on_a_deep_backlog_keeps_the_newest_maxlen(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.ensure_group("tasks", "workers")
    ids = _fill(r, 200_000)
    r.xgroup_setid(STREAM_KEY, "workers", "$")  # read and acknowledged, all of it
    # The baseline, measured here (a loaded machine slows both alike): the entry-by-entry
    # way, copying a tenth of these entries into Lua.
    copy_tenth = "return #redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])"
    started = time.monotonic()
    assert r.eval(copy_tenth, 1, STREAM_KEY, 20_000) == 20_000
    baseline_s = time.monotonic() - started

    started = time.monotonic()
    removed = bus.scripts.trim_acked(STREAM_KEY, 1000)
    took_s = time.monotonic() - started

    assert removed == 199_000
    assert [m for m, _ in r.xrange(STREAM_KEY)] == ids[-1000:]
    # Removing all 199,000 takes less than copying 20,000 (whole nodes: about 16x less).
    assert took_s < baseline_s, (took_s, baseline_s)


def test_trim_stops_at_the_first_unread_entry_inside_a_node(
    r: redis.Redis, bus: TenantEventBus
) -> None:
    bus.ensure_group("tasks", "workers")
    ids = _fill(r, 5000)
    r.xgroup_setid(STREAM_KEY, "workers", ids[2345].decode())  # up to 2,345 read and acked

    assert bus.scripts.trim_acked(STREAM_KEY, 1000) == 2346
    assert r.xrange(STREAM_KEY, count=1)[0][0] == ids[2346]
