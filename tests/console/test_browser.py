"""The web console end to end: ``eventbus web`` as a process, real Redis with ACL users,
headless Chromium. Also takes the README's screenshots (docs/screenshots/)."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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
from tests.conftest import wait_for
from tests.console.conftest import (
    ROOT,
    Console,
    LocalRedis,
    Page,
    start_console,
    stop_console,
    user,
)

SHOTS = ROOT / "docs" / "screenshots"


class AgentCrashed(RuntimeError):
    pass


def event(tenant: str = "acme", **data: object) -> AgentEvent:
    return AgentEvent(
        event_type=EventType.TASK_ASSIGNED,
        tenant_id=tenant,
        source_agent_id="planner",
        call_chain=["user", "planner"],
        data=data,
    )


def worker_client(server: LocalRedis, tenant: str = "acme") -> redis.Redis:
    name, password = user(tenant, "worker")
    return server.client(username=name, password=password)


def dead_letter_one(server: LocalRedis, tenant: str = "acme") -> EventConsumer:
    """Publish an event whose handler raises: with no retries it is dead-lettered at once."""
    client = worker_client(server, tenant)
    bus, dlq = TenantEventBus(client, tenant), DeadLetterQueue(client, tenant)
    consumer = EventConsumer(
        bus, "tasks", "writers", "writer-1", dlq, policy=RetryPolicy(max_retries=0)
    )
    bus.publish("tasks", event(tenant, topic="release notes", secret_of=tenant))

    def handler(e: AgentEvent) -> None:
        raise AgentCrashed(f"model refused the prompt for {e.data['topic']!r}")

    wait_for(lambda: consumer.process_batch(handler, block_ms=20) >= 0 and dlq.count("tasks"))
    return consumer


def raw_post(console: Console, path: str, fields: dict[str, str], cookie: str) -> int:
    request = urllib.request.Request(
        console.url + path,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Cookie": f"eb_session={cookie}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_failed_event_is_seen_opened_replayed_and_handled(
    page: Page, acl_redis: LocalRedis, admin: redis.Redis
) -> None:
    consumer = dead_letter_one(acl_redis)
    billing = TenantEventBus(admin, "acme")
    billing.publish_many("billing", [event(i=i) for i in range(12)])
    billing.ensure_group("billing", "invoicer")  # 5 in hand, 7 to go: lag and pending show
    admin.xreadgroup("invoicer", "invoicer-1", {"t:{acme}:events:billing": ">"}, count=5)
    page.login("acme", "worker")
    page.until(lambda d: "Streams of acme" in page.text(), "the overview")
    assert page.text_of('a.dlq-link[href$="/s/tasks/dlq"]') == "1"
    assert "writers" in page.text() and "writer-1" in page.text()
    save_shot(page, "overview.png")

    page.click('a.dlq-link[href$="/s/tasks/dlq"]')
    page.until(lambda d: page.count("a.letter-link") == 1, "the DLQ page lists the letter")
    assert "AgentCrashed" in page.text() and "handler_failed" in page.text()
    page.click("a.letter-link")
    page.until(lambda d: page.count("#letter-error"), "the letter's page")
    text = page.text()
    assert "model refused the prompt for 'release notes'" in text
    assert "Traceback" in text and "writers" in text and "writer-1" in text
    assert "release notes" in page.d.find_element(By.CSS_SELECTOR, ".kv-table").text
    save_shot(page, "dead-letter.png")

    page.click("#replay-one")
    page.until(lambda d: page.count("#confirm"), "the confirmation page")
    assert "Replay 1 dead letter(s) of stream 'tasks'" in page.text()
    page.click("#confirm")
    page.until(lambda d: "Replayed 1 dead letter(s)" in page.text(), "what it did")

    handled: list[str] = []
    wait_for(lambda: consumer.process_batch(handled.append, block_ms=20) >= 0 and handled)
    page.go("/t/acme/s/tasks/dlq")
    assert page.count("#dlq-empty") == 1 and "No dead letters." in page.text()
    page.go("/t/acme/audit")
    row = page.d.find_element(By.CSS_SELECTOR, "table.audit tbody tr").text
    assert "eventbus-acme-worker" in row and "replay" in row and "tasks" in row


def save_shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path: Path = SHOTS / name
    assert page.d.save_screenshot(str(path)), f"no screenshot {path}"


def test_the_overview_refreshes_by_itself(page: Page, admin: redis.Redis) -> None:
    bus = TenantEventBus(admin, "acme")
    bus.publish("tasks", event())
    page.login("acme", "viewer")
    page.until(lambda d: "Streams of acme" in page.text(), "the overview")
    bus.publish_many("tasks", [event(i=i) for i in range(4)])
    page.until(
        lambda d: page.text_of(".figures dd") == "5",
        "the length to update without a reload",
    )


def test_a_read_only_user_finds_no_way_to_change_anything(
    page: Page, acl_redis: LocalRedis, console: Console
) -> None:
    dead_letter_one(acl_redis)
    dlq_id = DeadLetterQueue(worker_client(acl_redis), "acme").list_dlq_messages("tasks")[0]
    page.login("acme", "viewer")
    page.until(lambda d: page.count("#read-only-badge"), "the read-only badge")
    page.go("/t/acme/s/tasks/dlq")
    assert page.count("a.letter-link") == 1
    assert page.count("button[name=op]") == 0 and page.count("input[name=id]") == 0
    page.go(f"/t/acme/s/tasks/dlq/{dlq_id.dlq_id}")
    assert "AgentCrashed" in page.text()
    assert page.count("#replay-one") == 0 and page.count("main form") == 0
    # The server refuses anyway, even with a valid token.
    csrf = page.d.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
    fields = {"csrf": str(csrf), "op": "purge:selected", "id": dlq_id.dlq_id, "confirmed": "yes"}
    status = raw_post(console, "/t/acme/s/tasks/dlq/action", fields, page.cookie("eb_session"))
    assert status == 403
    assert DeadLetterQueue(worker_client(acl_redis), "acme").count("tasks") == 1


def test_the_read_only_flag_hides_actions_from_a_worker_too(
    page: Page, acl_redis: LocalRedis, console_tmp: Path
) -> None:
    dead_letter_one(acl_redis)
    read_only = start_console(acl_redis, console_tmp, "--read-only")
    try:
        other = Page(page.d, read_only)
        other.login("acme", "worker")
        other.go("/t/acme/s/tasks/dlq")
        other.until(lambda d: other.count("a.letter-link") == 1, "the DLQ page")
        assert other.count("#read-only-badge") == 1 and other.count("button[name=op]") == 0
    finally:
        stop_console(read_only)


def test_a_user_of_tenant_a_finds_no_way_to_see_tenant_b(page: Page, acl_redis: LocalRedis) -> None:
    dead_letter_one(acl_redis, "globex")
    secret_id = DeadLetterQueue(worker_client(acl_redis, "globex"), "globex").list_dlq_messages(
        "tasks"
    )[0]
    page.login("acme", "worker", as_tenant="globex")
    assert "no access to tenant 'globex'" in page.text() and "/login" in page.d.current_url
    page.login("acme", "worker")
    for path in ("/t/globex/", "/t/globex/s/tasks/dlq", f"/t/globex/s/tasks/dlq/{secret_id.dlq_id}",
                 "/t/globex/audit", "/t/globex/overview.part"):  # fmt: skip
        page.go(path)
        text = page.d.find_element(By.TAG_NAME, "body").text
        assert "no access to tenant 'globex'" in text, path
        assert "secret_of" not in page.d.page_source and "AgentCrashed" not in text, path


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    page: Page, acl_redis: LocalRedis, console: Console
) -> None:
    dead_letter_one(acl_redis)
    dlq = DeadLetterQueue(worker_client(acl_redis), "acme")
    letter = dlq.list_dlq_messages("tasks")[0]
    page.login("acme", "worker")
    cookie = page.cookie("eb_session")
    fields = {"op": "replay:selected", "id": letter.dlq_id, "confirmed": "yes"}
    assert raw_post(console, "/t/acme/s/tasks/dlq/action", fields, cookie) == 403
    wrong = {**fields, "csrf": "not-the-token"}
    assert raw_post(console, "/t/acme/s/tasks/dlq/action", wrong, cookie) == 403
    assert raw_post(console, "/logout", {}, cookie) == 403
    assert dlq.count("tasks") == 1
    page.go("/t/acme/")  # the session still works: the refused POSTs did nothing
    assert "Streams of acme" in page.text()


def test_bad_input_gets_a_clear_message_never_a_traceback(
    page: Page, acl_redis: LocalRedis
) -> None:
    dead_letter_one(acl_redis)
    page.login("acme", "worker")
    cases = {
        "/t/acme/s/tasks/dlq/not-an-id": "invalid dead-letter id 'not-an-id'",
        "/t/acme/s/tasks/dlq/1-0": "no dead letter '1-0'",
        "/t/acme/s/nosuch/dlq": "tenant 'acme' has no stream 'nosuch'",
        "/t/acme/s/bad:name/dlq": "invalid stream name",
        "/t/acme/s/tasks/dlq?since=last+tuesday": "invalid 'since' time 'last tuesday'",
        "/t/acme/s/tasks/dlq?reason=bored": "unknown reason 'bored'",
        "/t/acme/s/tasks/dlq?before=xyz": "invalid dead-letter id 'xyz'",
        "/t/ac%20me/": "invalid tenant id",
        "/nowhere": "no such page",
    }
    for path, message in cases.items():
        page.go(path)
        body = page.d.find_element(By.TAG_NAME, "body").text
        assert message in body, (path, body)
        assert "Traceback" not in page.d.page_source, path
    # Whatever a handler's error says is shown as text, never run as markup.
    hostile = '<img id="pwned" src="x" onerror="document.title=1">'
    dlq = DeadLetterQueue(worker_client(acl_redis), "acme")
    dlq_id = dlq.send_to_dlq("tasks", "1-1", event(), hostile, 0, reason="handler_failed")
    page.go(f"/t/acme/s/tasks/dlq/{dlq_id}")
    assert hostile in page.text() and page.count("#pwned") == 0


def test_replay_all_matching_runs_in_batches_with_progress(
    page: Page, acl_redis: LocalRedis, admin: redis.Redis
) -> None:
    dlq = DeadLetterQueue(admin, "acme")
    TenantEventBus(admin, "acme").ensure_group("tasks", "writers")
    for i in range(230):
        reason = "max_deliveries" if i % 2 else "handler_failed"
        dlq.send_to_dlq("tasks", f"1-{i}", event(i=i), "boom", 3, reason=reason, group="writers")
    page.login("acme", "worker")
    page.go("/t/acme/s/tasks/dlq?reason=handler_failed")
    page.until(lambda d: page.count("a.letter-link") == 50, "a full first page")
    page.click('button[value="replay:matching"]')
    page.until(lambda d: page.count("#confirm"), "the confirmation")
    assert "every dead letter matching the filter" in page.text()
    page.click("#confirm")
    page.until(lambda d: page.count("#run"), "the run's page")
    page.click("#run")
    page.until(lambda d: "Done: 115 replayed" in page.text(), "the run to finish")
    assert dlq.count("tasks") == 115
    assert all(x.reason == "max_deliveries" for x in dlq.list_dlq_messages("tasks", count=200))
    page.go("/t/acme/audit")
    assert "replay_matching" in page.text()


def test_cookies_are_httponly_samesite_strict_and_logs_hold_no_secret(
    page: Page, console: Console
) -> None:
    page.login("acme", "worker")
    cookie = page.d.get_cookie("eb_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain HTTP here; Secure is set over TLS
    assert "eb_session" not in page.d.execute_script("return document.cookie")
    assert "password" not in page.d.current_url
    log = console.log_text()
    assert "console_login" in log
    for secret in (user("acme", "worker")[1], user("acme", "viewer")[1], cookie["value"]):
        assert secret not in log
    assert not re.search(r"Traceback", log)
    # Logging out ends the session on the server: the old cookie opens nothing.
    page.click("header form button")
    page.until(lambda d: "/login" in d.current_url, "the login page")
    request = urllib.request.Request(
        console.url + "/t/acme/", headers={"Cookie": f"eb_session={cookie['value']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.url.endswith("/login")
