"""Gauges (metrics): the numbers of many consumer groups read in pipelines, for a
platform pool's scrape (a thousand subscriptions would be ~8,000 round trips one by one).

Same numbers as :meth:`GroupStream.gauges`: two pipelines in all (XINFO GROUPS of both
streams, ZCARD of the schedule and XLEN of the DLQ per group; then the XPENDING summary
of the streams with something pending) plus one TIME. On a Redis Cluster redis-py splits
each pipeline by node. A group whose read failed (e.g. a key its credentials may not
touch) is None; the others are still served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from eventbus.entries import group_row
from eventbus.groupstream import GroupStream
from eventbus.redis_io import AnyRedis, s, translated


def _row(reply: Any, group: str) -> dict[str, Any] | None:
    for row in reply:
        if s(row["name"]) == group:
            return group_row(row)
    return None


def _missing(reply: Any) -> bool:
    return isinstance(reply, redis.ResponseError) and "no such key" in str(reply).lower()


def read_gauges(client: AnyRedis, groups: Sequence[GroupStream]) -> list[dict[str, float] | None]:
    """The gauges of each of ``groups`` (in order; None where Redis refused), as
    :meth:`GroupStream.gauges` gives them. Raises :class:`~eventbus.errors.EventBusError`
    when Redis cannot be reached at all."""
    if not groups:
        return []
    with translated(f"read gauges of {len(groups)} groups"):
        pipe = client.pipeline(transaction=False)
        for g in groups:
            pipe.xinfo_groups(g.main)
            pipe.xinfo_groups(g.retry)
            pipe.zcard(g.schedule)
            pipe.xlen(g.dlq)
        first = pipe.execute(raise_on_error=False)
        now = groups[0].server_time_s()
        rows: list[tuple[dict[str, Any] | None, dict[str, Any] | None] | None] = []
        pending_keys: list[tuple[int, str, str]] = []  # (group index, key, group name)
        for i, g in enumerate(groups):
            main, retry, sched, dlq = first[4 * i : 4 * i + 4]
            bad = [r for r in (main, retry, sched, dlq) if isinstance(r, Exception)]
            if any(not _missing(r) for r in bad):
                rows.append(None)
                continue
            pair = (
                None if _missing(main) else _row(main, g.group),
                None if _missing(retry) else _row(retry, g.group),
            )
            rows.append(pair)
            for key, row in zip((g.main, g.retry), pair, strict=True):
                if row is not None and row["pending"]:
                    pending_keys.append((i, key, g.group))
        oldest: dict[int, float] = {}
        if pending_keys:
            pipe = client.pipeline(transaction=False)
            for _, key, name in pending_keys:
                pipe.xpending(key, name)
            summaries = pipe.execute(raise_on_error=False)
            for (i, _, _), summary in zip(pending_keys, summaries, strict=True):
                if isinstance(summary, Exception) or not summary or not summary.get("min"):
                    continue
                t = int(s(summary["min"]).partition("-")[0]) / 1000
                oldest[i] = min(oldest.get(i, t), t)
    out: list[dict[str, float] | None] = []
    for i, (g, found) in enumerate(zip(groups, rows, strict=True)):
        if found is None:
            out.append(None)
            continue
        main_row, retry_row = found
        sched, dlq = first[4 * i + 2], first[4 * i + 3]
        out.append(
            {
                "lag": g.lag(g.main, main_row),  # a command only when XINFO says nil
                "pending": sum(r["pending"] for r in found if r is not None),
                "oldest_pending_age_s": max(0.0, now - oldest[i]) if i in oldest else 0.0,
                "scheduled_retries": 0 if isinstance(sched, Exception) else int(sched),
                "retry_backlog": g.lag(g.retry, retry_row),
                "dlq_depth": 0 if isinstance(dlq, Exception) else int(dlq),
            }
        )
    return out
