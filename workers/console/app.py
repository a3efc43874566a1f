"""The console's ASGI app: routes, security headers, request logs with server timing, and
error pages (a clear message, never a stack trace)."""

from __future__ import annotations

import time

import structlog
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.console import actions, pages, requests
from workers.console.base import (
    HERE,
    SESSION_COOKIE,
    LoginRequired,
    PageError,
    render,
    store_of,
)
from workers.console.sessions import Session, SessionStore
from workers.console.settings import ConsoleSettings

log = structlog.get_logger("eventbus.console")

# Scripts and styles from our own /static only; no framing; no referrer leaks.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class HeadersAndLog:
    """Pure ASGI middleware: security headers, a Server-Timing header with the time the
    app took, and one ``http_request`` log line (path only: no query, never a cookie)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if scope.get("scheme") == "https":
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                took_ms = (time.perf_counter() - started) * 1000
                headers["Server-Timing"] = f"app;dur={took_ms:.1f}"
            await send(message)

        await self.app(scope, receive, send_with_headers)
        log.info("http_request", method=scope["method"], path=scope["path"], status=status,
                 ms=round((time.perf_counter() - started) * 1000, 1))  # fmt: skip


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _session_or_none(request: Request) -> Session | None:
    return store_of(request).get(request.cookies.get(SESSION_COOKIE))


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    if _wants_json(request):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    session = _session_or_none(request)
    tenant = request.path_params.get("tenant") if exc.status != 403 else None
    return render(
        request,
        "error.html",
        session,
        tenant if isinstance(tenant, str) and exc.status == 404 else None,
        status=exc.status,
        message=exc.message,
        tenant_name=request.path_params.get("tenant"),
    )


async def _login_required(request: Request, exc: Exception) -> Response:
    if _wants_json(request) or request.method != "GET":
        return JSONResponse({"error": "log in first"}, status_code=401)
    return RedirectResponse("/login", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such page", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return await _page_error(request, PageError(exc.status_code, message))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("console_internal_error", path=request.url.path, exc_info=exc)
    return await _page_error(request, PageError(500, "internal error (it is in the log)"))


def create_app(settings: ConsoleSettings) -> Starlette:
    t = "/t/{tenant}"
    routes = [
        Route("/", pages.home),
        Route("/login", actions.login_get, methods=["GET"]),
        Route("/login", actions.login_post, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route(t + "/", pages.overview),
        Route(t + "/overview.part", pages.overview_part),
        Route(t + "/audit", pages.audit_page),
        Route(t + "/s/{stream}/dlq", pages.dlq_page),
        Route(t + "/s/{stream}/dlq/action", actions.dlq_action, methods=["POST"]),
        Route(t + "/s/{stream}/dlq/{dlq_id}", pages.letter_page),
        Route(t + "/requests", requests.requests_page),
        Route(t + "/requests/{cid}", requests.trace_page),
        Route(t + "/requests/{cid}/action", requests.request_action, methods=["POST"]),
        Route(t + "/jobs/{job_id}", pages.job_page),
        Route(t + "/jobs/{job_id}/step", actions.job_step, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(HeadersAndLog)],
        exception_handlers={
            PageError: _page_error,
            LoginRequired: _login_required,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.settings = settings
    app.state.sessions = SessionStore(settings)
    return app
