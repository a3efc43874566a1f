"""The request page of the web console in headless Chromium: a request's causal tree
(events, agents, hops, outcomes, guard refusals, halted state) and the halt / resume
actions, POST + CSRF for a writer, audited; none for the read-only viewer. Takes the
README's docs/screenshots/trace.png."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import redis
from selenium.webdriver.common.by import By

from eventbus import (
    AgentEvent,
    DeadLetterQueue,
    EventConsumer,
    EventType,
    RetryPolicy,
    TenantEventBus,
)
from eventbus.settings import BusSettings
from tests.conftest import wait_for
from tests.console.conftest import Console, LocalRedis, Page
from tests.console.test_browser import raw_post, save_shot, worker_client

CID = "req-42"


def step(parent: AgentEvent | None, agent: str, kind: EventType, **data: object) -> AgentEvent:
    chain = [*(parent.call_chain if parent else ["user"]), agent]
    return AgentEvent(
        event_type=kind,
        tenant_id="acme",
        source_agent_id=agent,
        call_chain=chain,
        correlation_id=CID,
        parent_event_id=parent.event_id if parent else None,
        data=data,
    )


def run_request(server: LocalRedis) -> dict[str, AgentEvent]:
    """planner -> writer (-> reviewer, queued on "reviews"; -> planner again: a cycle),
    planner -> critic (fails: DLQ). Published with the trace on by a producer without chain
    limits (as a foreign one might be); the "tasks" consumer's guards refuse the cycle."""
    client = worker_client(server)
    producer = TenantEventBus(client, "acme", settings=BusSettings(trace=True, max_visits=0))
    root = step(None, "planner", EventType.TASK_ASSIGNED)
    writer = step(root, "writer", EventType.TASK_COMPLETED)
    critic = step(root, "critic", EventType.TASK_COMPLETED, fail=True)
    looped = step(step(writer, "planner", EventType.HANDOFF_REQUEST), "writer",
                  EventType.HANDOFF_REQUEST)  # fmt: skip
    looped = step(looped, "planner", EventType.HANDOFF_REQUEST)  # planner a third time
    looped = looped.model_copy(update={"parent_event_id": writer.event_id})
    reviewer = step(writer, "reviewer", EventType.HANDOFF_REQUEST)
    producer.publish("tasks", root)
    producer.publish_many("tasks", [writer, critic, looped])
    producer.publish("reviews", reviewer)

    def handler(e: AgentEvent) -> None:
        if e.data.get("fail"):
            raise RuntimeError("the critic's model timed out")

    bus = TenantEventBus(client, "acme", settings=BusSettings(trace=True))
    dlq = DeadLetterQueue(client, "acme")
    tasks = EventConsumer(bus, "tasks", "writers", "writer-1", dlq,
                          policy=RetryPolicy(max_retries=0))  # fmt: skip
    wait_for(lambda: tasks.process_batch(handler, block_ms=20) >= 0 and dlq.count("tasks") == 2)
    tasks.process_batch(handler, block_ms=1)  # the last round's trace notes are written
    return {"root": root, "critic": critic, "looped": looped, "reviewer": reviewer}


