"""Benchmark measurements: each function times one thing once, ours or the plain
baseline, and returns a number; ``workers.tools.bench`` repeats and compares them."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import redis

from eventbus import AgentEvent, EventType, TenantEventBus
from eventbus.entries import encoded_size
from eventbus.keys import TenantKeys
from workers.tools.bench_procs import Consumers, id_tuple, last_delivered
from workers.tools.procs import cpu_s

TENANT = "bench"
BATCH = 100  # events per publish_many / pipeline, like a publisher that batches
POLL_S = 0.005  # how often a drain looks at the group


# -- events ----------------------------------------------------------------------------


def make_events(n: int, size: int, *, probe: bool = False) -> list[AgentEvent]:
    """``n`` distinct events of about ``size`` bytes encoded (padding in ``data``)."""
    base: dict[str, Any] = {"i": 0, "t": 0} if probe else {"i": 0}
    pad = max(0, size - encoded_size(_event({**base, "pad": ""}).to_stream_dict()))
    return [_event({**base, "i": i, "pad": "x" * pad}) for i in range(n)]


def _event(data: dict[str, Any]) -> AgentEvent:
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id=TENANT,
        source_agent_id="planner",
        call_chain=["planner", "writer"],
        correlation_id="bench",
        data=data,
    )


def encoded(events: Sequence[AgentEvent]) -> list[dict[str, str]]:
    return [e.to_stream_dict() for e in events]


def fill(
    client: redis.Redis, key: str, fields: Sequence[dict[str, str]], total: int, mark: int = 0
) -> tuple[bytes, bytes]:
    """XADD ``total`` entries (cycling through ``fields``) as fast as the server takes them.

    Returns (id of entry number ``mark`` (1-based; 0 = the last), id of the last entry).
    """
    pool = client.connection_pool
    conn: Any = pool.get_connection()  # raw protocol access: packed commands
    try:
        packed = [
            conn.pack_command("XADD", key, "*", *(x for kv in f.items() for x in kv))
            for f in fields
        ]
        marked = last = b""
        done = 0
        while done < total:
            n = min(1000, total - done)
            conn.send_packed_command(
                [c for j in range(n) for c in packed[(done + j) % len(packed)]]
            )
            for j in range(n):
                last = conn.read_response()
                if done + j + 1 == mark:
                    marked = last
            done += n
    finally:
        pool.release(conn)
    return marked or last, last


# -- end to end ------------------------------------------------------------------------


def drain(
    client: redis.Redis,
    consumers: Consumers,
    fields: Sequence[dict[str, str]],
    *,
    total: int,
    measure: int = 0,
    publisher: Publisher | None = None,
) -> Drained:
    """Lay ``total`` entries down while the consumers are paused, let them go, and time
    until ``measure`` entries (0 = all, plus what ``publisher`` publishes meanwhile) are
    handled and acked. Leaves the stream empty and the consumers idle."""
    consumers.wait_idle(client)
    consumers.pause()
    pids = consumers.pids()
    try:
        marked, last = fill(client, consumers.key, fields, total, measure)
        if publisher is not None:
            publisher.ready()
    finally:
        cpu0 = cpu_s(pids)
        t0 = time.perf_counter()
        consumers.resume()
    count = measure or total
    if publisher is not None:
        publisher.go()
        last = publisher.result()
        count += publisher.count
    target = id_tuple(marked if measure else last)
    while True:
        delivered, pending = last_delivered(client, consumers.key, consumers.group)
        if delivered >= target and (measure or pending == 0):
            elapsed = time.perf_counter() - t0
            cpu = cpu_s(pids) - cpu0
            break
        time.sleep(POLL_S)
    if measure:  # the rest of a deep backlog is not needed any more
        consumers.pause()
        client.xtrim(consumers.key, maxlen=0, approximate=False)
        consumers.resume()
    consumers.wait_idle(client)
    client.xtrim(consumers.key, maxlen=0, approximate=False)
    return Drained(count / elapsed, cpu / count * 1e6)


class Drained(NamedTuple):
    rate: float  # events/s, wall clock
    cpu_us: float  # CPU of the consumer processes per event (all their threads), us


class Publisher:
    """A separate process publishing ``count`` events in batches of 100 once told to go:
    ``TenantEventBus.publish_many`` (ours) or pipelined XADD of the same fields (plain)."""

    def __init__(self, url: str, target: str, ours: bool, count: int, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.count = count
        self._ready, self._go = ctx.Event(), ctx.Event()
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_publisher_main,
            args=(url, target, ours, count, size, self._ready, self._go, self._out),
            daemon=True,
        )
        self._proc.start()

    def ready(self) -> None:
        if not self._ready.wait(60):
            raise TimeoutError("publisher did not start")

    def go(self) -> None:
        self._go.set()

    def result(self) -> bytes:
        """The id of the last entry it published (waits until it is done)."""
        last: bytes = self._out.get(timeout=300)
        self._proc.join(10)
        return last


def _publisher_main(
    url: str, target: str, ours: bool, count: int, size: int, ready: Any, go: Any, out: Any
) -> None:
    client = redis.Redis.from_url(url)
    events = make_events(count, size)
    bus = TenantEventBus(client, TENANT)
    fields = encoded(events)
    ready.set()
    go.wait()
    last: Any = b""
    for i in range(0, count, BATCH):
        if ours:
            last = bus.publish_many(target, events[i : i + BATCH])[-1].encode()
        else:
            pipe = client.pipeline(transaction=False)
            for f in fields[i : i + BATCH]:
                pipe.xadd(target, f)  # type: ignore[arg-type]
            last = pipe.execute()[-1]
    out.put(last)


# -- publishing ------------------------------------------------------------------------


def alternate(
    sides: Sequence[tuple[TenantEventBus, str]],
    events: Sequence[AgentEvent],
    batch: int = 1,
    readers: str | None = None,
) -> list[float]:
    """events/s of each (bus, stream) publishing the same events (one by one, or in
    batches), taking turns every 100 events in rotating order (see :func:`publish_rates`)."""
    for bus, stream in sides:
        if readers:
            bus.ensure_group(stream, readers)
    spent = [0.0] * len(sides)
    order = list(range(len(sides)))
    for i in range(0, len(events), BATCH):
        chunk = events[i : i + BATCH]
        for side in order:
            bus, stream = sides[side]
            t0 = time.perf_counter()
            if batch == 1:
                for event in chunk:
                    bus.publish(stream, event)
            else:
                bus.publish_many(stream, chunk)
            spent[side] += time.perf_counter() - t0
            if readers:
                bus.redis.xgroup_setid(bus.keys.stream(stream), readers, "$")
        order = order[1:] + order[:1]
    return [len(events) / s for s in spent]


def publish_rates(
    bus: TenantEventBus,
    stream: str,
    raw_key: str,
    events: Sequence[AgentEvent],
    batch: int = 1,
    readers: str | None = None,
) -> tuple[float, float]:
    """events/s of ours (``publish`` one by one, or ``publish_many`` in batches) and of raw
    XADD of the same fields (one by one, or pipelined) into ``raw_key``.

    They take turns every 100 events (in both orders), so both see the same machine: other
    load comes and goes within seconds. With ``readers`` (a group of both streams), it
    reads everything published so far after each turn (untimed), like consumers that keep
    up: the publishes then trim as in use.
    """
    fields = encoded(events)
    client = bus.redis

    def ours(i: int, j: int) -> None:
        if batch == 1:
            for event in events[i:j]:
                bus.publish(stream, event)
        else:
            bus.publish_many(stream, events[i:j])

    def raw(i: int, j: int) -> None:
        if batch == 1:
            for f in fields[i:j]:
                client.xadd(raw_key, f)  # type: ignore[arg-type]
        else:
            pipe = client.pipeline(transaction=False)
            for f in fields[i:j]:
                pipe.xadd(raw_key, f)  # type: ignore[arg-type]
            pipe.execute()

    turns = [(0, ours, bus.keys.stream(stream)), (1, raw, raw_key)]
    spent = [0.0, 0.0]
    for i in range(0, len(events), BATCH):
        for side, run, key in turns if i % (2 * BATCH) == 0 else turns[::-1]:
            t0 = time.perf_counter()
            run(i, min(len(events), i + BATCH))
            spent[side] += time.perf_counter() - t0
            if readers:
                client.xgroup_setid(key, readers, "$")
    return len(events) / spent[0], len(events) / spent[1]


# -- latency ---------------------------------------------------------------------------


def latency(
    client: redis.Redis,
    consumers: Consumers,
    latency_file: Path,
    *,
    ours: bool,
    stream: str,
    rate: float,
    seconds: float,
    size: int,
) -> dict[str, float]:
    """Publish probes one by one at ``rate``/s (``publish`` or XADD); the handler writes
    when it got each. Returns p50/p99/max of publish -> handler in ms."""
    consumers.wait_idle(client)
    latency_file.write_bytes(b"")
    n = int(rate * seconds)
    events = make_events(n, size, probe=True)
    fields = encoded(events)
    bus = TenantEventBus(client, TENANT)
    start = time.monotonic()
    last: Any = b""
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if ours:
            events[i].data["t"] = time.monotonic_ns()
            last = bus.publish(stream, events[i]).encode()
        else:
            f = fields[i]
            f["data"] = f["data"].replace('"t":0', f'"t":{time.monotonic_ns()}', 1)
            last = client.xadd(consumers.key, f)  # type: ignore[arg-type]
    target = id_tuple(last)
    while last_delivered(client, consumers.key, consumers.group)[0] < target:
        time.sleep(POLL_S)
    consumers.wait_idle(client)
    client.xtrim(consumers.key, maxlen=0, approximate=False)
    rows = (line.split() for line in latency_file.read_text().splitlines() if line)
    ms = sorted((int(received) - int(sent)) / 1e6 for sent, received in rows)
    if len(ms) != n:
        raise RuntimeError(f"{len(ms)} latency probes recorded, {n} published")
    return {
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
    }


# -- memory ----------------------------------------------------------------------------


def memory_per_event(
    client: redis.Redis, bus: TenantEventBus, stream: str, events: Sequence[AgentEvent]
) -> dict[str, float]:
    """Bytes Redis holds per stored event: our stream plus its dedupe markers, and a raw
    stream of the same fields (MEMORY USAGE ... SAMPLES 0, i.e. exact)."""
    raw_key = f"bench:raw:mem:{stream}"
    for i in range(0, len(events), BATCH):
        bus.publish_many(stream, events[i : i + BATCH])
    fields = encoded(events)
    for i in range(0, len(fields), BATCH):
        pipe = client.pipeline(transaction=False)
        for f in fields[i : i + BATCH]:
            pipe.xadd(raw_key, f)  # type: ignore[arg-type]
        pipe.execute()
    n = len(events)
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.memory_usage(bus.keys.dedupe(stream, e.event_id), samples=0)
        pipe.pttl(bus.keys.dedupe(stream, e.event_id))
    replies = pipe.execute()
    markers = sum(int(x or 0) for x in replies[0::2])
    ttl_s = min(int(x) for x in replies[1::2]) / 1000
    ours_stream = int(client.memory_usage(bus.keys.stream(stream), samples=0) or 0)
    raw_stream = int(client.memory_usage(raw_key, samples=0) or 0)
    client.delete(bus.keys.stream(stream), raw_key)
    return {
        "ours": (ours_stream + markers) / n,
        "ours_stream": ours_stream / n,
        "ours_marker": markers / n,
        "plain": raw_stream / n,
        "marker_ttl_s": ttl_s,
    }


def size_text(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


def cleanup(client: redis.Redis) -> None:
    """Delete what the benchmark wrote into a Redis it was given (its tenants only)."""
    from workers.tools.bench_fair import TENANTS, forget

    for tenant in (TENANT, *TENANTS):
        for key in client.scan_iter(match=TenantKeys(tenant).acl_pattern(), count=1000):
            client.delete(key)
    for key in client.scan_iter(match="bench:*", count=1000):
        client.delete(key)
    forget(client)
