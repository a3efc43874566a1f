"""Everything that changes state: log in / out, replay and purge (one, the selected, or
all that match a filter in batches). POST only, each with the session's CSRF token; the
first POST of an action shows what it would do, the confirmed one does it and records it
in the tenant's audit stream."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from eventbus.dlqview import (
    ACTIONS,
    BulkRun,
    DlqFilter,
    check_id,
    purge_ids,
    replay_ids,
    run_step,
    start_run,
)
from workers.console.base import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    PageError,
    as_page,
    render,
    session_of,
    settings_of,
    store_of,
)
from workers.console.pages import stream_param, tenant_param
from workers.console.sessions import LoginFailed, Session, check_login

log = structlog.get_logger("eventbus.console")
SELECTED_MAX = 500  # ids in one "replay / purge the selected"
FILTER_FIELDS = ("reason", "event_type", "group", "q", "since", "until")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _check_csrf(session: Session, form: FormData, request: Request) -> None:
    sent = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
        log.warning("console_csrf_refused", user=session.username, path=request.url.path)
        raise PageError(403, "refused: the form's security token is missing or stale")


async def checked_post(request: Request) -> tuple[Session, FormData]:
    """A POST's session and form, its CSRF token checked (403 otherwise)."""
    form = await request.form()
    session = session_of(request)
    _check_csrf(session, form, request)
    return session, form


async def tenant_post(
    request: Request, action: Callable[[Request, Session, str, FormData], Response]
) -> Response:
    """A tenant page's POST, checked, then ``action`` in a worker thread (it talks to
    Redis, which blocks)."""
    session, form = await checked_post(request)
    return await run_in_threadpool(action, request, session, tenant_param(request), form)


# -- login -------------------------------------------------------------------------------


def login_form(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        None,
        status=status,
        login_csrf=token,
        error=error,
        default_tenant=settings_of(request).default_tenant,
        username=request.query_params.get("username", ""),
    )
    _cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


async def login_get(request: Request) -> Response:
    return login_form(request)


