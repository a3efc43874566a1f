"""Settings of the library, with their units in their names. Nothing here reads the
environment: the worker pool's settings (``workers.pool.settings``) do that and build these."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # the programs' --redis-url default


def _positive(obj: object, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{type(obj).__name__}.{name} must be a number {bound}, got {value!r}")


@dataclass(frozen=True)
class BusSettings:
    """How a :class:`~eventbus.bus.TenantEventBus` publishes."""

    maxlen: int = 1000  # retention target per stream (entries); 0 = never trim
    trim_slack: int = 100  # growth past maxlen before a trim runs (like MAXLEN ~)
    dedupe_window_s: float = 300.0  # an event_id published again within this is a no-op
    max_event_bytes: int = 1024 * 1024  # encoded size limit, checked before Redis is touched
    retry_budget_s: float = 2.0  # how long one publish is retried on connection errors (s)
    # Agent guards (README "Agent guards"); 0 turns a limit off.
    max_hops: int = 32  # agents in one call_chain (hops); longer chains are refused
    max_visits: int = 2  # times one agent may appear in one call_chain (a->b->a is 2)
    budget_events: int = 0  # events per request (correlation id); 0 = no tenant budget
    budget_units: float = 0.0  # cost units per request (ctx.charge); 0 = no tenant budget
    request_ttl_s: float = 86_400.0  # budget and trace live this long after the last event
    trace: bool = False  # record each event's place in its request (eventbus trace)
    trace_max_events: int = 20_000  # entries kept per request's trace (about; oldest go)
    # Durability (README "Redis Cluster"): publish returns only once this many replicas
    # have the write (WAIT), else raises ReplicationTimeout; 0 = do not wait.
    min_replicas: int = 0  # replicas that must confirm each publish; 0 = off
    replica_timeout_ms: int = 1000  # how long a publish waits for them (ms)

    def __post_init__(self) -> None:
        _positive(self, "maxlen", "trim_slack", allow_zero=True)
        _positive(self, "max_hops", "max_visits", "budget_events", "budget_units", allow_zero=True)
        _positive(self, "request_ttl_s", "trace_max_events", "replica_timeout_ms")
        _positive(self, "min_replicas", allow_zero=True)
        _positive(self, "dedupe_window_s", "max_event_bytes", "retry_budget_s")


@dataclass(frozen=True)
class ConsumerSettings:
    """How an :class:`~eventbus.consumer.EventConsumer` reads and recovers."""

    count: int = 100  # entries per XREADGROUP
    block_ms: int = 2000  # longest blocking read; stop() takes effect within about this
    reclaim_idle_ms: int = 60_000  # entries idle this long on any consumer get reclaimed
    reclaim_interval_s: float = 15.0  # how often the loop reclaims on its own
    max_deliveries: int = 5  # a pending entry delivered more often than this is poison
    heartbeat_interval_s: float = 0.0  # claim refresh while a handler runs; 0 = idle/3
    promote_limit: int = 100  # due retries moved per promote call
    reconnect_max_wait_s: float = 5.0  # cap of the backoff between reconnect attempts
    retry_poll_ms: int = 500  # how often due retries are looked for when none is known

    def __post_init__(self) -> None:
        _positive(self, "count", "block_ms", "reclaim_idle_ms", "reclaim_interval_s")
        _positive(self, "max_deliveries", "promote_limit", "reconnect_max_wait_s", "retry_poll_ms")
        _positive(self, "heartbeat_interval_s", allow_zero=True)

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat_interval_s or self.reclaim_idle_ms / 3000.0
