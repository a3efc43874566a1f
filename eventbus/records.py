"""Dead-letter records (pure): why an entry was dead-lettered, the error that travels
with it, and the reserved ``_dlq_*`` fields it is stored with. No I/O: the intake, the
outcomes, the DLQ and the supervisor all import it."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass

#: How much of a traceback travels with a dead letter.
TRACEBACK_MAX_CHARS = 2000

# Why an entry was dead-lettered (the ``_dlq_reason`` field; docs/wire-format.md).
REASON_HANDLER_FAILED = "handler_failed"  # the handler kept failing through the retries
REASON_DECODE_ERROR = "decode_error"  # not a valid AgentEvent (bad JSON, version, UTF-8...)
REASON_WRONG_TENANT = "wrong_tenant"  # a valid event of another tenant than the stream's
REASON_TOO_LARGE = "too_large"  # over the size limit (written by a foreign producer)
REASON_MAX_DELIVERIES = "max_deliveries"  # delivered too often without an outcome (poison)
REASON_MANUAL = "manual"  # sent by send_to_dlq
REASON_HOP_LIMIT = "hop_limit"  # call_chain longer than the hop limit (agent guards)
REASON_CYCLE = "cycle"  # an agent too often in one call_chain (agent guards)
REASON_BUDGET_EXCEEDED = "budget_exceeded"  # its request spent its budget (agent guards)
REASON_HALTED = "halted"  # its request was halted by an operator (agent guards)
#: Every reason above (the web console's filter offers these).
REASONS = (
    REASON_HANDLER_FAILED,
    REASON_DECODE_ERROR,
    REASON_WRONG_TENANT,
    REASON_TOO_LARGE,
    REASON_MAX_DELIVERIES,
    REASON_MANUAL,
    REASON_HOP_LIMIT,
    REASON_CYCLE,
    REASON_BUDGET_EXCEEDED,
    REASON_HALTED,
)
#: The reasons of the agent guards (README "Agent guards").
GUARD_REASONS = frozenset((REASON_HOP_LIMIT, REASON_CYCLE, REASON_BUDGET_EXCEEDED, REASON_HALTED))

# Reserved fields of entries (the ``_`` prefix is the bus's).
RETRY_COUNT_FIELD = "_retry_count"
ORIGIN_ID_FIELD = "_origin_id"
REPLAY_OF_FIELD = "_replay_of"


@dataclass(frozen=True)
class FailureInfo:
    """A handler error as it travels to the dead-letter queue."""

    error_type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> FailureInfo:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), tb[-TRACEBACK_MAX_CHARS:])


def dead_letter_metadata(
    *,
    reason: str,
    original_stream: str,
    message_id: str,
    retry_count: int | None = None,
    failure: FailureInfo | None = None,
    group: str | None = None,
    consumer: str | None = None,
) -> dict[str, str]:
    """The ``_dlq_*`` fields that travel with a dead letter. ``retry_count`` is left out
    when the dead-letter script takes it from the entry itself (the consumer's paths)."""
    meta = {
        "_dlq_reason": reason,
        "_dlq_stream": original_stream,
        "_dlq_message_id": message_id,
    }
    if retry_count is not None:
        meta[RETRY_COUNT_FIELD] = str(retry_count)
    if failure is not None:
        meta["_dlq_error_type"] = failure.error_type
        meta["_dlq_error"] = failure.message
        meta["_dlq_traceback"] = failure.traceback
    if group is not None:
        meta["_dlq_group"] = group
    if consumer is not None:
        meta["_dlq_consumer"] = consumer
    return meta


_RETRY_COUNT = RETRY_COUNT_FIELD.encode()


def retry_count_of(fields: Mapping[bytes, bytes]) -> int:
    """The ``_retry_count`` an entry carries (0 when absent or unreadable)."""
    raw = fields.get(_RETRY_COUNT)
    try:
        return max(0, int(raw)) if raw is not None else 0
    except ValueError:
        return 0
