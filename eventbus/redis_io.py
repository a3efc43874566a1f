"""The boundary to Redis: the bus's own client (raw bytes, no hidden retries), error
translation into the bus's exception tree, blocking-read limits, and the one short
in-process retry of a single idempotent call on a connection blip (tenacity).

Only this module and :mod:`eventbus.groupstream` / :mod:`eventbus.bus` catch redis-py
exceptions; everything else sees :mod:`eventbus.errors`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, Union

import redis
from redis._parsers.commands import CommandsParser
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from tenacity import (
    Retrying,
    retry_if_exception,
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
#: What the bus talks through: one Redis node, or a Redis Cluster (keys of one tenant share
#: one slot, so every multi-key command and script goes to one node).
AnyRedis = Union[redis.Redis, RedisCluster]  # noqa: UP007 (a runtime alias on 3.10)

#: A cluster client raises RedisClusterException (not a RedisError) when no node answers
#: its slot-map refresh: a failover in progress. (It also raises it, before sending
#: anything, for keys of several slots in one command: that is a bug, not an outage; see
#: :func:`transient`. The key factory rules it out: tests/unit/test_lua_keys.py.)
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    RedisClusterException,
)
# Refusals: the command was understood and not carried out (nothing was written).
REFUSALS: tuple[type[BaseException], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.ReadOnlyError,
)
_REFUSED_PREFIXES = ("OOM", "NOPERM", "READONLY", "MISCONF")
# Replies that mean "not now": a script running too long, a cluster reconfiguring, a
# blocked read whose stream was deleted under it (UNBLOCKED: a slot migration moving it to
# another master, a flush; the next read finds the stream there, or NOGROUP).
_TRANSIENT_PREFIXES = ("BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING", "UNBLOCKED")
_PIPELINE_ERROR = " of pipeline caused error: "
#: Connect timeout of the bus's client when the caller's client sets none: an unreachable
#: host is reported within about this instead of the OS's minutes.
DEFAULT_CONNECT_TIMEOUT_S = 2.0


_SIBLINGS: weakref.WeakKeyDictionary[Any, AnyRedis] = weakref.WeakKeyDictionary()


def bus_client(client: AnyRedis) -> AnyRedis:
    """The bus's own client on the same server: replies as raw bytes (entries may hold any
    bytes) and no retries inside redis-py, so that the bus's retry layer is the only one and
    its time is bounded (redis-py 8 retries each call up to 10 times by default).

    A sibling with its own connection pool and the caller's connection settings; the
    caller's client is left as it is. For a :class:`~redis.cluster.RedisCluster`, a sibling
    cluster client seeded with the caller's nodes: it still follows MOVED / ASK redirects
    itself (slot migrations), and after a connection error it refreshes its slot map
    before the error reaches the bus's retry, so the next try goes to the new master.
    Buses made from one client share one sibling (a platform pool's worker holds a bus
    per tenant: one pool of connections, not one each).
    """
    key: Any = client if isinstance(client, RedisCluster) else client.connection_pool
    found = _SIBLINGS.get(key)
    if found is None:
        if isinstance(client, RedisCluster):
            found = _cluster_sibling(client)
        else:
            found = _sibling(client)
        _SIBLINGS[key] = found
    return found


def _sibling(client: redis.Redis) -> redis.Redis:
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


# Connection settings of a cluster client that its sibling takes over (the rest are the
# cluster client's own machinery).
_CLUSTER_KWARGS = (
    "username",
    "password",
    "client_name",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "health_check_interval",
    "ssl",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
)


class _StreamKeysParser(CommandsParser):
    """redis-py's command key finder, knowing where XREAD / XREADGROUP keep their keys (after
    STREAMS, the first half), so that routing a read costs no COMMAND GETKEYS round trip."""

    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        name = s(args[0]).upper() if args else ""
        if name in ("XREADGROUP", "XREAD"):
            words = [s(a).upper() if isinstance(a, (str, bytes)) else "" for a in args]
            if "STREAMS" in words:
                rest = args[words.index("STREAMS") + 1 :]
                return list(rest[: len(rest) // 2])
        return super().get_keys(redis_conn, *args)  # type: ignore[no-untyped-call]


def _cluster_sibling(client: RedisCluster) -> RedisCluster:
    given = client.nodes_manager.connection_kwargs
    kwargs: dict[str, Any] = {k: given[k] for k in _CLUSTER_KWARGS if k in given}
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
    known = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())  # type: ignore[no-untyped-call]
    seeds = [ClusterNode(n.host, n.port) for n in known]  # type: ignore[no-untyped-call]
    sibling = RedisCluster(
        startup_nodes=seeds,
        decode_responses=False,
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=False,
        **kwargs,
    )
    # the parser is built (one COMMAND) with the client; its pipelines share it
    sibling.commands_parser.__class__ = _StreamKeysParser
    return sibling


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (or one of its pipelines)."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, cluster: bool = False, **kwargs: Any) -> AnyRedis:
    """A client for ``url``: one node (connects on first use), or with ``cluster`` a Redis
    Cluster client that uses the URL's node as its seed and reads the slot map now (so an
    unreachable cluster raises :class:`BusConnectionError` here)."""
    if not cluster:
        return redis.Redis.from_url(url, **kwargs)
    try:
        return RedisCluster.from_url(url, **kwargs)
    except (redis.RedisError, RedisClusterException) as exc:
        host = url.rsplit("@", 1)[-1]  # no credentials in the message
        raise BusConnectionError(f"cannot reach the Redis Cluster at {host}: {exc}") from exc


def disconnect(client: AnyRedis) -> None:
    """Close the client's connections (every node's, for a cluster)."""
    if isinstance(client, RedisCluster):
        client.close()
    else:
        client.connection_pool.disconnect()


def drop_connections(client: AnyRedis) -> None:
    """Close the client's open connections and keep it usable: they are made again on next
    use. (:func:`disconnect` of a cluster client is ``RedisCluster.close``, after which it
    cannot be used.)"""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():  # type: ignore[no-untyped-call]
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
    else:
        client.connection_pool.disconnect()


def _socket_timeout(client: AnyRedis) -> float | None:
    if isinstance(client, RedisCluster):
        value = client.nodes_manager.connection_kwargs.get("socket_timeout")
    else:
        value = client.connection_pool.connection_kwargs.get("socket_timeout")
    return None if value is None else float(value)


def max_block_ms(client: AnyRedis, wanted_ms: int) -> int:
    """Clamp a BLOCK time below the client's socket timeout (default 5 s in redis-py 8).

    A blocking read longer than the socket timeout would time out client-side, and the
    entries of a reply that came too late would wait in the pending list.
    """
    timeout = _socket_timeout(client)
    if timeout is None:
        return wanted_ms
    return max(1, min(wanted_ms, int(timeout * 1000 * 0.8)))


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_CROSS_SLOT = "must map to the same key slot"  # redis-py's text for a command over slots


def transient(exc: BaseException) -> bool:
    """A connection-level failure worth trying again (not a command mixing hash slots)."""
    return isinstance(exc, TRANSIENT) and _CROSS_SLOT not in str(exc)


def translate(exc: redis.RedisError | RedisClusterException, what: str) -> EventBusError:
    """The bus error for a redis-py error raised while doing ``what``."""
    if isinstance(exc, RedisClusterException) and _CROSS_SLOT in str(exc):
        return ScriptError(f"{what}: keys of several hash slots in one command, a bug ({exc})")
    if isinstance(exc, TRANSIENT):
        return BusConnectionError(f"{what}: Redis unreachable ({error_text(exc)})")
    if isinstance(exc, REFUSALS):
        return BusRefused(f"{what}: Redis refused it ({type(exc).__name__}: {exc})")
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        # a pipeline's error reads "Command # 2 (XREADGROUP ...) of pipeline caused error:
        # <the reply>": classify the reply
        word = text.rsplit(_PIPELINE_ERROR, 1)[-1].split(" ", 1)[0]
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
    except (redis.RedisError, RedisClusterException) as exc:
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
        if budget_s <= 0 or not transient(exc):
            raise

    def attempt() -> T:
        if failed:  # tenacity takes over from the failed first attempt: same schedule
            raise failed.pop()
        return fn()

    retrying = Retrying(
        stop=stop_after_delay(budget_s),
        wait=wait_exponential(multiplier=0.05, max=0.5) + wait_random(0, 0.05),
        retry=retry_if_exception(transient),
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
