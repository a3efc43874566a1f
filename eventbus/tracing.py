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

import re
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from eventbus.schemas import TRACEPARENT, TRACESTATE

_TRACEPARENT, _TRACESTATE = TRACEPARENT.encode(), TRACESTATE.encode()
#: A version-00 ``traceparent`` whose sampled flag is off, with non-zero ids: what the
#: W3C propagator accepts as such (lowercase hex, nothing after the flags).
_UNSAMPLED = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f][02468ace]")

_api: Any = None  # (trace, propagator, context), or False when the API is not installed


def _otel() -> Any:
    global _api
    if _api is None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _api = False
        else:
            _api = (trace, TraceContextTextMapPropagator(), context, _parent_span_class(trace))
    return _api or None


def _parent_span_class(trace: Any) -> Any:
    """The class of the span that stands for an unsampled remote parent read from a
    ``traceparent`` the :data:`_UNSAMPLED` pattern matched: a ``NonRecordingSpan`` whose
    ``SpanContext`` is made from the text when something first asks for it (a span
    started under it, a publish's inject), not for every event a handler runs without."""

    class UnsampledParent(trace.NonRecordingSpan):  # type: ignore[misc]
        def __init__(self, traceparent: bytes) -> None:
            self._traceparent = traceparent
            self._made: Any = None

        @property
        def _context(self) -> Any:
            made = self._made
            if made is None:
                text = self._traceparent
                made = self._made = trace.SpanContext(
                    int(text[3:35], 16),
                    int(text[36:52], 16),
                    is_remote=True,
                    trace_flags=trace.TraceFlags(int(text[53:55], 16)),
                )
            return made

    return UnsampledParent


def inject(fields: dict[str, str]) -> None:
    """Write the current span's context into an entry's ``fields`` (if there is one)."""
    api = _otel()
    if api is None:
        return
    trace, propagator = api[:2]
    if trace.get_current_span().get_span_context().is_valid:
        propagator.inject(fields)


#: [provider, our tracer or None, next look (monotonic), its sampler drops the children
#: of unsampled parents]
_cached: list[Any] = [None, None, 0.0, False]
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
        _cached[3] = not off and _drops_unsampled(getattr(provider, "sampler", None))
    _cached[2] = now + RECHECK_S
    return _cached[1]


def _drops_unsampled(sampler: Any) -> bool:
    """Whether ``sampler`` is the SDK's ``ParentBased`` (the default) with its default
    ``AlwaysOff`` for children of unsampled parents: then such a child is never recorded,
    and a process span under an unsampled parent need not be made (see
    :func:`process_span`). Read from the sampler's description (public API)."""
    try:
        text = sampler.get_description()
    except AttributeError:
        return False
    return (
        isinstance(text, str)
        and text.startswith("ParentBased{")
        and "remoteParentNotSampled:AlwaysOffSampler" in text
        and "localParentNotSampled:AlwaysOffSampler" in text
    )


def refresh() -> None:
    """Look at the global tracer provider again on the next delivery (not up to a second
    later): for code that sets a provider and consumes at once, such as tests."""
    _cached[2] = 0.0


#: What a sampler may look at; the rest is set only on spans that are recorded.
_SAMPLER_ATTRIBUTES = {"messaging.system": "redis", "messaging.operation.type": "process"}


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
) -> ProcessScope:
    """Run the block (``with process_span(...):``) in a ``<stream> process`` span of
    ``tracer`` (from :func:`tracer`), child of the entry's trace context; the scope's
    ``trace_id`` is its trace id in hex (for the log context). An exception leaving the
    block is recorded on the span.

    What ``tracer.start_as_current_span`` does, without its two generator context
    managers: one object, the span made current by one ``context.attach``. Under an
    unsampled parent, when the provider's sampler is the default ``ParentBased`` (which
    never records a child of an unsampled parent), no span is made: the parent's context
    (trace id, span id, flags, state) is made current as it came, so the handler's own
    spans and follow-up events stay in the trace, unsampled, as they would under a
    non-recorded process span. That is most events at a 1% sampling rate, and the SDK's
    span start is most of what tracing costs per event (see :func:`unsampled_parent`).
    """
    return unsampled_parent(fields) or _ProcessSpan(
        tracer,
        fields,
        stream,
        (group, consumer, message_id, deliveries, retry_count, correlation_id),
    )


class ProcessScope:
    """What :func:`process_span` returns: a context manager, and the trace id."""

    __slots__ = ("_token", "trace_id")
    _token: Any  # the attach's, for the detach on the way out
    trace_id: str

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _otel()[2].detach(self._token)


def unsampled_parent(fields: Mapping[bytes, bytes]) -> ProcessScope | None:
    """The usual entry under the default sampler, the quick path of :func:`process_span`
    (None for any other): an unsampled canonical ``traceparent`` without ``tracestate``,
    read without the propagator's generic path and made current as the parent (its
    ``SpanContext`` made only if asked for). Call :func:`tracer` first."""
    if not _cached[3]:  # (set by tracer(): the sampler never records such a child)
        return None
    parent = fields.get(_TRACEPARENT)
    if parent is None or _TRACESTATE in fields or not _UNSAMPLED.fullmatch(parent):
        return None
    trace, _, context, parent_class = _api
    scope = ProcessScope()
    scope._token = context.attach(trace.set_span_in_context(parent_class(parent)))
    scope.trace_id = parent[3:35].decode()
    return scope


class _ProcessSpan(ProcessScope):
    """The process span of :func:`process_span` (or, under an unsampled parent the quick
    path did not read, that parent made current)."""

    __slots__ = ("_span",)
    _span: Any

    def __init__(
        self, tracer: Any, fields: Mapping[bytes, bytes], stream: str, about: tuple[Any, ...]
    ) -> None:
        trace, propagator, context, _ = _otel()
        parent = fields.get(_TRACEPARENT)
        if parent is None:  # no trace context in the entry: a new trace (a root span)
            ctx = context.Context()
        else:
            carrier = {TRACEPARENT: parent.decode()}
            state = fields.get(_TRACESTATE)
            if state is not None:
                carrier[TRACESTATE] = state.decode()
            ctx = propagator.extract(carrier)
            if _cached[3]:
                up = trace.get_current_span(ctx).get_span_context()
                if up.is_valid and not up.trace_flags.sampled:  # never recorded: no span
                    self._span = None
                    self._token = context.attach(ctx)
                    self.trace_id = format(up.trace_id, "032x")
                    return
        span = tracer.start_span(
            f"{stream} process",
            context=ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={**_SAMPLER_ATTRIBUTES, "messaging.destination.name": stream},
        )
        if span.is_recording():
            group, consumer, message_id, deliveries, retry_count, correlation_id = about
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
        self._span = span
        self._token = context.attach(trace.set_span_in_context(span))
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        _otel()[2].detach(self._token)
        if span is None:
            return
        try:
            if isinstance(exc, Exception) and span.is_recording():  # as use_span does
                span.record_exception(exc)
                trace = _otel()[0]
                description = f"{type(exc).__name__}: {exc}"
                span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        finally:
            span.end()


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
