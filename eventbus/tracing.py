"""Trace context (optional, ``eventbus[otel]``): W3C ``traceparent`` / ``tracestate``
travel in the event's entry, and a consumer runs each handler call in a ``<stream>
process`` span that is a child of the publisher's span (OpenTelemetry messaging semantic
conventions).

Only the OpenTelemetry API is used; the application installs and configures an SDK. With
no API installed, or no SDK tracer provider set, nothing is written and no span is made.
The retry, dead-letter and replay scripts copy an entry's fields as they are, so an
event's retries, dead letter and replays stay in the trace it was published in; a handler
that publishes follow-up events continues it (A -> B -> C is one trace).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventbus.logs import log_context
from eventbus.schemas import TRACEPARENT, TRACESTATE

_WIRE = ((TRACEPARENT, TRACEPARENT.encode()), (TRACESTATE, TRACESTATE.encode()))

_api: Any = None  # (trace module, propagator), or False when the API is not installed


def _otel() -> Any:
    global _api
    if _api is None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _api = False
        else:
            _api = (trace, TraceContextTextMapPropagator())
    return _api or None


def inject(fields: dict[str, str]) -> None:
    """Write the current span's context into an entry's ``fields`` (if there is one)."""
    api = _otel()
    if api is None:
        return
    trace, propagator = api
    if trace.get_current_span().get_span_context().is_valid:
        propagator.inject(fields)


_cached: list[Any] = [None, None, 0.0]  # [provider, our tracer or None, next look (monotonic)]
RECHECK_S = 1.0  # a provider set later (or replaced) is seen within this


def tracer() -> Any:
    """The tracer process spans come from, or None when tracing is off (no API installed,
    or only its no-op provider): then the consumer skips :func:`process_span` entirely.
    The global provider is looked at once a second at most (that look costs ~1 us)."""
    now = time.monotonic()
    if now < _cached[2]:
        return _cached[1]
    api = _otel()
    if api is None:
        _cached[2] = float("inf")
        return None
    trace = api[0]
    provider = trace.get_tracer_provider()
    if _cached[0] is not provider:
        off = isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        _cached[:2] = [provider, None if off else provider.get_tracer("eventbus")]
    _cached[2] = now + RECHECK_S
    return _cached[1]


def refresh() -> None:
    """Look at the global tracer provider again on the next delivery (not up to a second
    later): for code that sets a provider and consumes at once, such as tests."""
    _cached[2] = 0.0


@contextmanager
def process_span(
    tracer: Any,
    fields: Mapping[bytes, bytes],
    *,
    stream: str,
    group: str,
    consumer: str,
    message_id: str,
    deliveries: int,
    retry_count: int,
    correlation_id: str | None,
) -> Iterator[None]:
    """Run the block in a ``<stream> process`` span of ``tracer`` (from :func:`tracer`),
    child of the entry's trace context, with the trace id bound in the log context
    (``trace_id``)."""
    trace, propagator = _otel()
    carrier = {name: fields[raw].decode() for name, raw in _WIRE if raw in fields}
    with tracer.start_as_current_span(
        f"{stream} process",
        context=propagator.extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        # What a sampler may look at; the rest only on spans that are recorded.
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": stream,
        },
    ) as span:
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.operation.name": "process",
                    "messaging.consumer.group.name": group,
                    "messaging.message.id": message_id,
                    "messaging.client.id": consumer,
                    "messaging.eventbus.delivery_count": deliveries,
                    "messaging.eventbus.retry_count": retry_count,
                }
            )
            if correlation_id:
                span.set_attribute("messaging.message.conversation_id", correlation_id)
        with log_context(trace_id=format(span.get_span_context().trace_id, "032x")):
            yield


def record_failure(exc: BaseException) -> None:
    """Mark the current span (the handler's process span) as failed by ``exc``."""
    api = _otel()
    if api is None:
        return
    trace = api[0]
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}"))
