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

from eventbus import AgentEvent, EventType, HandlerContext, wants_context
from eventbus.errors import GuardRefused


def _record(event: AgentEvent, ctx: HandlerContext, phase: str) -> None:
    line = json.dumps(
        {
            "event_id": event.event_id,
            "pid": os.getpid(),
            "phase": phase,
            "delivery": ctx.delivery_count,
            "attempt": ctx.retry_count + 1,
            "consumer": ctx.consumer,
            "tenant": ctx.tenant,
            "stream": ctx.stream,
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


def _spans_to_file() -> None:
    """With ``EVENTBUS_TEST_SPANS`` (a directory), this worker process gets an OpenTelemetry
    SDK tracer provider writing each finished span as one JSON line to a file of its own."""
    directory = os.environ.get("EVENTBUS_TEST_SPANS")
    if not directory:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    def line(span: ReadableSpan) -> str:
        ctx, parent = span.get_span_context(), span.parent
        return (
            json.dumps(
                {
                    "name": span.name,
                    "trace_id": f"{ctx.trace_id:032x}",
                    "span_id": f"{ctx.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                    "pid": os.getpid(),
                }
            )
            + "\n"
        )

    out = open(os.path.join(directory, f"spans-{os.getpid()}.jsonl"), "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=line)))
    trace.set_tracer_provider(provider)


_spans_to_file()


@wants_context
def hand_off(event: AgentEvent, ctx: HandlerContext) -> None:
    """Agent ``data["as"]`` (default "worker"): records the call, then publishes a follow-up
    in the event's request to stream ``data["hand_to"]`` if given (call_chain grown by
    itself). A guard's refusal of that publish is recorded (phase "refused"), not raised."""
    _record(event, ctx, "start")
    target = event.data.get("hand_to")
    if target:
        agent = str(event.data.get("as", "worker"))
        child = AgentEvent(
            event_type=EventType.TASK_COMPLETED,
            tenant_id=event.tenant_id,
            source_agent_id=agent,
            call_chain=[*event.call_chain, agent],
            correlation_id=event.correlation_id or event.event_id,
            parent_event_id=event.event_id,
            data={"from": event.event_id},
        )
        try:
            ctx.bus.publish(str(target), child)
        except GuardRefused:
            _record(event, ctx, "refused")
            return
    _record(event, ctx, "done")
