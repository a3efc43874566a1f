"""A request's page: the causal tree of one correlation id (events, agents, hops, what
became of each event, refusals by the agent guards), its halted mark and budget, and the
operator's halt / resume (POST with the CSRF token, audited like replay and purge)."""

from __future__ import annotations

import structlog
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from eventbus.keys import validate_correlation_id
from eventbus.records import GUARD_REASONS
from eventbus.requests import Budget
from eventbus.trace import TraceNode, read_trace_plain, walk
from workers.console.actions import tenant_post
from workers.console.base import PageError, as_page, render, session_of
from workers.console.pages import tenant_param
from workers.console.sessions import Session

log = structlog.get_logger("eventbus.console")

#: Rows shown on the page; a larger tree says so (``eventbus trace --json`` has it all).
ROWS_MAX = 2000
OPS = ("halt", "resume")


def _cid(raw: object, tenant: str) -> str:
    with as_page(tenant):
        return validate_correlation_id(str(raw))


def requests_page(request: Request) -> Response:
    """Look a request up by its correlation id; lists the halted ones."""
    session = session_of(request)
    tenant = tenant_param(request)
    wanted = request.query_params.get("cid", "").strip()
    if wanted:
        cid = _cid(wanted, tenant)
        return RedirectResponse(f"/t/{tenant}/requests/{cid}", status_code=303)
    with as_page(tenant):
        halted = session.of(tenant).bus.requests.halted()
    return render(request, "requests.html", session, tenant, halted=halted)


def trace_page(request: Request) -> Response:
    session = session_of(request)
    tenant = tenant_param(request)
    cid = _cid(request.path_params["cid"], tenant)
    with as_page(tenant):
        bus = session.of(tenant).bus
        # Plain XRANGE, no script: the read-only viewer role may run none (eventbus.acl).
        tree = read_trace_plain(bus, cid)
        budget = bus.requests.budget(cid)
    if "application/json" in request.headers.get("accept", ""):
        doc = tree.as_dict()
        doc.update(halted=budget.halted, budget=_budget_doc(budget))
        return JSONResponse(doc)
    rows: list[tuple[int, TraceNode, list[str]]] = []
    for depth, node in walk(tree.roots):
        if len(rows) == ROWS_MAX:
            break
        refused = [r for r in node.dead_letters if r in GUARD_REASONS]
        rows.append((depth, node, refused))
    return render(
        request,
        "trace.html",
        session,
        tenant,
        cid=cid,
        tree=tree,
        doc=tree.as_dict() | {"roots": []},
        rows=rows,
        shown_max=ROWS_MAX,
        budget=budget,
        refusals=sum(len(r) for _, _, r in rows),
    )


def _budget_doc(budget: Budget) -> dict[str, object]:
    fields = ("events", "units", "max_events", "max_units", "spent")
    return {name: getattr(budget, name) for name in fields}


async def request_action(request: Request) -> Response:
    return await tenant_post(request, _request_action)


def _request_action(request: Request, session: Session, tenant: str, form: FormData) -> Response:
    cid = _cid(request.path_params["cid"], tenant)
    op = str(form.get("op") or "")
    if op not in OPS:
        raise PageError(400, f"unknown action {op!r}: choose halt or resume")
    with as_page(tenant):
        if not session.can_change(tenant):
            raise PageError(403, "read-only: this session cannot halt or resume requests")
        handles = session.of(tenant)
        requests = handles.bus.requests
        changed = requests.halt(cid) if op == "halt" else requests.resume(cid)
        handles.audit.record(
            actor=session.username,
            action=op,
            stream="",
            ids=[cid],
            count=int(changed),
            detail=f"request {cid}",
        )
    log.info("console_action", user=session.username, tenant=tenant, action=op,
             correlation_id=cid, changed=changed)  # fmt: skip
    if op == "halt":
        session.flashes.append(
            f"Halted request {cid!r}: its events are no longer handled or published"
            if changed
            else f"Request {cid!r} was already halted"
        )
    else:
        session.flashes.append(
            f"Resumed request {cid!r}; its halted dead letters can be replayed"
            if changed
            else f"Request {cid!r} was not halted"
        )
    return RedirectResponse(f"/t/{tenant}/requests/{cid}", status_code=303)
