"""Benchmark baseline: the plainest redis-py consumer-group loop, one process each.

XREADGROUP COUNT 100, decode the fields (UTF-8, and the three JSON fields), call the same
no-op handler, one XACK per batch. No validation, retries, heartbeat or logs: what Redis
and Python allow, to compare the pool with.

    python -m workers.tools.bench_plain REDIS_URL KEY GROUP CONSUMER
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any

import redis

from workers.tools.bench_handlers import record_latency

_JSON_FIELDS = ("call_chain", "data", "context_refs")


def decode(fields: dict[bytes, bytes]) -> dict[str, Any]:
    event: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
    for name in _JSON_FIELDS:
        event[name] = json.loads(event[name])
    return event


def handle(event: dict[str, Any]) -> None:
    """Same as ``workers.tools.bench_handlers.noop``."""
    sent_ns = event["data"].get("t")
    if sent_ns is not None:
        record_latency(sent_ns)


def run(url: str, key: str, group: str, consumer: str) -> None:
    stopping: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    client = redis.Redis.from_url(url, client_name=consumer)
    while not stopping:
        reply: Any = client.xreadgroup(group, consumer, {key: ">"}, count=100, block=500)
        for _key, entries in reply.items() if isinstance(reply, dict) else reply or ():
            ids = []
            for message_id, fields in entries:
                handle(decode(fields))
                ids.append(message_id)
            client.xack(key, group, *ids)


if __name__ == "__main__":
    run(*sys.argv[1:5])
