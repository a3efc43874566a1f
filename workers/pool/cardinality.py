"""Cardinality control of ``/metrics`` for a pool that serves many tenants: at most
``max_tenants`` tenant ids keep their own ``tenant`` label value; the series of the others
are merged under ``tenant="_other"``, so Prometheus's series stay bounded whatever the
number of tenants.

Applied when a scrape is collected (the workers' files and the Redis gauges alike), so
nothing is added to a worker's path. Which tenants keep their label: the first ones seen
since the supervisor started (in name order within one scrape), for as long as it runs,
so a tenant's series never jump between its own label and ``_other`` and every counter
stays monotonic. A platform pool's own series (``tenant=""``: workers, restarts) are
not a tenant's and are never folded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

#: The ``tenant`` label value of the tenants over the cap.
OTHER_TENANT = "_other"
#: The ``tenant`` label value of a platform pool's own series (not capped).
POOL_TENANT = ""
#: Gauges merged by their largest value (an age) or their smallest (a 0/1 "up"); every
#: other series, counters and histogram buckets included, is summed.
MAX_GAUGES = frozenset({"eventbus_oldest_pending_age_seconds"})
MIN_GAUGES = frozenset({"eventbus_redis_up"})


class TenantCap:
    """A prometheus_client collector over ``collectors`` that caps the distinct values of
    their ``tenant`` label at ``max_tenants`` (>= 1)."""

    def __init__(self, collectors: Iterable[Any], max_tenants: int) -> None:
        if max_tenants < 1:
            raise ValueError(f"max_tenants must be >= 1, got {max_tenants!r}")
        self.collectors = list(collectors)
        self.max_tenants = max_tenants
        self.admitted: set[str] = set()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        families = [family for c in self.collectors for family in c.collect()]
        tenants = {s.labels["tenant"] for f in families for s in f.samples if "tenant" in s.labels}
        tenants.discard(POOL_TENANT)
        with self._lock:
            for tenant in sorted(tenants - self.admitted):
                if len(self.admitted) >= self.max_tenants:
                    break
                self.admitted.add(tenant)
            admitted = frozenset(self.admitted | {POOL_TENANT})
        for family in families:
            yield _capped(family, admitted)


def _capped(family: Any, admitted: frozenset[str]) -> Any:
    from prometheus_client import Metric

    if not any(s.labels.get("tenant", OTHER_TENANT) not in admitted for s in family.samples):
        return family  # the usual case: nothing to fold
    merge = max if family.name in MAX_GAUGES else min if family.name in MIN_GAUGES else None
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in family.samples:
        labels = dict(sample.labels)
        if labels.get("tenant", OTHER_TENANT) not in admitted:
            labels["tenant"] = OTHER_TENANT
        key = (sample.name, tuple(labels.items()))
        before = out.get(key)
        if before is None:
            out[key] = sample.value
        else:
            out[key] = merge(before, sample.value) if merge else before + sample.value
    capped = Metric(family.name, family.documentation, family.type, family.unit)
    for (name, pairs), value in out.items():
        capped.add_sample(name, dict(pairs), value)
    return capped
