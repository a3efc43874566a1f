"""The boundary to Redis: the bus's own client (raw bytes, no hidden retries), error
translation into the bus's exception tree, blocking-read limits, and the one short
in-process retry of a single idempotent call on a connection blip (tenacity).

Only this module and :mod:`eventbus.groupstream` / :mod:`eventbus.bus` catch redis-py
exceptions; everything else sees :mod:`eventbus.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from eventbus.errors import (
    BusConnectionError,
    BusRefused,
    EventBusError,
    GroupMissing,
    ScriptError,
)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
# Refusals: the command was understood and not carried out (nothing was written).
REFUSALS: tuple[type[BaseException], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.ReadOnlyError,
)
_REFUSED_PREFIXES = ("OOM", "NOPERM", "READONLY", "MISCONF")
# Replies that mean "not now": a script running too long, a cluster reconfiguring.
_TRANSIENT_PREFIXES = ("BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING")
#: Connect timeout of the bus's client when the caller's client sets none: an unreachable
#: host is reported within about this instead of the OS's minutes.
DEFAULT_CONNECT_TIMEOUT_S = 2.0


def bus_client(client: redis.Redis) -> redis.Redis:
    """The bus's own client on the same server: replies as raw bytes (entries may hold any
    bytes) and no retries inside redis-py, so that the bus's retry layer is the only one and
    its time is bounded (redis-py 8 retries each call up to 10 times by default).

    A sibling with its own connection pool and the caller's connection settings; the
    caller's client is left as it is.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = False
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs.pop("retry_on_timeout", None)
    kwargs.pop("retry_on_error", None)
    if kwargs.get("socket_connect_timeout") is None and "path" not in kwargs:
        kwargs["socket_connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
    sibling = type(pool)(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=sibling)


def max_block_ms(client: redis.Redis, wanted_ms: int) -> int:
    """Clamp a BLOCK time below the client's socket timeout (default 5 s in redis-py 8).

    A blocking read longer than the socket timeout would time out client-side, and the
    entries of a reply that came too late would wait in the pending list.
    """
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout is None:
        return wanted_ms
    return max(1, min(wanted_ms, int(timeout * 1000 * 0.8)))


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def translate(exc: redis.RedisError, what: str) -> EventBusError:
    """The bus error for a redis-py error raised while doing ``what``."""
    if isinstance(exc, TRANSIENT):
        return BusConnectionError(f"{what}: Redis unreachable ({error_text(exc)})")
    if isinstance(exc, REFUSALS):
        return BusRefused(f"{what}: Redis refused it ({type(exc).__name__}: {exc})")
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        word = text.split(" ", 1)[0]
        if word in _REFUSED_PREFIXES:
            return BusRefused(f"{what}: Redis refused it ({text})")
        if word in _TRANSIENT_PREFIXES:
            return BusConnectionError(f"{what}: Redis is not available now ({text})")
        if word == "NOGROUP":
            return GroupMissing(f"{what}: {text}")
        return ScriptError(f"{what}: Redis rejected it ({text})")
    return EventBusError(f"{what}: {error_text(exc)}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate redis-py errors raised inside into the bus's exception tree."""
    try:
        yield
    except redis.RedisError as exc:
        raise translate(exc, what) from exc


def call_with_retries(fn: Callable[[], T], budget_s: float) -> T:
    """Run ``fn`` again while it fails with a connection error, for at most ``budget_s``
    seconds in all (0.05 s doubling to 0.5 s between tries, plus jitter); then re-raise.

    Only for calls that are safe to repeat (idempotent by construction).
    """
    try:
        return fn()  # the usual case: no retry loop to set up (~15 us per call)
    except TRANSIENT as exc:
        failed: list[BaseException] = [exc]
        if budget_s <= 0:
            raise

    def attempt() -> T:
        if failed:  # tenacity takes over from the failed first attempt: same schedule
            raise failed.pop()
        return fn()

    retrying = Retrying(
        stop=stop_after_delay(budget_s),
        wait=wait_exponential(multiplier=0.05, max=0.5) + wait_random(0, 0.05),
        retry=retry_if_exception_type(TRANSIENT),
        reraise=True,
    )
    return retrying(attempt)


def s(value: Any) -> str:
    """bytes -> str (UTF-8); anything else -> str()."""
    return value.decode() if isinstance(value, bytes) else str(value)


def lossy(value: Any) -> str:
    """bytes -> str with undecodable bytes as U+FFFD; anything else -> str()."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def lossy_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """An entry's fields as text, undecodable bytes shown as U+FFFD."""
    return {lossy(k): lossy(v) for k, v in fields.items()}
