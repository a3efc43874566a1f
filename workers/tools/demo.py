"""The demo: publish a few agent events, handle them, watch one fail through its retries
into the dead-letter queue, then replay it once the "bug" is fixed.

    python -m workers.tools.demo            # throwaway private redis-server
    REDIS_URL=redis://host:6379/0 python -m workers.tools.demo

Uses the tenant ``demo`` and short retry delays (0.5 s, 1 s, 2 s; the defaults are 1, 4, 16).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

import redis

from eventbus import (
    AgentEvent,
    DeadLetterQueue,
    EventConsumer,
    EventType,
    TenantEventBus,
)
from eventbus.keys import TenantKeys
from eventbus.logs import configure_logging
from eventbus.settings import ConsumerSettings
from workers.tools.localredis import LocalRedis

TENANT = "demo"
STREAM = "tasks"


@contextlib.contextmanager
def redis_for_demo(url: str | None) -> Iterator[redis.Redis]:
    if url:
        client = redis.Redis.from_url(url)
        yield client
        client.close()
        return
    with LocalRedis() as server:
        print(f"started a private redis-server on 127.0.0.1:{server.port} (stopped at exit)")
        client = server.client()
        yield client
        client.close()


class WriterAgent:
    """An agent-style handler: takes a task, 'works', publishes a follow-up event."""

    def __init__(self, bus: TenantEventBus) -> None:
        self.bus = bus
        self.broken = True
        self.started = time.monotonic()

    def __call__(self, event: AgentEvent) -> None:
        t = time.monotonic() - self.started
        topic = event.data.get("topic")
        if event.data.get("needs_fix") and self.broken:
            print(f"  [{t:5.2f}s] writer FAILED on {topic!r} (event {event.event_id[:8]})")
            raise RuntimeError(f"writer cannot handle topic {topic!r} yet")
        print(f"  [{t:5.2f}s] writer handled {topic!r} from {' -> '.join(event.call_chain)}")
        self.bus.publish(
            "results",
            AgentEvent(
                event_type=EventType.TASK_COMPLETED,
                tenant_id=event.tenant_id,
                source_agent_id="writer",
                call_chain=[*event.call_chain, "writer"],
                correlation_id=event.correlation_id or event.event_id,
                parent_event_id=event.event_id,
                data={"topic": topic, "words": 120},
            ),
        )


def run(client: redis.Redis) -> None:
    for key in client.scan_iter(match=TenantKeys(TENANT).acl_pattern()):
        client.delete(key)
    bus = TenantEventBus(client, TENANT)
    dlq = DeadLetterQueue(client, TENANT)

    print("\n1. the planner publishes four tasks (one the writer cannot handle yet)")
    for topic in ("release notes", "changelog", "blog post", "haiku in Klingon"):
        event = AgentEvent(
            event_type=EventType.TASK_ASSIGNED,
            tenant_id=TENANT,
            source_agent_id="planner",
            call_chain=["user", "planner"],
            data={"topic": topic, "needs_fix": topic.startswith("haiku")},
        )
        print(f"  published {topic!r} as {bus.publish(STREAM, event)}")

    print("\n2. the writer consumes (retries after 0.5 s, 1 s, 2 s; then the DLQ)")
    writer = WriterAgent(bus)
    consumer = EventConsumer(
        bus,
        STREAM,
        "writers",
        "writer-1",
        dlq,
        retry_delays=[0.5, 1.0, 2.0],
        settings=ConsumerSettings(block_ms=100),
    )
    deadline = time.monotonic() + 10
    while dlq.count(STREAM) == 0 and time.monotonic() < deadline:
        consumer.process_batch(writer)

    print("\n3. the dead-letter queue")
    letters = dlq.list_dlq_messages(STREAM)
    for letter in letters:
        print(
            f"  {letter.dlq_id}: {letter.reason}, {letter.retry_count} retries, "
            f"{letter.error_type}: {letter.error}"
        )

    print("\n4. fix the writer, replay the dead letter")
    writer.broken = False
    for letter in letters:
        print(f"  replayed {letter.dlq_id} as {dlq.replay_message(STREAM, letter.dlq_id)}")
    deadline = time.monotonic() + 5
    while consumer.stats["handled"] < 4 and time.monotonic() < deadline:
        consumer.process_batch(writer)

    print("\n5. what is left")
    info = bus.get_stream_info(STREAM)
    print(f"  stream {STREAM!r}: {info['length']} entries, groups {info['groups']}")
    print(f"  stream 'results': {bus.get_stream_info('results')['length']} follow-up events")
    print(f"  DLQ size: {dlq.count(STREAM)}; consumer stats: {dict(consumer.stats)}")
    ok = consumer.stats["handled"] == 4 and dlq.count(STREAM) == 0
    print("\ndemo " + ("OK" if ok else "FAILED"))
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis (env REDIS_URL); default: start a private redis-server",
    )
    args = parser.parse_args()
    configure_logging("error", "console")
    with redis_for_demo(args.redis_url) as client:
        run(client)


if __name__ == "__main__":
    main()
