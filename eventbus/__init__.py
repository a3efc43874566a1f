"""eventbus: a tenant-scoped, at-least-once event bus on Redis Streams for agent platforms.

publish (``bus``) -> stream (``keys``) -> group (``groupstream``) -> handler (``consumer``)
-> ack / retry (``retry``, ``lua/``) / dead-letter (``dlq``).

The names below are imported on first use (PEP 562), so that importing a pure module
(``eventbus.schemas``, ``eventbus.retry``, ``eventbus.intake``...) does not pull in redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # explicit re-exports for type checkers
    from eventbus.bus import TenantEventBus as TenantEventBus
    from eventbus.consumer import EventConsumer as EventConsumer
    from eventbus.dlq import DeadLetter as DeadLetter
    from eventbus.dlq import DeadLetterQueue as DeadLetterQueue
    from eventbus.entries import PendingEntry as PendingEntry
    from eventbus.entries import StreamMessage as StreamMessage
    from eventbus.errors import BusConnectionError as BusConnectionError
    from eventbus.errors import BusRefused as BusRefused
    from eventbus.errors import DecodeError as DecodeError
    from eventbus.errors import EventBusError as EventBusError
    from eventbus.errors import EventTooLarge as EventTooLarge
    from eventbus.errors import InvalidName as InvalidName
    from eventbus.errors import PublishOutcomeUnknown as PublishOutcomeUnknown
    from eventbus.errors import ReplicationTimeout as ReplicationTimeout
    from eventbus.errors import TenantMismatch as TenantMismatch
    from eventbus.handler import HandlerContext as HandlerContext
    from eventbus.handler import wants_context as wants_context
    from eventbus.retry import RetryPolicy as RetryPolicy
    from eventbus.schemas import AgentEvent as AgentEvent
    from eventbus.schemas import EventPriority as EventPriority
    from eventbus.schemas import EventType as EventType
    from eventbus.settings import BusSettings as BusSettings
    from eventbus.settings import ConsumerSettings as ConsumerSettings

_WHERE = {
    "AgentEvent": "eventbus.schemas",
    "BusConnectionError": "eventbus.errors",
    "BusRefused": "eventbus.errors",
    "BusSettings": "eventbus.settings",
    "ConsumerSettings": "eventbus.settings",
    "DeadLetter": "eventbus.dlq",
    "DeadLetterQueue": "eventbus.dlq",
    "DecodeError": "eventbus.errors",
    "EventBusError": "eventbus.errors",
    "EventConsumer": "eventbus.consumer",
    "EventPriority": "eventbus.schemas",
    "EventTooLarge": "eventbus.errors",
    "EventType": "eventbus.schemas",
    "HandlerContext": "eventbus.handler",
    "InvalidName": "eventbus.errors",
    "PendingEntry": "eventbus.entries",
    "PublishOutcomeUnknown": "eventbus.errors",
    "ReplicationTimeout": "eventbus.errors",
    "RetryPolicy": "eventbus.retry",
    "StreamMessage": "eventbus.entries",
    "TenantEventBus": "eventbus.bus",
    "TenantMismatch": "eventbus.errors",
    "wants_context": "eventbus.handler",
}

__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
