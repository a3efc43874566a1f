"""The console's pages (GET only: reading never changes anything): overview, a stream's
dead letters, one dead letter, a bulk run's progress, the audit stream."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eventbus.dlqview import DlqFilter, check_id, newest_first
from eventbus.errors import StreamNotFound
from eventbus.keys import validate_stream, validate_tenant_id
from eventbus.records import REASONS
from eventbus.schemas import EventType
from eventbus.stats import tenant_stats
from workers.console.base import PageError, as_page, render, session_of
from workers.console.sessions import Session


def home(request: Request) -> Response:
    session = session_of(request)
    return RedirectResponse(f"/t/{session.tenant}/", status_code=303)


def tenant_param(request: Request) -> str:
    tenant = str(request.path_params["tenant"])
    try:
        return validate_tenant_id(tenant)
    except ValueError as exc:
        raise PageError(400, str(exc)) from None


def stream_param(request: Request, session: Session, tenant: str) -> str:
    """The stream of the URL if it is one of the tenant's (registered, or it has a DLQ)."""
    stream = str(request.path_params["stream"])
    with as_page(tenant):
        validate_stream(stream)
        if not session.of(tenant).bus.stream_known(stream):
            raise StreamNotFound(f"tenant {tenant!r} has no stream {stream!r}")
    return stream


def overview_data(session: Session, tenant: str) -> dict[str, Any]:
    """``tenant_stats`` plus, per group, the age of its oldest pending entry."""
    with as_page(tenant):
        handles = session.of(tenant)
        bus = handles.bus
        doc = tenant_stats(bus, handles.dlq, bus.streams())
        now_ms = int(time.time() * 1000)
        for stream in doc["streams"]:
            for group in stream["groups"]:
                oldest = bus.get_pending(stream["stream"], group["group"], count=1)
                group["oldest_pending_age_ms"] = (
                    max(0, now_ms - int(oldest[0].message_id.split("-", 1)[0])) if oldest else None
                )
    return doc


def overview(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    doc = overview_data(session, tenant)
    return render(request, "overview.html", session, tenant, doc=doc)


def overview_part(request: Request) -> Response:
    """The overview's table alone, for its auto-refresh."""
    session = session_of(request)
    tenant = tenant_param(request)
    doc = overview_data(session, tenant)
    return render(request, "_streams.html", session, tenant, doc=doc)


def dlq_page(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    stream = stream_param(request, session, tenant)
    params = {k: v for k, v in request.query_params.items() if k != "before"}
    with as_page(tenant):
        dlq = session.of(tenant).dlq
    error = None
    page = None
    flt = DlqFilter()
    try:
        flt = DlqFilter.parse(params)
        before = request.query_params.get("before") or None
        if before:
            check_id(before)
    except ValueError as exc:
        error = str(exc)
    started = time.perf_counter()
    with as_page(tenant):
        total = dlq.count(stream)
        if error is None:
            page = newest_first(dlq, stream, flt, before=before)
    return render(
        request,
        "dlq.html",
        session,
        tenant,
        status=400 if error else 200,
        stream=stream,
        total=total,
        page=page,
        flt=flt,
        form=params,
        filter_params=flt.params(),
        error=error,
        before=request.query_params.get("before", ""),
        reasons=REASONS,
        event_types=[t.value for t in EventType],
        took_ms=(time.perf_counter() - started) * 1000,
    )


def letter_page(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    stream = stream_param(request, session, tenant)
    with as_page(tenant):
        dlq_id = check_id(str(request.path_params["dlq_id"]))
        letter = session.of(tenant).dlq.get(stream, dlq_id)
    return render(request, "letter.html", session, tenant, stream=stream, letter=letter)


def job_page(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    job_id = str(request.path_params["job_id"])
    run = session.jobs.get(f"{tenant}/{job_id}")
    if run is None:
        raise PageError(404, f"no bulk action {job_id!r} in this session")
    return render(request, "job.html", session, tenant, job_id=job_id, run=run)


def audit_page(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    before = request.query_params.get("before") or None
    with as_page(tenant):
        if before:
            check_id(before)
        entries = session.of(tenant).audit.recent(count=50, before=before)
    older = entries[-1].audit_id if len(entries) == 50 else None
    return render(request, "audit.html", session, tenant, entries=entries, older=older)
