"""Requests (correlation ids) of a tenant: their budgets, the operator's halt and resume,
and the consumer's cached view of which requests are stopped. The budget is charged
inside publish.lua; everything here is one small call each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from eventbus.errors import InvalidArgument
from eventbus.keys import validate_correlation_id
from eventbus.records import REASON_BUDGET_EXCEEDED, REASON_HALTED
from eventbus.redis_io import s, translated

if TYPE_CHECKING:
    from eventbus.bus import TenantEventBus

log = structlog.get_logger("eventbus.requests")

#: How long a consumer trusts its copy of the halted and spent requests (s): a halt takes
#: effect within about this (plus the handler in hand).
STOPPED_REFRESH_S = 0.5
#: Before an event is dead-lettered as halted or over budget, the copy is read again if it
#: is older than this (s; 0 = always): an event replayed after a resume (or a raised
#: budget) is read after it, so the fresh copy sees it. A backlog of a halted request
#: costs one extra read per event (a rare path: the kill switch).
STOPPED_CONFIRM_S = 0.0
#: The dead-letter reasons of stopped requests.
STOP_REASONS = (REASON_HALTED, REASON_BUDGET_EXCEEDED)


@dataclass(frozen=True)
class Budget:
    """A request's budget and usage (0 = no limit)."""

    correlation_id: str
    events: int
    units: float
    max_events: int
    max_units: float
    spent: bool
    halted: bool


