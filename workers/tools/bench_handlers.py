"""Benchmark handlers, loaded by the pool's workers and by the plain baseline loop.

``noop`` does nothing, except for latency probes: events whose ``data`` carries ``t`` (the
publisher's ``time.monotonic_ns()``) get one line ``"<sent_ns> <received_ns>"`` appended
to the file named by ``EVENTBUS_BENCH_LATENCY_FILE``. Imports nothing heavy, so the plain
loop stays plain.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventbus import AgentEvent
    from eventbus.handler import HandlerContext

LATENCY_FILE_ENV = "EVENTBUS_BENCH_LATENCY_FILE"

_fd: list[int] = []  # the latency file, opened on the first probe of this process


def record_latency(sent_ns: int) -> None:
    """Append ``sent received`` (monotonic ns; one system-wide clock on Linux)."""
    received_ns = time.monotonic_ns()
    if not _fd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        _fd.append(os.open(os.environ[LATENCY_FILE_ENV], flags, 0o644))
    os.write(_fd[0], b"%d %d\n" % (sent_ns, received_ns))  # one short append: atomic


def noop(event: AgentEvent) -> None:
    """The benchmark's handler: nothing, unless the event is a latency probe."""
    sent_ns = event.data.get("t")
    if sent_ns is not None:
        record_latency(sent_ns)


def fair(event: AgentEvent) -> None:
    """The fairness benchmark's handler: ``tenant sent received`` (monotonic ns) appended
    to the file, then ``cost_s`` of sleep (an LLM call's wait, scaled down)."""
    received_ns = time.monotonic_ns()
    if not _fd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        _fd.append(os.open(os.environ[LATENCY_FILE_ENV], flags, 0o644))
    line = f"{event.tenant_id} {event.data.get('t', received_ns)} {received_ns}\n"
    os.write(_fd[0], line.encode())
    cost = float(event.data.get("cost_s", 0.0))
    if cost:
        time.sleep(cost)


def retry_twice(event: AgentEvent, ctx: HandlerContext) -> None:
    """The retry benchmark's handler (context-taking): ``tenant attempt started``
    (monotonic ns; attempt = ``ctx.retry_count``) appended to the file, then a failure
    on the first two attempts, so the event is retried twice and handled on the third."""
    started_ns = time.monotonic_ns()
    if not _fd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        _fd.append(os.open(os.environ[LATENCY_FILE_ENV], flags, 0o644))
    os.write(_fd[0], f"{event.tenant_id} {ctx.retry_count} {started_ns}\n".encode())
    if ctx.retry_count < 2:
        raise RuntimeError(f"bench: attempt {ctx.retry_count} fails on purpose")


# eventbus.handler.wants_context's mark, set by hand: importing eventbus here would load
# the library into the plain baseline loop, which imports this module for ``noop``
retry_twice.eventbus_wants_context = True  # type: ignore[attr-defined]
