"""Introspection: the numbers behind ``eventbus stats`` (and the web console) as plain dicts.

One stream's stats (the documented ``stats --json`` shape, see ``stream_stats``) come from
XINFO STREAM / GROUPS / CONSUMERS on the stream, XLEN of its DLQ, and per group the ZCARD
of the group's retry schedule and XINFO GROUPS on the group's retry stream.
"""

from __future__ import annotations

from typing import Any

import redis

from eventbus.bus import TenantEventBus
from eventbus.dlq import DeadLetterQueue
from eventbus.errors import InvalidName, StreamNotFound
from eventbus.redis_io import s, translated


def stream_stats(bus: TenantEventBus, dlq: DeadLetterQueue, stream: str) -> dict[str, Any]:
    """``{"stream", "exists", "length", "first_entry_id", "last_entry_id", "dlq", "groups"}``.

    ``exists`` is false for a registered stream whose key is gone (length 0, no groups).
    """
    try:
        info = bus.get_stream_info(stream)
    except StreamNotFound:
        info = None
    groups = [] if info is None else [_group_stats(bus, stream, g) for g in info["groups"]]
    return {
        "stream": stream,
        "exists": info is not None,
        "length": 0 if info is None else info["length"],
        "first_entry_id": None if info is None else info["first_entry_id"],
        "last_entry_id": None if info is None else info["last_entry_id"],
        "dlq": dlq.count(stream),
        "groups": groups,
    }


def _group_stats(bus: TenantEventBus, stream: str, group: dict[str, Any]) -> dict[str, Any]:
    """``{"group", "lag", "pending", "last_delivered_id", "consumers", "retries"}``.

    ``lag`` is null when Redis cannot compute it (entries deleted inside the unread range).
    """
    name = group["name"]
    key = bus.keys.stream(stream)
    with translated(f"consumers of {stream!r}/{name!r}"):
        rows = bus.redis.xinfo_consumers(key, name)
    consumers = [
        {
            "name": s(c["name"]),
            "pending": int(c["pending"]),
            "idle_ms": int(c["idle"]),
            # Redis >= 7.2 only: ms since the consumer's last successful read.
            "inactive_ms": None if c.get("inactive") is None else int(c["inactive"]),
        }
        for c in rows
    ]
    return {
        "group": name,
        "lag": group["lag"],
        "pending": group["pending"],
        "last_delivered_id": group["last_delivered_id"],
        "consumers": consumers,
        "retries": _retry_stats(bus, stream, name),
    }


def _retry_stats(bus: TenantEventBus, stream: str, group: str) -> dict[str, Any] | None:
    """``{"scheduled", "backlog", "pending"}`` for a group, or None if its name is not one
    the bus allows (a group created by hand: it has no retry keys).

    scheduled: retries waiting for their time; backlog: due retries in the group's retry
    stream not yet delivered (null if Redis cannot tell); pending: delivered, not acked.
    """
    try:
        schedule = bus.keys.schedule(stream, group)
        retry_key = bus.keys.retry_stream(stream, group)
    except InvalidName:
        return None
    with translated(f"retries of {stream!r}/{group!r}"):
        scheduled = int(bus.redis.zcard(schedule))
        try:
            rows = bus.redis.xinfo_groups(retry_key)
        except redis.ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            rows = []
    backlog: int | None = 0
    pending = 0
    for row in rows:
        if s(row["name"]) == group:
            backlog = None if row.get("lag") is None else int(row["lag"])
            pending = int(row["pending"])
    return {"scheduled": scheduled, "backlog": backlog, "pending": pending}


def tenant_stats(bus: TenantEventBus, dlq: DeadLetterQueue, streams: list[str]) -> dict[str, Any]:
    """The whole ``stats --json`` document: ``{"tenant", "streams": [stream_stats...]}``."""
    return {"tenant": bus.tenant_id, "streams": [stream_stats(bus, dlq, name) for name in streams]}
