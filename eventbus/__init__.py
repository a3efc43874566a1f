"""eventbus: a tenant-scoped, at-least-once event bus on Redis Streams for agent platforms.

publish (``bus``) -> stream (``keys``) -> group -> handler (``consumer``) -> ack / retry
(``retry``, ``lua/``) / dead-letter (``dlq``).
"""

from __future__ import annotations

from eventbus.bus import PendingEntry, StreamMessage, TenantEventBus
from eventbus.consumer import EventConsumer
from eventbus.dlq import DeadLetter, DeadLetterQueue
from eventbus.errors import (
    BusConnectionError,
    BusRefused,
    DecodeError,
    EventBusError,
    EventTooLarge,
    InvalidName,
    PublishOutcomeUnknown,
    TenantMismatch,
)
from eventbus.handler import HandlerContext, wants_context
from eventbus.retry import RetryPolicy
from eventbus.schemas import AgentEvent, EventPriority, EventType
from eventbus.settings import BusSettings, ConsumerSettings

__all__ = [
    "AgentEvent",
    "BusConnectionError",
    "BusRefused",
    "BusSettings",
    "ConsumerSettings",
    "DeadLetter",
    "DeadLetterQueue",
    "DecodeError",
    "EventBusError",
    "EventConsumer",
    "EventPriority",
    "EventTooLarge",
    "EventType",
    "HandlerContext",
    "InvalidName",
    "PendingEntry",
    "PublishOutcomeUnknown",
    "RetryPolicy",
    "StreamMessage",
    "TenantEventBus",
    "TenantMismatch",
    "wants_context",
]
__version__ = "0.1.0"