def json_get(console: Console, path: str, cookie: str) -> dict[str, Any]:
    request = urllib.request.Request(
        console.url + path,
        headers={"Cookie": f"eb_session={cookie}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
    return doc


def rows(page: Page) -> dict[str, str]:
    """event id -> the row's text."""
    found = page.d.find_elements(By.CSS_SELECTOR, "#trace-tree tr.node")
    return {str(r.get_attribute("data-event-id")): r.text for r in found}


def test_a_request_tree_is_shown_halted_and_resumed_from_the_console(
    page: Page, acl_redis: LocalRedis, admin: redis.Redis
) -> None:
    events = run_request(acl_redis)
    page.login("acme", "worker")
    page.click('header nav a[href="/t/acme/requests"]')
    page.until(lambda d: page.count("#request-lookup"), "the requests page")
    page.d.find_element(By.NAME, "cid").send_keys(CID)
    page.click("#request-lookup button")
    page.until(lambda d: page.count("#trace-tree tr.node") == 5, "the tree of 5 events")
    shown = rows(page)
    assert "in_dlq (handler_failed)" in shown[events["critic"].event_id]
    assert "refused: cycle" in shown[events["looped"].event_id]
    assert "queued" in shown[events["reviewer"].event_id]
    assert "handled" in shown[events["root"].event_id]
    assert page.text_of("#trace-refusals") == "1" and page.count("#halted-badge") == 0

    page.click("#halt")
    page.until(lambda d: f"Halted request '{CID}'" in page.text(), "the halt's message")
    assert page.count("#halted-badge") == 1
    assert TenantEventBus(admin, "acme").requests.halted() == [CID]
    # the queued reviewer event is dead-lettered as halted instead of being handled
    client = worker_client(acl_redis)
    dlq = DeadLetterQueue(client, "acme")
    bus = TenantEventBus(client, "acme", settings=BusSettings(trace=True))
    reviews = EventConsumer(bus, "reviews", "reviewers", "reviewer-1", dlq)
    handled: list[AgentEvent] = []
    wait_for(
        lambda: reviews.process_batch(handled.append, block_ms=20) >= 0 and dlq.count("reviews")
    )
    reviews.process_batch(handled.append, block_ms=1)
    assert handled == []
    page.go(f"/t/acme/requests/{CID}")
    page.until(lambda d: "halted" in rows(page)[events["reviewer"].event_id], "halted in the tree")
    save_shot(page, "trace.png")

    page.click("#resume")
    page.until(lambda d: f"Resumed request '{CID}'" in page.text(), "the resume's message")
    assert page.count("#halted-badge") == 0 and page.count("#halt") == 1
    assert TenantEventBus(admin, "acme").requests.halted() == []
    page.go("/t/acme/audit")
    audit = [r.text for r in page.d.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")]
    assert "resume" in audit[0] and CID in audit[0] and "eventbus-acme-worker" in audit[0]
    assert "halt" in audit[1] and CID in audit[1]


def test_a_viewer_sees_the_tree_but_cannot_halt_and_a_forged_post_is_refused(
    page: Page, acl_redis: LocalRedis, admin: redis.Redis, console: Console
) -> None:
    events = run_request(acl_redis)
    page.login("acme", "viewer")
    page.go(f"/t/acme/requests/{CID}")
    page.until(lambda d: page.count("#trace-tree tr.node") == 5, "the tree, read without scripts")
    assert "refused: cycle" in rows(page)[events["looped"].event_id]
    assert page.count("#halt") == 0 and page.count("main form") == 0
    doc = json_get(console, f"/t/acme/requests/{CID}", page.cookie("eb_session"))
    assert doc["correlation_id"] == CID and doc["events"] == 5 and doc["halted"] is False
    assert doc["agents"] == ["critic", "planner", "reviewer", "writer"]
    assert doc["budget"] == {"events": 0, "units": 0.0, "max_events": 0, "max_units": 0.0,
                             "spent": False}  # fmt: skip
    csrf = page.d.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
    fields = {"csrf": str(csrf), "op": "halt"}
    status = raw_post(console, f"/t/acme/requests/{CID}/action", fields, page.cookie("eb_session"))
    assert status == 403
    assert TenantEventBus(admin, "acme").requests.halted() == []


def test_a_bad_correlation_id_or_action_gets_a_clear_message(
    page: Page, acl_redis: LocalRedis, console: Console
) -> None:
    page.login("acme", "worker")
    page.go("/t/acme/requests/bad%20id")
    assert "invalid correlation id 'bad id'" in page.text()
    page.go("/t/acme/requests/never-traced")
    assert page.count("#trace-empty") == 1
    csrf = page.d.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
    fields = {"csrf": str(csrf), "op": "explode"}
    status = raw_post(console, "/t/acme/requests/r1/action", fields, page.cookie("eb_session"))
    assert status == 400
