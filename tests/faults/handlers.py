"""The handler of the fault tests, loaded by import path in real worker processes.

Each call appends JSON lines to ``EVENTBUS_TEST_LEDGER`` (one ``write`` per line, so lines
from several processes never interleave): ``start`` when called, ``fail`` before raising,
``done`` when its work (the side effect the ledger counts) is done, ``skipped`` when the
dedupe guard says an earlier delivery did it. The event's ``data`` steers it:

- ``sleep_s``: work that long; ``hang``: sleep for an hour; ``poison``: ``os._exit(1)``
- ``fail_until_attempt``: raise while the attempt (retry count + 1) is below it
- ``dedupe``: do the work through :func:`eventbus.dedupe.once`

Test-only hook: with ``FAULTS_EXIT_AFTER_EFFECT=<dir>`` in the environment, the first call
for each event (remembered as a file in <dir>) ``os._exit``\\s right after the work is
done, before the handler returns (so before the ack): the crash window that at-least-once
turns into a duplicate.
"""

from __future__ import annotations

import json
import os
import time

from eventbus import AgentEvent, HandlerContext, wants_context
from eventbus.dedupe import once


def _write(event: AgentEvent, ctx: HandlerContext, phase: str) -> None:
    line = json.dumps(
        {
            "event_id": event.event_id,
            "phase": phase,
            "attempt": ctx.retry_count + 1,
            "delivery": ctx.delivery_count,
            "pid": os.getpid(),
            "consumer": ctx.consumer,
            "t": time.time(),
        }
    )
    fd = os.open(os.environ["EVENTBUS_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@wants_context
def record(event: AgentEvent, ctx: HandlerContext) -> None:
    data = event.data
    _write(event, ctx, "start")
    if data.get("poison"):
        os._exit(1)
    if data.get("hang"):
        time.sleep(3600)
    if data.get("sleep_s"):
        time.sleep(float(data["sleep_s"]))
    if ctx.retry_count + 1 < int(data.get("fail_until_attempt", 0)):
        _write(event, ctx, "fail")
        raise RuntimeError(f"asked to fail attempt {ctx.retry_count + 1}")
    if data.get("dedupe"):
        if not once(ctx.bus.redis, event, ctx, lambda: _write(event, ctx, "done")):
            _write(event, ctx, "skipped")
    else:
        _write(event, ctx, "done")
    crash_dir = os.environ.get("FAULTS_EXIT_AFTER_EFFECT")
    if crash_dir and _first_time(os.path.join(crash_dir, event.event_id)):
        os._exit(9)


def _first_time(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
