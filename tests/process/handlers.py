"""Handlers for the process tests, loaded by import path in real worker processes.

Each writes one JSON line per call to the file named by ``EVENTBUS_TEST_LEDGER`` (appends
of one short line are atomic), so a test can count calls across processes and restarts.
The event's ``data`` steers them: ``sleep_s``, ``poison`` (``os._exit`` the worker),
``fail`` (raise), ``hang`` (sleep forever).
"""

from __future__ import annotations

import json
import os
import time

from eventbus import AgentEvent, HandlerContext, wants_context


def _record(event: AgentEvent, ctx: HandlerContext, phase: str) -> None:
    line = json.dumps(
        {
            "event_id": event.event_id,
            "pid": os.getpid(),
            "phase": phase,
            "delivery": ctx.delivery_count,
            "attempt": ctx.retry_count + 1,
            "consumer": ctx.consumer,
            "t": time.time(),
            **({"env": os.environ.get(event.data["env"])} if "env" in event.data else {}),
        }
    )
    with open(os.environ["EVENTBUS_TEST_LEDGER"], "a", encoding="utf-8") as f:
        f.write(line + "\n")


@wants_context
def record(event: AgentEvent, ctx: HandlerContext) -> None:
    data = event.data
    _record(event, ctx, "start")
    if data.get("poison"):
        os._exit(1)
    if data.get("hang"):
        time.sleep(3600)
    if data.get("sleep_s"):
        time.sleep(float(data["sleep_s"]))
    if data.get("fail"):
        raise RuntimeError("asked to fail")
    _record(event, ctx, "done")
