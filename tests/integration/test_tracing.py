"""W3C trace context through the bus, checked with the OpenTelemetry SDK's in-memory
exporter: agent chains are one trace, and so is an event's whole life (retries, DLQ,
replay). Also: every log line of a handled event carries the delivery's context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from eventbus import (
    AgentEvent,
    DeadLetterQueue,
    HandlerContext,
    TenantEventBus,
    tracing,
    wants_context,
)
from eventbus.logs import merge_log_context
from tests.integration.helpers import consumer, make_event

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's SDK tracer provider (set once: OpenTelemetry allows one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    tracing.refresh()  # consumers of earlier tests may have looked less than 1 s ago
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def follow_up(event: AgentEvent, agent: str) -> AgentEvent:
    return make_event(
        source_agent_id=agent,
        call_chain=[*event.call_chain, agent],
        correlation_id=event.correlation_id or event.event_id,
        parent_event_id=event.event_id,
    )


def process_spans(exporter: InMemorySpanExporter, stream: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == f"{stream} process"]


def test_a_chain_of_three_agents_in_two_pools_is_one_trace_of_parent_and_children(
    bus: TenantEventBus, dlq: DeadLetterQueue, spans: InMemorySpanExporter
) -> None:
    # A (the test, in a request span) -> tasks -> B (pool "writers") -> results
    # -> C (pool "reviewers") -> done
    def agent_b(event: AgentEvent) -> None:
        bus.publish("results", follow_up(event, "writer"))

    def agent_c(event: AgentEvent) -> None:
        bus.publish("done", follow_up(event, "reviewer"))

    writers = consumer(bus, dlq, stream="tasks", group="writers", name="w1")
    reviewers = consumer(bus, dlq, stream="results", group="reviewers", name="r1")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("user request") as root:
        bus.publish("tasks", make_event())
    assert writers.process_batch(agent_b, block_ms=100) == 1
    assert reviewers.process_batch(agent_c, block_ms=100) == 1

    (b_span,) = process_spans(spans, "tasks")
    (c_span,) = process_spans(spans, "results")
    trace_id = root.get_span_context().trace_id
    assert {b_span.context.trace_id, c_span.context.trace_id} == {trace_id}
    assert b_span.parent is not None and b_span.parent.span_id == root.get_span_context().span_id
    assert c_span.parent is not None and c_span.parent.span_id == b_span.context.span_id
    assert b_span.kind is trace.SpanKind.CONSUMER
    attrs = b_span.attributes or {}
    assert attrs["messaging.destination.name"] == "tasks"
    assert attrs["messaging.consumer.group.name"] == "writers"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.eventbus.delivery_count"] == 1
    # C's follow-up carries C's span as its parent: a fourth agent would continue the trace.
    ((_, fields),) = bus.redis.xrange(bus.keys.stream("done"))
    assert fields[b"traceparent"].decode().split("-")[2] == format(c_span.context.span_id, "016x")


def test_a_retried_dead_lettered_and_replayed_event_stays_in_its_trace(
    bus: TenantEventBus, dlq: DeadLetterQueue, spans: InMemorySpanExporter
) -> None:
    fails = {"left": 2}

    def flaky(event: AgentEvent) -> None:
        if fails["left"]:
            fails["left"] -= 1
            raise RuntimeError("boom")

    worker = consumer(bus, dlq, retry_delays=[0.0], max_retries=1)  # one retry, then DLQ
    with trace.get_tracer("test").start_as_current_span("user request") as root:
        bus.publish("tasks", make_event())
    assert worker.process_batch(flaky, block_ms=100) == 1  # attempt 1 fails: retry
    while worker.process_batch(flaky, block_ms=100) == 0:  # attempt 2 fails: DLQ
        pass
    (letter,) = dlq.list_dlq_messages("tasks")
    stored = bus.redis.xrange(bus.keys.dlq("tasks"))[0][1]
    assert b"traceparent" in stored
    dlq.replay_message("tasks", letter.dlq_id)
    while worker.process_batch(flaky, block_ms=100) == 0:  # attempt 3 (replayed) succeeds
        pass

    attempts = process_spans(spans, "tasks")
    assert len(attempts) == 3
    root_ctx = root.get_span_context()
    assert {s.context.trace_id for s in attempts} == {root_ctx.trace_id}
    assert all(s.parent is not None and s.parent.span_id == root_ctx.span_id for s in attempts)
    statuses = [s.status.status_code for s in attempts]
    assert statuses == [trace.StatusCode.ERROR, trace.StatusCode.ERROR, trace.StatusCode.UNSET]
    retries = [(s.attributes or {})["messaging.eventbus.retry_count"] for s in attempts]
    assert retries == [0, 1, 0]


def test_publish_outside_any_span_writes_no_trace_fields(
    bus: TenantEventBus, spans: InMemorySpanExporter
) -> None:
    bus.publish("tasks", make_event())
    ((_, fields),) = bus.redis.xrange(bus.keys.stream("tasks"))
    assert b"traceparent" not in fields and b"tracestate" not in fields


def test_every_line_of_a_handled_event_carries_the_delivery_context(
    bus: TenantEventBus, dlq: DeadLetterQueue, spans: InMemorySpanExporter
) -> None:
    @wants_context
    def handler(event: AgentEvent, ctx: HandlerContext) -> None:
        ctx.log.info("agent_working", step=1)
        structlog.get_logger("my.agent").info("agent_own_logger")

    worker = consumer(bus, dlq, name="c7")
    event = make_event(correlation_id="req-42")
    with trace.get_tracer("test").start_as_current_span("user request") as root:
        bus.publish("tasks", event)
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, merge_log_context]
    ) as logs:
        assert worker.process_batch(handler, block_ms=100) == 1
    want = {
        "consumer": "c7",
        "event_id": event.event_id,
        "correlation_id": "req-42",
        "attempt": 1,
        "trace_id": format(root.get_span_context().trace_id, "032x"),
    }
    (line,) = [x for x in logs if x["event"] == "agent_working"]
    assert {**line, **want, "tenant": "acme", "stream": "tasks", "group": "workers"} == line
    (own,) = [x for x in logs if x["event"] == "agent_own_logger"]
    assert {**own, **want} == own  # a plain structlog logger gets the contextvars too


@pytest.mark.parametrize("state", ["vendor=x", None])
def test_under_an_unsampled_parent_no_span_is_made_and_the_trace_goes_on_unsampled(
    bus: TenantEventBus, dlq: DeadLetterQueue, spans: InMemorySpanExporter, state: str | None
) -> None:
    # The default sampler (ParentBased) never records a child of an unsampled parent: the
    # consumer makes no span then, but keeps the parent's context current, so the
    # handler's spans and follow-up events stay in that trace, unsampled.
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    fields = make_event(correlation_id="req-7").to_stream_dict()
    fields["traceparent"] = f"00-{trace_id}-{parent_id}-00"
    if state is not None:
        fields["tracestate"] = state
    bus.redis.xadd(bus.keys.stream("tasks"), fields)  # type: ignore[arg-type]
    seen: list[trace.SpanContext] = []

    def handler(event: AgentEvent) -> None:
        structlog.get_logger("agent").info("event_handled_here")
        with trace.get_tracer("test").start_as_current_span("handler work") as own:
            seen.append(own.get_span_context())
        bus.publish("results", follow_up(event, "writer"))

    worker = consumer(bus, dlq, name="c8")
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, merge_log_context]
    ) as logs:
        assert worker.process_batch(handler, block_ms=100) == 1
        structlog.get_logger("after").info("after_the_event")
    said = [x for x in logs if x["event"] == "event_handled_here"]
    assert [x["trace_id"] for x in said] == [trace_id]  # the event's lines carry its trace

    assert spans.get_finished_spans() == ()  # nothing recorded: not the handler's span either
    (own,) = seen
    assert format(own.trace_id, "032x") == trace_id and not own.trace_flags.sampled
    ((_, out),) = bus.redis.xrange(bus.keys.stream("results"))
    version, tid, _, flags = out[b"traceparent"].decode().split("-")
    assert (version, tid, flags) == ("00", trace_id, "00")
    assert out.get(b"tracestate") == (state.encode() if state else None)
    assert trace.get_current_span().get_span_context().is_valid is False  # detached after
    after = [x for x in logs if x["event"] == "after_the_event"]
    assert "trace_id" not in after[0]  # the log context is reset after the event


@pytest.mark.parametrize(
    "header",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # the quick path
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",  # other flags, unsampled
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # sampled: a real span
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00",  # not W3C: a new trace
        "00-00000000000000000000000000000000-00f067aa0ba902b7-00",  # invalid trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-00",  # invalid span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x",  # junk after the flags
    ],
)
def test_the_process_span_reads_a_traceparent_as_the_w3c_propagator_does(
    spans: InMemorySpanExporter, header: str
) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    want = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": header})
    ).get_span_context()
    with tracing.process_span(
        tracing.tracer(),
        {b"traceparent": header.encode()},
        stream="tasks",
        group="workers",
        consumer="c1",
        message_id="1-1",
        deliveries=1,
        retry_count=0,
        correlation_id=None,
    ):
        got = trace.get_current_span().get_span_context()
    assert got.is_valid
    if want.is_valid:  # the entry's trace goes on: same trace id and sampled flag
        assert (got.trace_id, got.trace_flags.sampled) == (want.trace_id, want.trace_flags.sampled)
        if not want.trace_flags.sampled:  # no span made: the parent itself is current
            assert got == want and got.is_remote and type(got) is type(want)
            assert got.trace_flags == want.trace_flags and got.trace_state == want.trace_state
    else:  # an unreadable traceparent: the process span starts a trace of its own
        assert got.trace_id != int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
