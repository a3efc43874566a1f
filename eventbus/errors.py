"""One exception tree for the bus: transient (retry later) vs permanent (fix the input).

Redis errors are wrapped where the bus talks to Redis (``raise ... from``); input errors
that the API promises as ``ValueError`` subclass ``ValueError`` too.
"""

from __future__ import annotations


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


class TenantMismatch(EventBusError, ValueError):
    """An event or object belongs to another tenant than the bus."""


class EventTooLarge(EventBusError, ValueError):
    """An encoded event is larger than the configured limit."""


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
