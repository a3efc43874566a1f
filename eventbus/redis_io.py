"""The boundary to Redis: error translation, raw (bytes) clients, blocking-read limits and
the short in-process retry of a single call on a connection blip (tenacity)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from eventbus.errors import BusConnectionError, BusRefused, EventBusError

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
# Refusals: the command was understood and not carried out (nothing was written).
REFUSALS: tuple[type[BaseException], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.ReadOnlyError,
)


def raw_client(client: redis.Redis) -> redis.Redis:
    """A client on the same server that never decodes replies (entries may hold any bytes).

    Returns ``client`` itself unless it was built with ``decode_responses=True``; then a
    sibling client with its own pool and the same connection settings.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if not kwargs.get("decode_responses"):
        return client
    kwargs["decode_responses"] = False
    sibling = type(pool)(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=sibling)


def max_block_ms(client: redis.Redis, wanted_ms: int) -> int:
    """Clamp a BLOCK time below the client's socket timeout (default 5 s in redis-py 8).

    A blocking read longer than the socket timeout would time out client-side and be
    retried by redis-py, which can lose the first reply's entries to the pending list.
    """
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout is None:
        return wanted_ms
    return max(1, min(wanted_ms, int(timeout * 1000 * 0.8)))


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate redis-py errors raised inside into the bus's exception tree."""
    try:
        yield
    except TRANSIENT as exc:
        raise BusConnectionError(f"{what}: Redis unreachable ({error_text(exc)})") from exc
    except REFUSALS as exc:
        raise BusRefused(f"{what}: Redis refused it ({type(exc).__name__}: {exc})") from exc
    except redis.ResponseError as exc:
        text = str(exc)
        if text.split(" ", 1)[0] in ("OOM", "NOPERM", "READONLY", "MISCONF"):
            raise BusRefused(f"{what}: Redis refused it ({text})") from exc
        raise EventBusError(f"{what}: {text}") from exc
    except redis.RedisError as exc:
        raise EventBusError(f"{what}: {error_text(exc)}") from exc


def call_with_retries(fn: Callable[[], T], attempts: int) -> T:
    """Run ``fn`` up to ``attempts`` times while it fails with a connection error.

    Only for calls that are safe to repeat (idempotent by construction).
    """
    try:
        return fn()  # the usual case: no retry loop to set up (~15 us per call)
    except TRANSIENT as exc:
        failed: list[BaseException] = [exc]

    def attempt() -> T:
        if failed:  # tenacity takes over from the failed first attempt: same schedule
            raise failed.pop()
        return fn()

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
        retry=retry_if_exception_type(TRANSIENT),
        reraise=True,
    )
    return retrying(attempt)


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP")


def s(value: Any) -> str:
    """bytes -> str (UTF-8); anything else -> str()."""
    return value.decode() if isinstance(value, bytes) else str(value)
