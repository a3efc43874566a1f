"""Handlers: plain sync callables ``handler(event)``, or ``handler(event, ctx)`` for those
that want the delivery's details (mark them with :func:`wants_context`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from eventbus.schemas import AgentEvent

if TYPE_CHECKING:
    from eventbus.bus import TenantEventBus

Handler = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "eventbus_wants_context"


@dataclass(frozen=True)
class HandlerContext:
    """What a context-taking handler learns about the delivery in hand."""

    message_id: str
    stream: str
    group: str
    consumer: str
    #: How many times Redis has delivered this entry (1 on the first delivery). Handlers
    #: are called at least once per event: use ``event.event_id`` to deduplicate.
    delivery_count: int
    #: How many retries came before this attempt (0 on the first attempt).
    retry_count: int
    #: A structlog logger bound with tenant, stream, group, consumer, event_id, attempt...
    log: Any
    #: The consumer's bus (same tenant, same connection pool), for follow-up events.
    bus: TenantEventBus
    #: The event's request (None: not budgeted, charge() does nothing).
    correlation_id: str | None = None
    #: The tenant whose event this is (a platform pool serves many).
    tenant: str = ""

    def charge(self, units: float) -> bool:
        """Report ``units`` of cost (tokens, cents...) against the event's request budget.
        True when that spends it: its queued events are then dead-lettered and its later
        publishes refused. Events without a correlation id are not budgeted (False)."""
        if self.correlation_id is None:
            return False
        return self.bus.requests.charge(self.correlation_id, units)


class DeliveryObserver(Protocol):
    """Told when a handler call starts and ends (the heartbeat, a pool's hung-handler
    watch). Called in the consumer's thread; must be quick and must not raise."""

    def started(self, key: str, message_id: str, retry_count: int) -> None: ...

    def finished(self) -> None: ...


#: Told what became of a delivery: ``(what, reason)`` with ``what`` one of "handled",
#: "failed", "retried", "dead_lettered" (``reason``: the dead-letter reason), "redelivered",
#: "reclaimed", "decode_error". Called in the consumer's thread; must be quick.
OutcomeCallback = Callable[[str, str], None]


def wants_context(fn: F) -> F:
    """Mark a handler as ``handler(event, ctx: HandlerContext)``."""
    setattr(fn, _ATTR, True)
    return fn


def takes_context(handler: Handler) -> bool:
    return bool(getattr(handler, _ATTR, False))


def call(handler: Handler, event: AgentEvent, ctx: Callable[[], HandlerContext]) -> None:
    if takes_context(handler):
        handler(event, ctx())
    else:
        handler(event)
