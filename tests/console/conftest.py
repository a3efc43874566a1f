"""The console as operators meet it: a private redis-server with ACL users of two tenants,
``eventbus web`` as a real process, and the system's headless Chromium (Selenium)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from eventbus.acl import tenant_users
from tests.conftest import wait_for
from workers.tools.localcluster import LocalCluster
from workers.tools.localredis import LocalRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORDS = {"worker": "w-s3cret-pw", "publisher": "p-s3cret-pw", "viewer": "v-s3cret-pw"}
WAIT_S = 15.0


def user(tenant: str, role: str) -> tuple[str, str]:
    return f"eventbus-{tenant}-{role}", f"{PASSWORDS[role]}-{tenant}"


@pytest.fixture(scope="package")
def acl_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        admin = server.client()
        for tenant in ("acme", "globex"):
            users = tenant_users(
                tenant,
                worker_password=user(tenant, "worker")[1],
                publisher_password=user(tenant, "publisher")[1],
                viewer_password=user(tenant, "viewer")[1],
            )
            for u in users:
                admin.execute_command("ACL", "SETUSER", *u.setuser_args())
        admin.close()
        yield server


@pytest.fixture
def admin(acl_redis: LocalRedis) -> Iterator[redis.Redis]:
    client = acl_redis.client()
    for key in client.scan_iter("t:*"):
        client.delete(key)
    yield client
    client.close()


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_console(
    server: LocalRedis | LocalCluster, tmp: Path, *extra: str, tls: bool = False
) -> Console:
    port = free_port()
    log_path = tmp / f"console-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "web", "--redis-url", server.url,
             "--port", str(port), "--refresh-s", "1", "--log-level", "info", *extra],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    console = Console(f"{'https' if tls else 'http'}://127.0.0.1:{port}", proc, log_path)
    # Only to see that it is up: the TLS test checks the certificate itself.
    context = ssl._create_unverified_context() if tls else None

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"eventbus web exited: {console.log_text()}")
        try:
            with urllib.request.urlopen(
                console.url + "/login", timeout=2, context=context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(up, timeout_s=WAIT_S, interval_s=0.05)
    return console


def stop_console(console: Console) -> None:
    console.proc.terminate()
    try:
        console.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        console.proc.kill()
        console.proc.wait()


@pytest.fixture(scope="package")
def console_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="eventbus-console-") as name:
        yield Path(name)


@pytest.fixture(scope="package")
def console(acl_redis: LocalRedis, console_tmp: Path) -> Iterator[Console]:
    started = start_console(acl_redis, console_tmp)
    yield started
    stop_console(started)


def _check_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install the Debian packages chromium and "
            "chromium-driver (scripts/test does: apt-get install chromium chromium-driver)",
            pytrace=False,
        )


@pytest.fixture(scope="package")
def driver(console_tmp: Path) -> Iterator[WebDriver]:
    _check_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-", dir=console_tmp)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--window-size=1280,900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The browser on one console, with the few moves the tests make."""

    def __init__(self, driver: WebDriver, console: Console) -> None:
        self.d = driver
        self.console = console

    def go(self, path: str) -> None:
        self.d.get(self.console.url + path)

    def text(self) -> str:
        """The page's main text; read again if a navigation or the overview's refresh
        replaced the element between finding it and reading it."""
        found = self.until(lambda d: [d.find_element(By.TAG_NAME, "main").text], "the page")
        return str(found[0])

    def until(self, condition: Callable[[WebDriver], Any], what: str) -> Any:
        """Wait for ``condition``; an element gone stale or not there yet (the page is
        changing under us) is a "not yet", not a failure."""
        wait = WebDriverWait(
            self.d, WAIT_S, poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
        )  # fmt: skip
        return wait.until(condition, what)

    def login(self, tenant: str, role: str, *, as_tenant: str | None = None) -> None:
        self.d.delete_all_cookies()
        self.go("/login")
        name, password = user(tenant, role)
        self.d.find_element(By.NAME, "username").send_keys(name)
        self.d.find_element(By.NAME, "password").send_keys(password)
        box = self.d.find_element(By.NAME, "tenant")
        box.clear()
        box.send_keys(as_tenant or tenant)
        self.d.find_element(By.CSS_SELECTOR, "form.login button").click()
        self.until(lambda d: "/login" not in d.current_url or d.find_elements(
            By.CSS_SELECTOR, ".error"), "the login form answered")  # fmt: skip

    def click(self, css: str) -> None:
        """Click, again if the overview's refresh replaced the element meanwhile."""

        def clicked(d: WebDriver) -> bool:
            try:
                d.find_element(By.CSS_SELECTOR, css).click()
            except StaleElementReferenceException:
                return False
            return True

        self.until(clicked, f"a click on {css}")

    def text_of(self, css: str) -> str:
        try:
            return str(self.d.find_element(By.CSS_SELECTOR, css).text)
        except StaleElementReferenceException:
            return ""

    def count(self, css: str) -> int:
        return len(self.d.find_elements(By.CSS_SELECTOR, css))

    def cookie(self, name: str) -> str:
        found = self.d.get_cookie(name)
        assert found is not None, f"no cookie {name}"
        return str(found["value"])


@pytest.fixture
def page(driver: WebDriver, console: Console, admin: redis.Redis) -> Page:
    return Page(driver, console)
