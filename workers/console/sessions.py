"""Logins and sessions: credentials checked by Redis itself, a server-side session store
(only a random id travels in the cookie), a CSRF token per session, expiry."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import structlog
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from eventbus.audit import AuditLog
from eventbus.bus import TenantEventBus
from eventbus.dlq import DeadLetterQueue
from eventbus.dlqview import BulkRun
from eventbus.errors import BusConnectionError, BusRefused, EventBusError
from eventbus.keys import validate_tenant_id
from eventbus.redis_io import AnyRedis, bus_client, disconnect, drop_connections
from workers.console.settings import ConsoleSettings

log = structlog.get_logger("eventbus.console")

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0
PROBE_STREAM = "console-write-probe"  # XDEL of id 0-0 in its (never existing) DLQ


class LoginFailed(Exception):
    """Shown on the login page as it is."""


def is_noperm(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    return isinstance(cause, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (a cluster client's
    RedisClusterException wraps the error of the node it tried last)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


TENANTS_KEPT = 8  # tenants' handles kept per session


@dataclass(frozen=True)
class TenantHandles:
    """The library objects of one tenant, as this session's user (made once). They talk
    through the session's one bus client (``redis_io.bus_client`` of the session's client,
    shared by every tenant's handles), so dropping them closes no connection."""

    bus: TenantEventBus
    dlq: DeadLetterQueue
    audit: AuditLog

    @classmethod
    def open(cls, client: AnyRedis, tenant: str) -> TenantHandles:
        return cls(
            TenantEventBus(client, tenant),
            DeadLetterQueue(client, tenant),
            AuditLog(client, tenant),
        )


@dataclass
class Session:
    sid: str
    username: str
    tenant: str  # chosen at login; other tenants are reachable if Redis allows
    client: AnyRedis  # a seed: each tenant's handles talk through siblings of it
    csrf: str
    forced_read_only: bool
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    writable: dict[str, bool] = field(default_factory=dict)
    flashes: list[str] = field(default_factory=list)
    jobs: dict[str, BulkRun] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _handles: dict[str, TenantHandles] = field(default_factory=dict)
    _handles_lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, tenant: str) -> TenantHandles:
        """Bus, DLQ and audit log of ``tenant`` (Redis decides what this user may do)."""
        with self._handles_lock:
            found = self._handles.get(tenant)
            if found is None:
                if len(self._handles) >= TENANTS_KEPT:
                    del self._handles[next(iter(self._handles))]
                found = self._handles[tenant] = TenantHandles.open(self.client, tenant)
            return found

    def close(self) -> None:
        with self._handles_lock:
            self._handles.clear()
        disconnect(bus_client(self.client))  # the handles' shared client (made at login)
        disconnect(self.client)

    def can_change(self, tenant: str) -> bool:
        """False under --read-only, or when this user may not write the tenant's keys.

        Probed once per tenant with a write that changes nothing (XDEL of id 0-0 from a
        DLQ that does not exist): NOPERM means read-only.
        """
        if self.forced_read_only:
            return False
        if tenant not in self.writable:
            try:
                self.of(tenant).dlq.purge(PROBE_STREAM, ids=["0-0"])
                self.writable[tenant] = True
            except BusRefused as exc:
                if not is_noperm(exc):
                    raise
                self.writable[tenant] = False
        return self.writable[tenant]

    def pop_flashes(self) -> list[str]:
        out, self.flashes = self.flashes, []
        return out


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def connect_as(url: str, username: str, password: str, *, cluster: bool = False) -> AnyRedis:
    """A bytes client on ``url`` authenticated as the operator (the URL's own credentials,
    if any, are ignored). With ``cluster``, a Redis Cluster client seeded with the URL's
    node: it reads the slot map now, so a refusal or an unreachable cluster raises here
    (RedisClusterException, raised from the node's error)."""
    options: dict[str, Any] = {
        "username": username,
        "password": password,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": False,
    }
    if cluster:
        return RedisCluster.from_url(_without_credentials(url), **options)
    parsed: dict[str, Any] = dict(parse_url(url))  # type: ignore[no-untyped-call]
    return redis.Redis(connection_pool=redis.ConnectionPool(**{**parsed, **options}))


def _login_refused(exc: BaseException, username: str, tenant: str) -> LoginFailed:
    """What the operator is told when connecting or the first commands failed."""
    causes = list(_causes(exc))
    if any(isinstance(c, redis.AuthenticationError) for c in causes):
        return LoginFailed("invalid username or password")
    if is_noperm(exc) or any(isinstance(c, redis.exceptions.NoPermissionError) for c in causes):
        if isinstance(exc, RedisClusterException):  # refused CLUSTER SLOTS: keyless
            return LoginFailed(
                f"Redis refused: user {username!r} may not read the cluster's slot map "
                "(CLUSTER SLOTS)"
            )
        return LoginFailed(f"no access to tenant {tenant!r} for user {username!r}")
    if isinstance(exc, BusRefused):
        return LoginFailed(f"Redis refused: {exc}")
    if any(isinstance(c, (redis.ConnectionError, redis.TimeoutError)) for c in causes):
        return LoginFailed("cannot reach Redis; try again later")
    if isinstance(exc, BusConnectionError):
        return LoginFailed("cannot reach Redis; try again later")
    return LoginFailed(f"Redis refused the login: {exc}")


def check_login(
    url: str, username: str, password: str, tenant: str, *, cluster: bool = False
) -> AnyRedis:
    """A client for a user that Redis accepts and that may read ``tenant``'s streams;
    :class:`LoginFailed` with the reason otherwise. With ``cluster``, ``url`` is a seed
    node of a Redis Cluster."""
    if not username or not password:
        raise LoginFailed("enter a username and a password")
    try:
        validate_tenant_id(tenant)
    except ValueError as exc:
        raise LoginFailed(str(exc)) from None
    client: AnyRedis | None = None
    bus: TenantEventBus | None = None
    try:
        client = connect_as(url, username, password, cluster=cluster)
        client.ping()
        bus = TenantEventBus(client, tenant)
        bus.streams()
    except (EventBusError, redis.RedisError, RedisClusterException) as exc:
        if bus is not None:
            disconnect(bus.redis)
        if client is not None:
            disconnect(client)
        raise _login_refused(exc, username, tenant) from None
    # The session talks through bus.redis (the one bus client of ``client``, kept open for
    # its handles); the operator's own client is only their seed. Not closed: a cluster
    # client cannot be used after RedisCluster.close.
    drop_connections(client)
    return client


class SessionStore:
    """Sessions in memory (a restart logs everyone out), by random id."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, username: str, tenant: str, client: AnyRedis) -> Session:
        session = Session(
            sid=secrets.token_urlsafe(32),
            username=username,
            tenant=tenant,
            client=client,
            csrf=secrets.token_urlsafe(32),
            forced_read_only=self.settings.read_only,
        )
        with self._lock:
            self._expire_locked(time.monotonic())
            self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id (and mark it used), or None."""
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            self._expire_locked(now)
            session = self._sessions.get(sid)
            if session is not None:
                session.last_seen = now
            return session

    def drop(self, sid: str) -> None:
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            session.close()

    def _expire_locked(self, now: float) -> None:
        idle, most = self.settings.session_idle_s, self.settings.session_max_s
        for sid, session in list(self._sessions.items()):
            if now - session.last_seen > idle or now - session.created > most:
                del self._sessions[sid]
                session.close()
                log.info("console_session_expired", user=session.username)
