"""The console's ASGI app: routes, security headers, request logs with server timing, and
error pages (a clear message, never a stack trace)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from workers.console import actions, pages
from workers.console.base import HERE, LoginRequired, PageError, render, store_of
from workers.console.sessions import SessionStore
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


async def _headers_and_log(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    took_ms = (time.perf_counter() - started) * 1000
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.url.scheme == "https":
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    response.headers["Server-Timing"] = f"app;dur={took_ms:.1f}"
    # The path only: no query string (filters may hold anything), never a cookie.
    log.info("http_request", method=request.method, path=request.url.path,
             status=response.status_code, ms=round(took_ms, 1))  # fmt: skip
    return response


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _session_or_none(request: Request) -> object:
    from workers.console.base import SESSION_COOKIE

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
        session,  # type: ignore[arg-type]
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
        Route(t + "/jobs/{job_id}", pages.job_page),
        Route(t + "/jobs/{job_id}/step", actions.job_step, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_headers_and_log)],
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
