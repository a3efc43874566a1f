"""The tenant label cap of /metrics (workers.pool.cardinality): at most N tenants keep
their own label value, the rest are merged under tenant="_other" with the right merge per
series, and a tenant once served under its own value keeps it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from workers.pool.cardinality import OTHER_TENANT, TenantCap

LABELS = ["tenant", "stream", "group"]


class Fixed:
    """A collector serving given per-tenant values."""

    def __init__(self) -> None:
        self.handled: dict[str, float] = {}
        self.age: dict[str, float] = {}
        self.up: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily("eventbus_events_handled", "h", labels=LABELS)
        age = GaugeMetricFamily("eventbus_oldest_pending_age_seconds", "a", labels=LABELS)
        up = GaugeMetricFamily("eventbus_redis_up", "u", labels=LABELS)
        for family, values in ((handled, self.handled), (age, self.age), (up, self.up)):
            for tenant, v in values.items():
                family.add_metric([tenant, "tasks", "g"], v)
        yield from (handled, age, up)


def served(cap: TenantCap) -> dict[tuple[str, str], float]:
    """(sample name, tenant) -> value, through a real registry and the text format."""
    registry = CollectorRegistry()
    registry.register(cap)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, s.labels["tenant"])] = s.value
    return out


def test_tenants_over_the_cap_are_merged_under_other_sum_max_and_min() -> None:
    source = Fixed()
    source.handled = {"a": 1, "b": 2, "c": 3, "d": 4}
    source.age = {"a": 5, "b": 6, "c": 70, "d": 8}
    source.up = {"a": 1, "b": 1, "c": 1, "d": 0}
    m = served(TenantCap([source], max_tenants=2))
    assert {t for _, t in m} == {"a", "b", OTHER_TENANT}
    assert m[("eventbus_events_handled_total", "a")] == 1
    assert m[("eventbus_events_handled_total", OTHER_TENANT)] == 7  # c + d
    assert m[("eventbus_oldest_pending_age_seconds", OTHER_TENANT)] == 70  # the oldest
    assert m[("eventbus_redis_up", OTHER_TENANT)] == 0  # one of them is down


def test_a_tenant_keeps_its_own_label_once_served_so_counters_stay_monotonic() -> None:
    source = Fixed()
    source.handled = {"m": 10}
    cap = TenantCap([source], max_tenants=1)
    assert served(cap) == {("eventbus_events_handled_total", "m"): 10}
    source.handled = {"a": 1, "m": 11}  # "a" sorts first but came later: it is folded
    m = served(cap)
    assert m[("eventbus_events_handled_total", "m")] == 11
    assert m[("eventbus_events_handled_total", OTHER_TENANT)] == 1


def test_under_the_cap_families_pass_unchanged() -> None:
    source = Fixed()
    source.handled = {"a": 1, "b": 2}
    cap = TenantCap([source], max_tenants=5)
    originals: list[Any] = list(source.collect())
    assert [f.samples for f in cap.collect()] == [f.samples for f in originals]


def test_a_cap_below_one_is_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="max_tenants must be >= 1, got 0"):
        TenantCap([], max_tenants=0)


def test_a_platform_pools_own_series_are_neither_capped_nor_counted_as_a_tenant() -> None:
    source = Fixed()
    source.handled = {"": 9, "a": 1, "b": 2}  # "": the pool's own (restarts, workers)
    m = served(TenantCap([source], max_tenants=1))
    assert m[("eventbus_events_handled_total", "")] == 9
    assert m[("eventbus_events_handled_total", "a")] == 1  # "" took no place of the cap
    assert m[("eventbus_events_handled_total", OTHER_TENANT)] == 2
