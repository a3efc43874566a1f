"""Agent guards (pure): hop limit and cycles counted per agent, requests stopped by id."""

from __future__ import annotations

import pytest

from eventbus import AgentEvent, EventType
from eventbus.guards import check_chain, check_request
from eventbus.intake import Rejected, screen

HOPS, VISITS = 32, 2


def ring(agents: str, hops: int) -> list[str]:
    """A chain that goes round ``agents`` (one letter each) for ``hops`` hops."""
    return [agents[i % len(agents)] for i in range(hops)]


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        (["user"], None),
        (["a", "b", "a"], None),  # a legitimate hand-back: a visited twice
        (["a", "b", "a", "b"], None),
        (["a", "b", "a", "b", "a"], "cycle"),  # ping-pong: a a third time
        (ring("abc", 6), None),  # a ring twice round is still within max_visits
        (ring("abc", 7), "cycle"),  # three-agent ring: no pair repeats back to back
        (ring("abcdefgh", 17), "cycle"),  # a ring of 8 caught by counts, not by pairs
        ([f"agent-{i}" for i in range(32)], None),  # deep but acyclic, at the limit
        ([f"agent-{i}" for i in range(33)], "hop_limit"),
        ([*ring("ab", 40)], "hop_limit"),  # the hop limit is checked first
    ],
)
def test_chain_guard_table(chain: list[str], reason: str | None) -> None:
    got = check_chain(chain, HOPS, VISITS)
    assert (got.reason if got else None) == reason


def test_fan_out_siblings_each_keep_their_own_chain() -> None:
    parent = ["user", "planner"]
    siblings = [[*parent, f"worker-{i}"] for i in range(1000)]
    assert all(check_chain(c, HOPS, VISITS) is None for c in siblings)
    # each sibling hands back to the planner once: still fine
    assert all(check_chain([*c, "planner"], HOPS, VISITS) is None for c in siblings)


def test_messages_name_the_chain_and_the_limit() -> None:
    cycle = check_chain(["a", "b", "a", "b", "a"], HOPS, VISITS)
    assert cycle is not None
    assert cycle.message == (
        "agent 'a' appears 3 times in call_chain, over the limit of 2: a -> b -> a -> b -> a"
    )
    deep = check_chain([f"x{i}" for i in range(40)], HOPS, VISITS)
    assert deep is not None and "40 hops, over the limit of 32" in deep.message
    assert "x0 -> x1" in deep.message and "x39" in deep.message


def test_zero_turns_a_limit_off() -> None:
    assert check_chain(ring("ab", 100), 0, 0) is None
    assert check_chain(ring("ab", 100), 0, 2) is not None
    assert check_chain(ring("ab", 100), 200, 0) is None


def test_requests_are_stopped_by_correlation_id_only() -> None:
    stopped = {"req-1": "halted", "req-2": "budget_exceeded"}
    halted = check_request("req-1", stopped)
    spent = check_request("req-2", stopped)
    assert halted is not None and halted.reason == "halted" and "'req-1'" in halted.message
    assert spent is not None and spent.reason == "budget_exceeded"
    assert check_request("req-3", stopped) is None
    assert check_request(None, stopped) is None  # events without a correlation id


def _fields(chain: list[str], correlation_id: str | None = None) -> dict[bytes, bytes]:
    event = AgentEvent(
        event_type=EventType.HANDOFF_REQUEST,
        tenant_id="acme",
        source_agent_id=chain[-1],
        call_chain=chain,
        correlation_id=correlation_id,
    )
    return {k.encode(): v.encode() for k, v in event.to_stream_dict().items()}


def _screen(f: dict[bytes, bytes], stopped: dict[str, str] | None = None) -> object:
    return screen(
        f,
        1,
        max_deliveries=5,
        max_bytes=1 << 20,
        tenant_id="acme",
        max_hops=HOPS,
        max_visits=VISITS,
        stopped=stopped,
    )


def test_intake_rejects_foreign_runaway_entries_with_the_guard_reasons() -> None:
    cases = {
        "hop_limit": _screen(_fields([f"x{i}" for i in range(33)])),
        "cycle": _screen(_fields(ring("ab", 5))),
        "halted": _screen(_fields(["a"], "req-1"), {"req-1": "halted"}),
        "budget_exceeded": _screen(_fields(["a"], "req-2"), {"req-2": "budget_exceeded"}),
    }
    for reason, got in cases.items():
        assert isinstance(got, Rejected) and got.reason == reason, (reason, got)
    hop = cases["hop_limit"]
    assert isinstance(hop, Rejected) and hop.failure.error_type == "HopLimitExceeded"
    assert isinstance(_screen(_fields(["a", "b", "a"], "req-9"), {"req-1": "halted"}), AgentEvent)
