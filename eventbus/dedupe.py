"""Consume, optionally: remember which events a group has finished, so that a redelivery
(delivery is at least once) can skip a side effect that already happened.

A handler wraps its side effect: ``once(redis, event, ctx, lambda: send(event))``. The mark
(``t:{T}:done:{S}:{G}:{event_id}``, SET NX EX) is written right *after* the effect, so a
crash before the effect never loses it; a crash between the effect and the mark (a few
microseconds) still repeats it. For exactly once, make the effect itself idempotent or
write it to Redis in the same transaction as the mark.
"""

from __future__ import annotations

from collections.abc import Callable

from eventbus.handler import HandlerContext
from eventbus.keys import TenantKeys
from eventbus.redis_io import AnyRedis, translated
from eventbus.schemas import AgentEvent

#: How long a finished event is remembered: longer than any redelivery can come late
#: (reclaim idle time, retries, a pool down for a while).
DEFAULT_TTL_S = 7 * 86400


def is_done(client: AnyRedis, tenant_id: str, stream: str, group: str, event_id: str) -> bool:
    """True if ``group`` marked ``event_id`` finished (within the marker's time to live)."""
    key = TenantKeys(tenant_id).done(stream, group, event_id)
    with translated(f"read done marker of {event_id!r}"):
        return bool(client.exists(key))


def mark_done(
    client: AnyRedis,
    tenant_id: str,
    stream: str,
    group: str,
    event_id: str,
    *,
    ttl_s: int = DEFAULT_TTL_S,
) -> bool:
    """Mark ``event_id`` finished by ``group`` (SET NX EX); True if it was not marked yet."""
    key = TenantKeys(tenant_id).done(stream, group, event_id)
    with translated(f"write done marker of {event_id!r}"):
        return bool(client.set(key, b"1", nx=True, ex=ttl_s))


def once(
    client: AnyRedis,
    event: AgentEvent,
    ctx: HandlerContext,
    effect: Callable[[], object],
    *,
    ttl_s: int = DEFAULT_TTL_S,
) -> bool:
    """Run ``effect()`` unless this group already finished ``event``; mark it afterwards.

    Returns True if the effect ran now, False if an earlier delivery had finished it.
    If ``effect`` raises, nothing is marked and the exception propagates (a retry runs it).
    """
    names = (event.tenant_id, ctx.stream, ctx.group, event.event_id)
    if is_done(client, *names):
        return False
    effect()
    mark_done(client, *names, ttl_s=ttl_s)
    return True
