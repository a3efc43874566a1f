"""The benchmark's no-op handler in a process with the OpenTelemetry SDK configured (a
batch span processor and an exporter that drops the spans), so that the pool pays for
real spans: ``workers.tools.bench_obs`` runs a pool with metrics and tracing on with it."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from workers.tools.bench_handlers import noop


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(_Drop()))
trace.set_tracer_provider(_provider)

__all__ = ["noop"]
