"""Intake (pure): before a handler sees a delivery, decide whether it may. Poison pills
(delivered too often), oversize entries, undecodable entries and events of another
tenant are rejected with the reason they go to the dead-letter queue under, and so are
events the agent guards refuse (a runaway call_chain, a halted request or one that spent
its budget)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eventbus.errors import GUARD_ERRORS, DecodeError, TenantMismatch
from eventbus.guards import check_chain, check_request
from eventbus.keys import check_tenant
from eventbus.records import (
    REASON_DECODE_ERROR,
    REASON_MAX_DELIVERIES,
    REASON_TOO_LARGE,
    REASON_WRONG_TENANT,
    FailureInfo,
)
from eventbus.schemas import AgentEvent


@dataclass(frozen=True)
class Rejected:
    reason: str
    failure: FailureInfo
    #: The decoded event, when an agent guard rejected it (for its request's trace).
    event: AgentEvent | None = None


def poison(deliveries: int, max_deliveries: int) -> Rejected:
    return Rejected(
        REASON_MAX_DELIVERIES,
        FailureInfo(
            "MaxDeliveriesExceeded",
            f"delivered {deliveries} times without an outcome (limit {max_deliveries}): "
            "the handler may be killing its worker",
            "",
        ),
    )


def screen(
    fields: Mapping[bytes, bytes],
    deliveries: int,
    *,
    max_deliveries: int,
    max_bytes: int,
    tenant_id: str,
    max_hops: int = 0,
    max_visits: int = 0,
    stopped: Mapping[str, str] | None = None,
) -> AgentEvent | Rejected:
    """The decoded event, or why it must not reach the handler.

    ``max_hops`` / ``max_visits``: the bus's chain limits (0 = off); ``stopped``: the
    correlation ids of halted requests and of requests that spent their budget, each
    mapped to that reason (what the consumer last read from Redis)."""
    if deliveries > max_deliveries:
        return poison(deliveries, max_deliveries)
    size = sum(map(len, fields)) + sum(map(len, fields.values()))
    if size > max_bytes:
        message = f"entry is {size} bytes, over the limit of {max_bytes}"
        return Rejected(REASON_TOO_LARGE, FailureInfo("EventTooLarge", message, ""))
    try:
        event = AgentEvent.from_stream_dict(fields)
    except DecodeError as exc:
        return Rejected(REASON_DECODE_ERROR, FailureInfo.from_exception(exc))
    if event.tenant_id != tenant_id:  # (the check's text is only built for a mismatch)
        try:
            check_tenant(tenant_id, event.tenant_id, f"event {event.event_id!r}")
        except TenantMismatch as exc:  # the producer's mistake, not ours: no traceback
            return Rejected(REASON_WRONG_TENANT, FailureInfo(type(exc).__name__, str(exc), ""))
    violation = check_chain(event.call_chain, max_hops, max_visits) or (
        check_request(event.correlation_id, stopped) if stopped else None
    )
    if violation is not None:
        error_type = GUARD_ERRORS[violation.reason].__name__
        failure = FailureInfo(error_type, violation.message, "")
        return Rejected(violation.reason, failure, event)
    return event
