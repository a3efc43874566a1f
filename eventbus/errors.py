"""One exception tree for the bus: transient (retry later) vs permanent (fix the input).

Redis errors are wrapped where the bus talks to Redis (``raise ... from``); input errors
that the API promises as ``ValueError`` subclass ``ValueError`` too.
"""

from __future__ import annotations

from eventbus.records import (
    REASON_BUDGET_EXCEEDED,
    REASON_CYCLE,
    REASON_HALTED,
    REASON_HOP_LIMIT,
)


class EventBusError(Exception):
    """Root of every error the bus raises."""


class BusConnectionError(EventBusError):
    """Redis could not be reached or answered too late; retrying later may succeed."""


class PublishOutcomeUnknown(BusConnectionError):
    """A publish was sent but no reply came back after the bounded retries.

    The event may or may not be stored. Publishing the same event (same ``event_id``)
    again within the dedupe window is safe: it will not be written twice.
    """

    def __init__(self, event_id: str, stream: str, cause: BaseException) -> None:
        super().__init__(
            f"outcome unknown for event {event_id!r} on stream {stream!r}: {cause}; "
            "publishing the same event again within the dedupe window is safe"
        )
        self.event_id = event_id
        self.stream = stream


class ReplicationTimeout(EventBusError):
    """A publish was written on the master, but fewer replicas than ``min_replicas``
    confirmed it within ``replica_timeout_ms`` (``WAIT``): **the write may be lost** if the
    master fails before its replicas catch up. Publishing the same events again (same
    ``event_id``) is safe: the dedupe writes nothing twice, and waits again.
    """

    def __init__(
        self, stream: str, message_ids: list[str], acked: int, wanted: int, timeout_ms: int
    ) -> None:
        super().__init__(
            f"the write may be lost: {len(message_ids)} event(s) published to {stream!r} "
            f"(last message id {message_ids[-1] if message_ids else '?'}) but "
            f"{acked} of {wanted} replica(s) confirmed within {timeout_ms} ms; publishing "
            "the same events again is safe"
        )
        self.stream = stream
        self.message_ids = message_ids
        self.acked = acked
        self.wanted = wanted


class BusRefused(EventBusError):
    """Redis refused a command (out of memory, no permission, read-only replica...)."""


class GroupMissing(EventBusError):
    """The consumer group (or its stream) is gone: Redis restarted without persistence, or
    someone deleted it. The consumer recreates it (and logs ``consumer_group_recreated``)."""


class ScriptError(EventBusError):
    """Redis rejected one of the bus's own commands or Lua scripts as wrong: a bug in the
    bus (or a server it does not support), not an outage; retrying will not help."""


class InvalidName(EventBusError, ValueError):
    """A tenant, stream, group or consumer name is not allowed."""


class InvalidArgument(EventBusError, ValueError):
    """A bad argument to a library call (a negative budget, an unknown DLQ filter...)."""


class TenantMismatch(EventBusError, ValueError):
    """An event or object belongs to another tenant than the bus."""


class EventTooLarge(EventBusError, ValueError):
    """An encoded event is larger than the configured limit."""


class GuardRefused(EventBusError, ValueError):
    """An agent guard refused an event (runaway chain, spent budget, halted request).

    ``reason`` is the dead-letter reason the same event gets when it is already queued;
    ``event_id`` names the refused event; ``published`` holds the message ids of events of
    the same ``publish_many`` call written before it (earlier chunks; empty for
    ``publish``)."""

    reason = ""

    def __init__(self, message: str, *, event_id: str = "", published: tuple[str, ...] = ()):
        super().__init__(message)
        self.event_id = event_id
        self.published = published


class HopLimitExceeded(GuardRefused):
    """An event's call_chain is longer than the bus's hop limit."""

    reason = REASON_HOP_LIMIT


class CycleDetected(GuardRefused):
    """An agent appears in an event's call_chain more often than the bus allows."""

    reason = REASON_CYCLE


class BudgetExceeded(GuardRefused):
    """The event's request (correlation id) has spent its budget of events or units."""

    reason = REASON_BUDGET_EXCEEDED


class RequestHalted(GuardRefused):
    """The event's request (correlation id) was halted by an operator."""

    reason = REASON_HALTED


#: The refusal for each guard's dead-letter reason.
GUARD_ERRORS: dict[str, type[GuardRefused]] = {
    cls.reason: cls for cls in (HopLimitExceeded, CycleDetected, BudgetExceeded, RequestHalted)
}


class DecodeError(EventBusError, ValueError):
    """A stream entry could not be decoded into an AgentEvent."""


class UnsupportedVersion(DecodeError):
    """A stream entry carries a schema major version this code does not know."""


class NotFound(EventBusError, KeyError):
    """Something named by the caller does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else type(self).__name__


class StreamNotFound(NotFound):
    """The named stream does not exist (nothing was published to it yet, or it was deleted)."""


class DLQEntryNotFound(NotFound):
    """No dead-letter entry with that id exists (already replayed or purged?)."""
