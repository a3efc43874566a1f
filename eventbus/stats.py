"""Introspection: the numbers behind ``eventbus stats`` (and the web console) as plain dicts.

One stream's stats (the documented ``stats --json`` shape, see ``stream_stats``) come from
XINFO STREAM / GROUPS / CONSUMERS on the stream, XLEN of its DLQ, and per group (through
its :class:`~eventbus.groupstream.GroupStream`) the ZCARD of the group's retry schedule and
XINFO GROUPS on the group's retry stream.
"""

from __future__ import annotations

from typing import Any

from eventbus.bus import TenantEventBus
from eventbus.dlq import DeadLetterQueue
from eventbus.errors import InvalidName, StreamNotFound
from eventbus.groupstream import GroupStream


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


def _group_stats(bus: TenantEventBus, stream: str, row: dict[str, Any]) -> dict[str, Any]:
    """``{"group", "lag", "pending", "last_delivered_id", "consumers", "retries"}``.

    ``lag`` is null when Redis cannot compute it (entries deleted inside the unread range).
    ``retries`` is null for a group whose name the bus does not allow (a group created by
    hand: it has no retry keys); its consumers are then not listed either.
    """
    name = row["name"]
    try:
        group = bus.group(stream, name)
    except InvalidName:
        consumers: list[dict[str, Any]] = []
        retries = None
    else:
        consumers = group.consumers(group.main)
        retries = _retry_stats(group)
    return {
        "group": name,
        "lag": row["lag"],
        "pending": row["pending"],
        "last_delivered_id": row["last_delivered_id"],
        "consumers": consumers,
        "retries": retries,
    }


def _retry_stats(group: GroupStream) -> dict[str, Any]:
    """``{"scheduled", "backlog", "pending"}``: retries waiting for their time; due retries
    in the group's retry stream not yet delivered (null if Redis cannot tell); delivered,
    not acked."""
    row = group.group_row(group.retry)
    return {
        "scheduled": group.scheduled(),
        "backlog": 0 if row is None else row["lag"],
        "pending": 0 if row is None else row["pending"],
    }


def tenant_stats(bus: TenantEventBus, dlq: DeadLetterQueue, streams: list[str]) -> dict[str, Any]:
    """The whole ``stats --json`` document: ``{"tenant", "streams": [stream_stats...]}``."""
    return {"tenant": bus.tenant_id, "streams": [stream_stats(bus, dlq, name) for name in streams]}
