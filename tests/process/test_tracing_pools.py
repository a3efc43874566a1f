"""One OpenTelemetry trace across two real supervisors: pool A's handler (stream "tasks")
publishes a follow-up to stream "reviews", which pool B handles. Each worker process has
an SDK tracer provider writing its finished spans to a file of its own
(tests/process/handlers.py, ``EVENTBUS_TEST_SPANS``); the test process opens the request's
root span and publishes inside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import STREAM, event

REVIEWS = "reviews"
HAND_OFF = "tests.process.handlers:hand_off"


def spans_in(directory: Path) -> list[dict[str, Any]]:
    """Every complete span line written so far, by every worker process."""
    out = []
    for path in sorted(directory.glob("spans-*.jsonl")):
        text = path.read_text()
        out += [json.loads(x) for x in text[: text.rfind("\n") + 1].splitlines() if x]
    return out


def test_one_trace_id_flows_from_pool_a_through_its_handlers_publish_to_pool_b(
    make_pool, tbus: TenantEventBus, tmp_path: Path
) -> None:
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    env = {"EVENTBUS_TEST_SPANS": str(spans_dir)}
    a = make_pool(
        name="a", processes=1, env=env, args=["--handler", HAND_OFF, "--group", "writers"]
    )
    b_args = ["--handler", HAND_OFF, "--stream", REVIEWS, "--group", "reviewers"]
    b = make_pool(name="b", processes=1, env=env, args=b_args)
    a.start()
    b.start()

    provider = TracerProvider()  # the test's own (the process-global one is another test's)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("user request") as root:
        tbus.publish(STREAM, event(hand_to=REVIEWS, **{"as": "writer"}))
    root_ctx = root.get_span_context()

    def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
        by_name = {s["name"]: s for s in spans_in(spans_dir)}
        found = by_name.get(f"{STREAM} process"), by_name.get(f"{REVIEWS} process")
        return found if found[0] and found[1] else None  # type: ignore[return-value]

    found = wait_for(both, 60)
    assert isinstance(found, tuple)
    first, second = found
    trace_id = f"{root_ctx.trace_id:032x}"
    assert first["trace_id"] == trace_id == second["trace_id"]
    assert first["parent_id"] == f"{root_ctx.span_id:016x}"  # child of the publisher's span
    assert second["parent_id"] == first["span_id"]  # B's span: child of A's (its publish)
    assert first["pid"] != second["pid"]  # two worker processes of two supervisors
    assert first["attributes"]["messaging.consumer.group.name"] == "writers"
    assert second["attributes"]["messaging.consumer.group.name"] == "reviewers"
    assert second["attributes"]["messaging.destination.name"] == REVIEWS
    assert a.stop() == 0 and b.stop() == 0
