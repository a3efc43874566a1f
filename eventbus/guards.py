"""Agent guards (pure): may an event's ``call_chain`` enter the bus, and may a request's
queued event still reach a handler? Decided without I/O: publish checks the chain before
Redis is touched, and the intake screens foreign entries with the same rule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventbus.records import REASON_CYCLE, REASON_HALTED, REASON_HOP_LIMIT


@dataclass(frozen=True)
class Violation:
    """Why an event must not enter the bus (``reason`` is its dead-letter reason)."""

    reason: str
    message: str


def chain_text(call_chain: Sequence[str]) -> str:
    """``a -> b -> a`` (long chains shortened in the middle, so a log line stays a line)."""
    if len(call_chain) > 12:
        shown = [*call_chain[:5], f"... {len(call_chain) - 10} more ...", *call_chain[-5:]]
        return " -> ".join(shown)
    return " -> ".join(call_chain)


def check_chain(call_chain: Sequence[str], max_hops: int, max_visits: int) -> Violation | None:
    """None if the chain may go on, else the violation.

    Hop limit: more than ``max_hops`` agents in the chain. Cycle: one agent more than
    ``max_visits`` times in the chain; visits are counted per agent, so a ring of any
    length (a -> b -> c -> a -> ...) is caught, not only ping-pong. Siblings of a fan-out
    each carry their own chain and are never counted together. 0 turns a limit off.
    """
    if max_hops and len(call_chain) > max_hops:
        return Violation(
            REASON_HOP_LIMIT,
            f"call_chain has {len(call_chain)} hops, over the limit of {max_hops}: "
            f"{chain_text(call_chain)}",
        )
    if max_visits and len(call_chain) > max_visits and len(set(call_chain)) < len(call_chain):
        agent, visits = Counter(call_chain).most_common(1)[0]
        if visits > max_visits:
            return Violation(
                REASON_CYCLE,
                f"agent {agent!r} appears {visits} times in call_chain, over the limit of "
                f"{max_visits}: {chain_text(call_chain)}",
            )
    return None


def check_request(correlation_id: str | None, stopped: Mapping[str, str]) -> Violation | None:
    """None unless the event's request is halted or has spent its budget. ``stopped`` maps
    correlation ids to ``halted`` or ``budget_exceeded`` (what the consumer last read from
    Redis). Events without a correlation id are never stopped."""
    if correlation_id is None:
        return None
    reason = stopped.get(correlation_id)
    if reason is None:
        return None
    what = "is halted" if reason == REASON_HALTED else "has spent its budget"
    return Violation(reason, f"request {correlation_id!r} {what}")