async def login_post(request: Request) -> Response:
    form = await request.form()
    sent = str(form.get("csrf") or "")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not secrets.compare_digest(sent.encode(), cookie.encode()):
        return login_form(request, error="the login form expired: try again", status=403)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    tenant = str(form.get("tenant") or "").strip()
    settings = settings_of(request)
    try:
        client = await run_in_threadpool(
            partial(check_login, cluster=settings.redis_cluster),
            settings.redis_url,
            username,
            password,
            tenant,
        )
    except LoginFailed as exc:
        log.info("console_login_failed", user=username, tenant=tenant, reason=str(exc))
        return login_form(request, error=str(exc), status=401)
    session = store_of(request).create(username, tenant, client)
    log.info("console_login", user=username, tenant=tenant)
    response = RedirectResponse(f"/t/{tenant}/", status_code=303)
    _cookie(request, response, SESSION_COOKIE, session.sid, max_age=settings.session_max_s)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    session, _ = await checked_post(request)
    store_of(request).drop(session.sid)
    log.info("console_logout", user=session.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- replay / purge ----------------------------------------------------------------------


def _writable(session: Session, tenant: str) -> None:
    with as_page(tenant):
        if not session.can_change(tenant):
            raise PageError(403, "read-only: this session cannot replay or purge anything")


def _describe(action: str, scope: str, stream: str, ids: list[str], flt: DlqFilter) -> str:
    verb = "Replay" if action == "replay" else "Purge (delete for good)"
    if scope == "matching":
        what = "every dead letter" if flt.empty else "every dead letter matching the filter"
        return f"{verb} {what} of stream {stream!r}, in batches"
    return f"{verb} {len(ids)} dead letter(s) of stream {stream!r}"


async def dlq_action(request: Request) -> Response:
    return await tenant_post(request, _dlq_action)


def _dlq_action(request: Request, session: Session, tenant: str, form: FormData) -> Response:
    stream = stream_param(request, session, tenant)
    _writable(session, tenant)
    op = str(form.get("op") or "")  # the list page's buttons: "replay:selected"...
    action, _, scope = op.partition(":")
    if not op:
        action, scope = str(form.get("action") or ""), str(form.get("scope") or "")
    if action not in ACTIONS or scope not in ("one", "selected", "matching"):
        raise PageError(400, "unknown action: choose replay or purge of one, the selected or all")
    filter_form = {k: str(form.get(k) or "") for k in FILTER_FIELDS}
    try:
        flt = DlqFilter.parse(filter_form)
        ids = [check_id(str(i)) for i in form.getlist("id")]
    except ValueError as exc:
        raise PageError(400, str(exc)) from None
    if scope != "matching" and not ids:
        raise PageError(400, "nothing selected: tick the dead letters to act on")
    if len(ids) > SELECTED_MAX or (scope == "one" and len(ids) != 1):
        raise PageError(400, f"select 1 to {SELECTED_MAX} dead letters")
    if form.get("confirmed") != "yes":
        return render(
            request,
            "confirm.html",
            session,
            tenant,
            stream=stream,
            action=action,
            scope=scope,
            ids=ids,
            filter_form={k: v for k, v in filter_form.items() if v},
            description=_describe(action, scope, stream, ids, flt),
        )
    with as_page(tenant):
        if scope == "matching":
            return _start_bulk(session, tenant, stream, action, flt)
        return _act_now(session, tenant, stream, action, ids, flt)


def _act_now(
    session: Session, tenant: str, stream: str, action: str, ids: list[str], flt: DlqFilter
) -> Response:
    dlq = session.of(tenant).dlq
    if action == "replay":
        pairs = replay_ids(dlq, stream, ids)
        done = [dlq_id for dlq_id, _ in pairs]
        acted, detail = len(pairs), " ".join(f"{a}>{b}" for a, b in pairs)
        message = f"Replayed {acted} dead letter(s) of {stream!r}" + (
            ": " + ", ".join(f"{a} → {b}" for a, b in pairs[:10]) if pairs else ""
        )
    else:
        acted = purge_ids(dlq, stream, ids)
        done, detail = ids, ""
        message = f"Purged {acted} dead letter(s) of {stream!r}"
    if len(ids) > acted:
        message += f"; {len(ids) - acted} were already gone (replayed or purged meanwhile)"
    session.of(tenant).audit.record(
        actor=session.username, action=action, stream=stream, ids=done, count=acted, detail=detail
    )
    log.info("console_action", user=session.username, tenant=tenant, action=action,
             stream=stream, ids=done)  # fmt: skip
    session.flashes.append(message)
    query = urlencode(flt.params())
    return RedirectResponse(
        f"/t/{tenant}/s/{stream}/dlq" + ("?" + query if query else ""), status_code=303
    )


def _start_bulk(
    session: Session, tenant: str, stream: str, action: str, flt: DlqFilter
) -> Response:
    run = start_run(session.of(tenant).dlq, stream, action, flt)
    job_id = secrets.token_urlsafe(8)
    with session.lock:
        session.jobs[f"{tenant}/{job_id}"] = run
    log.info("console_bulk_started", user=session.username, tenant=tenant, action=action,
             stream=stream, job=job_id, filter=flt.params())  # fmt: skip
    return RedirectResponse(f"/t/{tenant}/jobs/{job_id}", status_code=303)


async def job_step(request: Request) -> Response:
    """One batch of a bulk run; JSON for the page's script, else back to the page."""
    session, form = await checked_post(request)
    tenant = tenant_param(request)
    job_id = str(request.path_params["job_id"])
    run = session.jobs.get(f"{tenant}/{job_id}")
    if run is None:
        raise PageError(404, f"no bulk action {job_id!r} in this session")
    state = await run_in_threadpool(_step, session, tenant, job_id, run)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(state)
    return RedirectResponse(f"/t/{tenant}/jobs/{job_id}", status_code=303)


def _step(session: Session, tenant: str, job_id: str, run: BulkRun) -> dict[str, Any]:
    _writable(session, tenant)
    with session.lock, as_page(tenant):  # one batch at a time per run
        if not run.finished:
            handles = session.of(tenant)
            ids = run_step(handles.dlq, run)
            if ids:
                handles.audit.record(
                    actor=session.username,
                    action=f"{run.action}_matching",
                    stream=run.stream,
                    ids=ids,
                    count=len(ids),
                    detail=f"job {job_id}; filter {run.flt.params()}",
                )
                log.info("console_bulk_batch", user=session.username, tenant=tenant,
                         job=job_id, action=run.action, count=len(ids))  # fmt: skip
    return job_state(run)


def job_state(run: BulkRun) -> dict[str, Any]:
    return {
        "action": run.action,
        "stream": run.stream,
        "done": run.done,
        "gone": run.gone,
        "scanned": run.scanned,
        "cursor": run.cursor,
        "finished": run.finished,
        "progress": round(run.progress, 4),
    }