class Requests:
    """Budgets and halts of one tenant's requests (``bus.requests``)."""

    def __init__(self, bus: TenantEventBus) -> None:
        self._bus = bus
        self.keys = bus.keys
        #: Requests this process itself stopped or lifted (a charge that spent a budget, a
        #: refused publish, a halt -> the reason; a resume, a new budget -> "") since its
        #: consumers last read Redis: they act on them at once, without waiting for the
        #: next refresh.
        self.recent: dict[str, str] = {}

    @property
    def _ttl_ms(self) -> int:
        return int(self._bus.settings.request_ttl_s * 1000)

    def set_budget(
        self, correlation_id: str, *, events: int | None = None, units: float | None = None
    ) -> Budget:
        """Give a request its own budget (over the tenant's); lifts a spent mark, so a
        raised budget lets the request go on. 0 = no limit of that kind."""
        key = self.keys.budget(correlation_id)
        if events is None and units is None:
            raise InvalidArgument("set_budget needs events, units or both")
        for name, value in (("events", events), ("units", units)):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidArgument(f"budget {name} must be a number >= 0, got {value!r}")
        limits: dict[str, float] = {}
        if events is not None:
            limits["max_events"] = int(events)
        if units is not None:
            limits["max_units"] = float(units)
        with translated(f"set the budget of request {correlation_id!r}"):
            pipe = self._bus.redis.pipeline(transaction=True)
            pipe.hset(key, items=[x for pair in limits.items() for x in pair])
            pipe.pexpire(key, self._ttl_ms)
            pipe.zrem(self.keys.spent(), correlation_id)
            pipe.execute()
        if self.recent.get(correlation_id) == REASON_BUDGET_EXCEEDED:
            del self.recent[correlation_id]  # (a cached spent mark is re-read before use)
        log.info("budget_set", tenant=self._bus.tenant_id, correlation_id=correlation_id, **limits)
        return self.budget(correlation_id)

    def budget(self, correlation_id: str) -> Budget:
        """The request's usage and limits (the tenant's when it has none of its own)."""
        st = self._bus.settings
        with translated(f"read the budget of request {correlation_id!r}"):
            pipe = self._bus.redis.pipeline(transaction=False)
            pipe.hmget(
                self.keys.budget(correlation_id), "events", "units", "max_events", "max_units"
            )
            pipe.zscore(self.keys.spent(), correlation_id)
            pipe.hexists(self.keys.halted(), correlation_id)
            (used, units, max_events, max_units), spent_until, halted = pipe.execute()
        return Budget(
            correlation_id,
            int(used or 0),
            float(units or 0),
            int(max_events) if max_events is not None else st.budget_events,
            float(max_units) if max_units is not None else st.budget_units,
            spent_until is not None and float(spent_until) > time.time() * 1000,
            bool(halted),
        )

    def charge(self, correlation_id: str, units: float) -> bool:
        """Add ``units`` of cost to a request; True when that spends its unit budget (its
        queued events are then dead-lettered, its later publishes refused)."""
        validate_correlation_id(correlation_id)
        if isinstance(units, bool) or not units > 0:
            raise InvalidArgument(f"charge takes a number of units > 0, got {units!r}")
        with translated(f"charge request {correlation_id!r}"):
            used, spent = self._bus.scripts.charge(
                self.keys.budget(correlation_id),
                self.keys.spent(),
                correlation_id,
                units,
                budget_units=self._bus.settings.budget_units,
                request_ttl_ms=self._ttl_ms,
            )
        if spent:
            self.recent[correlation_id] = REASON_BUDGET_EXCEEDED
            log.warning(
                "budget_spent",
                tenant=self._bus.tenant_id,
                correlation_id=correlation_id,
                units=used,
            )
        return spent

    def halt(self, correlation_id: str) -> bool:
        """Stop a request: none of its events is published or handled any more (queued
        ones are dead-lettered with reason ``halted``). True if it was not halted yet."""
        validate_correlation_id(correlation_id)
        with translated(f"halt request {correlation_id!r}"):
            new = self._bus.redis.hset(
                self.keys.halted(), correlation_id, str(int(time.time() * 1000))
            )
        self.recent[correlation_id] = REASON_HALTED
        log.warning("request_halted", tenant=self._bus.tenant_id, correlation_id=correlation_id)
        return bool(new)

    def resume(self, correlation_id: str) -> bool:
        """Undo :meth:`halt` (its dead letters can then be replayed). True if it was halted."""
        validate_correlation_id(correlation_id)
        with translated(f"resume request {correlation_id!r}"):
            removed = self._bus.redis.hdel(self.keys.halted(), correlation_id)
        self.recent[correlation_id] = ""  # lifted
        log.info("request_resumed", tenant=self._bus.tenant_id, correlation_id=correlation_id)
        return bool(removed)

    def halted(self) -> list[str]:
        with translated("list halted requests"):
            return sorted(s(c) for c in self._bus.redis.hkeys(self.keys.halted()))

    def stopped(self) -> dict[str, str]:
        """Halted requests and those that spent their budget -> that reason (one round
        trip: one key each for the whole tenant)."""
        with translated("read stopped requests"):
            pipe = self._bus.redis.pipeline(transaction=False)
            pipe.zrangebyscore(self.keys.spent(), int(time.time() * 1000), "+inf")
            pipe.hkeys(self.keys.halted())
            spent, halted = pipe.execute()
        out = dict.fromkeys((s(c) for c in spent), REASON_BUDGET_EXCEEDED)
        out.update(dict.fromkeys((s(c) for c in halted), REASON_HALTED))
        return out


class StoppedCache:
    """A consumer's copy of :meth:`Requests.stopped`, read again at most every
    ``refresh_s``: one round trip per refresh, none per event."""

    def __init__(self, requests: Requests, refresh_s: float = STOPPED_REFRESH_S) -> None:
        self._requests = requests
        self._refresh_s = refresh_s
        self._at = float("-inf")
        self._stopped: dict[str, str] = {}

    def current(self, max_age_s: float | None = None) -> dict[str, str]:
        """The stopped requests, read again if the copy is older than ``max_age_s``
        (default: the refresh interval)."""
        now = time.monotonic()
        recent = self._requests.recent
        if now - self._at >= (self._refresh_s if max_age_s is None else max_age_s):
            self._stopped = self._requests.stopped()
            self._at = now
            recent.clear()  # Redis knows them now (or they were lifted meanwhile)
        if not recent:
            return self._stopped
        merged = {**self._stopped, **recent}
        return {cid: reason for cid, reason in merged.items() if reason}
