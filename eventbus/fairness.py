"""Scheduling (policy, pure): which subscription a worker serves next when several have
events waiting. No Redis, no clock, no I/O: the worker tells it what is ready and what
each handler call cost; tests drive it with a simulated clock.

The algorithm is start-time fair queueing (SFQ, Goyal et al. 1996), the weighted fair
queueing variant that charges a flow *after* its work is done:

* every flow (a subscription of one tenant) has a virtual time ``vt``;
* :meth:`FairScheduler.pick` serves, among the flows that are ready, the one whose start
  tag ``max(vt, V)`` is smallest (``V`` is the start tag of the last pick: a flow that was
  idle joins at the present, it does not bank credit while idle);
* :meth:`FairScheduler.charge` adds ``cost / weight`` to the flow's ``vt``.

Why this and not deficit round robin: DRR must know a packet's size before sending it, and
a handler's cost (its run time) is only known once it has run. SFQ charges afterwards and
its unfairness is bounded by one maximum cost per flow, whatever the costs are; it is
work-conserving (``pick`` returns a flow whenever one is ready and allowed).

Why cost = handler seconds, not events: an agent platform's handlers are LLM calls that
differ by orders of magnitude (1 ms routing vs 30 s generation). Counting events would let
a tenant with slow handlers hold the workers 50x longer than a tenant with fast ones;
counting seconds shares what is scarce, the workers' time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

#: The least cost charged per call (seconds): a handler that returns at once still used the
#: worker (the read, the ack), and a zero cost would let a flow be picked forever at one tag.
MIN_COST_S = 0.0001


@dataclass
class _Flow:
    weight: float
    tenant: str
    vt: float = 0.0
    served: int = field(default=0)  # pick counter at its last pick (ties: least recent)


class FairScheduler:
    """Weighted fair choice among flows (any hashable key, e.g. a subscription's
    ``(tenant, stream, group)``), each with a ``weight`` > 0 and its ``tenant`` (for the
    in-flight limit, see :meth:`pick`)."""

    def __init__(self) -> None:
        self._flows: dict[Hashable, _Flow] = {}
        self._v = 0.0  # system virtual time: the start tag of the last pick
        self._picks = 0

    def add(self, key: Hashable, *, weight: float = 1.0, tenant: str = "") -> None:
        """Add a flow (or change its weight); a new flow starts at the present."""
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight!r}")
        flow = self._flows.get(key)
        if flow is None:
            self._flows[key] = _Flow(weight, tenant, vt=self._v)
        else:
            flow.weight = weight
            flow.tenant = tenant

    def remove(self, key: Hashable) -> None:
        self._flows.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def pick(
        self, ready: Iterable[Hashable], allowed: Callable[[str], bool] | None = None
    ) -> Hashable | None:
        """The flow to serve next among ``ready`` (flows with events waiting), skipping
        those whose tenant ``allowed(tenant)`` refuses (at its in-flight limit); None when
        none can be served. Unknown keys are ignored."""
        best: Hashable | None = None
        best_rank = (0.0, 0)
        for key in ready:
            flow = self._flows.get(key)
            if flow is None or (allowed is not None and not allowed(flow.tenant)):
                continue
            rank = (max(flow.vt, self._v), flow.served)
            if best is None or rank < best_rank:
                best, best_rank = key, rank
        if best is None:
            return None
        flow = self._flows[best]
        self._picks += 1
        flow.vt = best_rank[0]
        flow.served = self._picks
        self._v = best_rank[0]
        return best

    def charge(self, key: Hashable, cost_s: float) -> None:
        """Charge a served flow for its handler call (seconds of a worker's time)."""
        flow = self._flows.get(key)
        if flow is not None:
            flow.vt += max(cost_s, MIN_COST_S) / flow.weight


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index of ``values``: 1 when all are equal, 1/n when one has it all."""
    xs = list(values)
    total = sum(xs)
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return 1.0
    return total * total / (len(xs) * squares)


def within_limit(limit: int | None, in_flight: int) -> bool:
    """Whether a tenant with ``in_flight`` events in handlers (pool-wide) may start one
    more under ``limit`` (None: unlimited)."""
    return limit is None or in_flight < limit
