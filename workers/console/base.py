"""What every console page shares: templates and their filters, the session lookup, and
turning library errors into a clear message on the page (never a stack trace)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import redis
from redis.exceptions import RedisClusterException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from eventbus.errors import BusConnectionError, BusRefused, EventBusError, NotFound
from workers.console.sessions import Session, SessionStore, is_noperm
from workers.console.settings import ConsoleSettings

HERE = Path(__file__).parent
SESSION_COOKIE = "eb_session"
LOGIN_COOKIE = "eb_login"  # CSRF token of the login form (double submit)
T = TypeVar("T")


class PageError(Exception):
    """A problem shown to the operator as a page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """No live session: pages redirect to the login form, JSON gets 401."""


def ms_time(ms: int | str | None) -> str:
    if ms is None or ms == "":
        return ""
    when = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def ms_clock(ms: int | None) -> str:
    """``HH:MM:SS.mmm`` (UTC): the events of one request are often within a second."""
    if not ms:
        return ""
    when = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)
    return when.strftime("%H:%M:%S.") + f"{int(ms) % 1000:03d}"


def id_time(stream_id: str | None) -> str:
    """The time in a stream id (``ms-seq``)."""
    return ms_time(stream_id.split("-", 1)[0]) if stream_id else ""


def duration(ms: int | None) -> str:
    if ms is None:
        return "?"
    seconds = int(ms) // 1000
    if seconds < 60:
        return f"{seconds}s" if seconds else f"{int(ms)}ms"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _query(params: dict[str, str], **more: str | None) -> str:
    merged = {**params, **{k: v for k, v in more.items() if v}}
    return urlencode(merged)


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.auto_reload = False  # templates ship with the package: no stat per render
templates.env.filters.update(ms_time=ms_time, ms_clock=ms_clock, id_time=id_time, duration=duration)
templates.env.globals["query"] = _query


def settings_of(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


def store_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def session_of(request: Request) -> Session:
    session = store_of(request).get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired()
    return session


def render(
    request: Request,
    name: str,
    session: Session | None,
    tenant: str | None = None,
    *,
    status: int = 200,
    **context: Any,
) -> Response:
    """A page; the layout gets the session, the tenant and whether actions are allowed."""
    can_change = False
    if session is not None and tenant is not None:
        try:
            can_change = session.can_change(tenant)
        except EventBusError:
            can_change = False
    base = {
        "session": session,
        "tenant": tenant,
        "can_change": can_change,
        "csrf": session.csrf if session else "",
        "flashes": session.pop_flashes() if session and status < 300 else [],
        "refresh_s": settings_of(request).refresh_s,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


@contextmanager
def as_page(tenant: str) -> Iterator[None]:
    """Library errors inside become a PageError with a message for the operator."""
    try:
        yield
    except PageError:
        raise
    except BusRefused as exc:
        if is_noperm(exc) and "to run the" in str(exc):  # a command, not the tenant's keys
            command = re.search(r"to run the '([^']+)' command", str(exc))
            name = command.group(1) if command else "a command"
            raise PageError(
                403, f"Redis refused: this user may not run {name!r}, which this page needs"
            ) from None
        if is_noperm(exc):
            raise PageError(
                403, f"no access to tenant {tenant!r}: Redis refused it for this user"
            ) from None
        raise PageError(503, f"Redis refused: {exc}") from None
    except BusConnectionError:
        raise PageError(503, "cannot reach Redis; try again in a moment") from None
    except NotFound as exc:
        raise PageError(404, str(exc)) from None
    except ValueError as exc:  # InvalidName, a bad id or filter
        raise PageError(400, str(exc)) from None
    except EventBusError as exc:
        raise PageError(502, f"Redis answered with an error: {exc}") from None
    except redis.exceptions.NoPermissionError:
        raise PageError(403, f"no access to tenant {tenant!r}: Redis refused it") from None
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException):
        # RedisClusterException: a cluster client found no node to read the slot map from
        # (making a tenant's handles during a failover)
        raise PageError(503, "cannot reach Redis; try again in a moment") from None
    except redis.RedisError as exc:
        raise PageError(502, f"Redis answered with an error: {exc}") from None


def guarded(tenant: str, fn: Callable[[], T]) -> T:
    with as_page(tenant):
        return fn()
