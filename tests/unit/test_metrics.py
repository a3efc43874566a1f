"""The metrics tally (no server): what it flushes equals what prometheus_client's own
observe/inc would have recorded, and the core imports without the optional extras."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from prometheus_client import Histogram

from eventbus.metrics import (
    BUCKETS_S,
    STAGE_PUBLISH,
    ConsumerMetrics,
    Tally,
    _Families,
    message_time_s,
)


def samples(metric: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metric.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            name = s.name.split("_seconds")[-1]  # _bucket / _count / _sum
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k == "le"))
            out[(name, labels)] = s.value
    return out


def test_a_flushed_histogram_equals_one_fed_by_observe() -> None:
    values = [0.0001, 0.0005, 0.0007, 0.003, 0.9, 1.0, 59.0, 700.0, 0.0]
    tally = Tally("t-unit-hist", "s", "g")
    for v in values:
        tally.observe("duration", v)
    tally.flush()
    reference = Histogram("reference_seconds", "r", buckets=BUCKETS_S, registry=None)
    for v in values:
        reference.observe(v)
    ours = _Families.get().histograms["duration"].labels("t-unit-hist", "s", "g")
    assert samples(ours) == samples(reference)


def test_counts_are_kept_locally_until_flushed_and_flushed_once() -> None:
    tally = Tally("t-unit-count", "s", "g")
    counter = _Families.get().counters["dead_lettered"]
    child = counter.labels("t-unit-count", "s", "g", "decode_error")
    tally.count("dead_lettered", "decode_error", n=2)
    tally.count("dead_lettered", "decode_error")
    assert child._value.get() == 0
    tally.flush()
    tally.flush()
    assert child._value.get() == 3


def test_consumer_metrics_times_the_handler_and_the_wait_since_the_entry_id() -> None:
    tally = Tally("t-unit-consumer", "s", "g")
    watcher = ConsumerMetrics(tally, clock_offset_s=0.0)
    watcher.started("k", "1000-0", 0)  # an entry from 1970: a huge wait, in the last bucket
    watcher.finished()
    watcher.outcome("handled")
    watcher.outcome("dead_lettered", "max_deliveries")
    tally.flush()
    fam = _Families.get()
    latency = fam.histograms["latency"].labels("t-unit-consumer", "s", "g")
    assert latency._buckets[-1].get() == 1
    assert fam.histograms["duration"].labels("t-unit-consumer", "s", "g")._buckets[0].get() == 1
    assert fam.counters["handled"].labels("t-unit-consumer", "s", "g")._value.get() == 1
    dead = fam.counters["dead_lettered"].labels("t-unit-consumer", "s", "g", "max_deliveries")
    assert dead._value.get() == 1


def test_message_time_is_the_id_milliseconds() -> None:
    assert message_time_s("1718000000123-7") == 1718000000.123


def test_the_core_imports_and_runs_without_prometheus_client_and_opentelemetry() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed
sys.modules["opentelemetry"] = None
import eventbus, eventbus.consumer, eventbus.bus, eventbus.metrics, eventbus.tracing
import workers.pool.supervisor, workers.pool.worker
from eventbus import AgentEvent, EventType
assert not eventbus.metrics.available()
fields = {}
eventbus.tracing.inject(fields)
assert fields == {}
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_guard_refusals_are_counted_by_reason_and_stage() -> None:
    tally = Tally("t-unit-guards", "s", "g")
    watcher = ConsumerMetrics(tally)
    watcher.outcome("dead_lettered", "halted")
    watcher.outcome("dead_lettered", "handler_failed")  # not a guard's
    refusals: Counter[str] = Counter()
    tally.follow(refusals, "guard_refusal", STAGE_PUBLISH)
    refusals["cycle"] += 2
    tally.flush()
    refusals["cycle"] += 1
    tally.flush()
    guards = _Families.get().counters["guard_refusal"]
    assert guards.labels("t-unit-guards", "s", "g", "halted", "delivery")._value.get() == 1
    assert guards.labels("t-unit-guards", "s", "g", "cycle", "publish")._value.get() == 3
    assert guards.labels("t-unit-guards", "s", "g", "handler_failed", "delivery")._value.get() == 0
