"""The scheduling policy (eventbus.fairness) in a deterministic simulation: a fake clock,
workers that each run one handler call at a time, flows with backlogs or arrivals."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from eventbus.fairness import FairScheduler, jain_index, within_limit


@dataclass
class Flow:
    name: str
    cost_s: float = 0.001
    weight: float = 1.0
    backlog: int = 10**9  # events waiting at the start
    arrivals_per_s: float = 0.0  # more arriving, evenly spaced
    max_in_flight: int | None = None


@dataclass
class Sim:
    """``workers`` handler slots sharing one scheduler, run for ``until_s`` of fake time."""

    flows: list[Flow]
    workers: int = 4
    window_s: float = 10.0
    handled: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: Counter[str] = field(default_factory=Counter)
    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    idle_with_work_s: float = 0.0
    max_seen_in_flight: Counter[str] = field(default_factory=Counter)

    def run(self, until_s: float) -> None:
        sched = FairScheduler()
        by_name = {f.name: f for f in self.flows}
        for f in self.flows:
            sched.add(f.name, weight=f.weight, tenant=f.name)
        queue: dict[str, list[float]] = {f.name: [0.0] * min(f.backlog, 10**5) for f in self.flows}
        extra = {f.name: f.backlog - len(queue[f.name]) for f in self.flows}
        next_arrival = {
            f.name: (1 / f.arrivals_per_s if f.arrivals_per_s else float("inf")) for f in self.flows
        }
        in_flight: Counter[str] = Counter()
        finishing: list[tuple[float, int, str]] = []  # (time, worker, flow)
        free = list(range(self.workers))
        now = 0.0
        while now < until_s:
            for name, at in next_arrival.items():
                while at <= now:
                    queue[name].append(at)
                    at += 1 / by_name[name].arrivals_per_s
                next_arrival[name] = at

            def allowed(tenant: str) -> bool:
                return within_limit(by_name[tenant].max_in_flight, in_flight[tenant])

            while free:
                ready = [n for n, q in queue.items() if q or extra[n] > 0]
                key = sched.pick(ready, allowed)
                if key is None:
                    break
                name = str(key)
                published = queue[name].pop(0) if queue[name] else now
                if not queue[name] and extra[name] > 0:
                    refill = min(extra[name], 10**5)
                    queue[name].extend([now] * refill)
                    extra[name] -= refill
                self.waits[name].append(now - published)
                in_flight[name] += 1
                self.max_seen_in_flight[name] = max(self.max_seen_in_flight[name], in_flight[name])
                heapq.heappush(finishing, (now + by_name[name].cost_s, free.pop(), name))
            waiting = any(q or extra[n] > 0 for n, q in queue.items())
            step_to = min([finishing[0][0]] if finishing else [until_s])
            step_to = min(step_to, min(next_arrival.values()), until_s)
            if free and waiting and not any(allowed(n) for n in queue if queue[n]):
                pass  # blocked only by in-flight limits: not a scheduling loss
            elif free and waiting:
                self.idle_with_work_s += (step_to - now) * len(free)
            now = max(now, step_to)
            while finishing and finishing[0][0] <= now:
                _, worker, name = heapq.heappop(finishing)
                cost = by_name[name].cost_s
                sched.charge(name, cost)
                in_flight[name] -= 1
                self.handled[int(now // self.window_s)][name] += 1
                self.seconds[name] += cost
                free.append(worker)


def _p99(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[int(0.99 * (len(ordered) - 1))]


def test_ten_equal_backlogged_tenants_get_equal_shares_in_every_window() -> None:
    sim = Sim([Flow(f"t{i}") for i in range(10)])
    sim.run(30.0)
    assert len(sim.handled) >= 3
    for window, counts in sim.handled.items():
        assert len(counts) == 10, window
        assert jain_index(counts.values()) >= 0.95, (window, counts)


def test_weights_one_two_four_share_within_ten_percent() -> None:
    sim = Sim([Flow("a", weight=1), Flow("b", weight=2), Flow("c", weight=4)])
    sim.run(10.0)
    total = sum(sim.seconds.values())
    for name, weight in (("a", 1), ("b", 2), ("c", 4)):
        share = sim.seconds[name] / total
        assert share == pytest.approx(weight / 7, rel=0.10), (name, share)


def test_handler_seconds_are_shared_fairly_when_one_tenant_is_fifty_times_slower() -> None:
    flows = [Flow("slow", cost_s=0.050)] + [Flow(f"fast{i}") for i in range(4)]
    sim = Sim(flows)
    sim.run(20.0)
    assert jain_index(sim.seconds.values()) >= 0.99, sim.seconds
    # counted in events it would be unfair: the slow tenant runs ~50x fewer
    events = Counter[str]()
    for counts in sim.handled.values():
        events.update(counts)
    assert events["fast0"] > 30 * events["slow"]


def test_work_conserving_a_lone_backlogged_tenant_gets_every_worker() -> None:
    sim = Sim([Flow("busy"), Flow("idle", backlog=0)], workers=4)
    sim.run(5.0)
    assert sim.idle_with_work_s == 0.0
    assert sim.seconds["busy"] == pytest.approx(4 * 5.0, rel=0.01)


def test_quiet_tenants_wait_little_beside_a_noisy_backlog() -> None:
    quiet = [Flow(f"q{i}", backlog=0, arrivals_per_s=5.0) for i in range(50)]
    alone = Sim([Flow(q.name, backlog=0, arrivals_per_s=5.0) for q in quiet])
    alone.run(10.0)
    noisy = Sim([Flow("noisy", backlog=100_000), *quiet])
    noisy.run(10.0)
    waits_alone = [w for q in quiet for w in alone.waits[q.name]]
    waits_noisy = [w for q in quiet for w in noisy.waits[q.name]]
    # the noisy tenant still gets every spare moment
    assert noisy.idle_with_work_s == 0.0
    assert _p99(waits_noisy) <= max(2 * _p99(waits_alone), 0.002)


def test_in_flight_limit_is_respected_and_the_others_use_the_rest() -> None:
    sim = Sim([Flow("capped", max_in_flight=1), Flow("free")], workers=4)
    sim.run(5.0)
    assert sim.max_seen_in_flight["capped"] == 1
    assert sim.max_seen_in_flight["free"] == 3
    assert sim.idle_with_work_s == 0.0


def test_an_idle_flow_does_not_bank_credit() -> None:
    sched = FairScheduler()
    sched.add("a")
    sched.add("b")
    for _ in range(1000):
        assert sched.pick(["a"]) == "a"
        sched.charge("a", 0.01)
    # b was idle all along: it gets its turn now, then they alternate (no burst of 1000)
    picks = []
    for _ in range(10):
        key = sched.pick(["a", "b"])
        picks.append(key)
        sched.charge(key, 0.01)
    assert picks.count("b") <= 6


@pytest.mark.parametrize("weight", [0, -1, float("nan")])
def test_a_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        FairScheduler().add("a", weight=weight)


def test_nothing_ready_or_nothing_allowed_picks_none() -> None:
    sched = FairScheduler()
    sched.add("a", tenant="acme")
    assert sched.pick([]) is None
    assert sched.pick(["a"], lambda tenant: tenant != "acme") is None
    assert sched.pick(["unknown"]) is None


@pytest.mark.parametrize(
    ("values", "expected"), [([1, 1, 1, 1], 1.0), ([1, 0, 0, 0], 0.25), ([], 1.0)]
)
def test_jain_index(values: list[float], expected: float) -> None:
    assert jain_index(values) == pytest.approx(expected)
