"""``eventbus web`` without a browser: flags, the systemd unit, login refusals, TLS
cookies, session expiry."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from eventbus import DeadLetterQueue
from tests.conftest import wait_for
from tests.console.conftest import ROOT, Console, start_console, stop_console, user
from workers.console.settings import parse_settings
from workers.tools.localredis import LocalRedis


def run_web(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "web", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_lists_the_flags_and_their_environment_twins() -> None:
    proc = run_web("--help")
    assert proc.returncode == 0
    for flag in ("--host", "EVENTBUS_WEB_HOST", "--port", "--read-only", "--tls-cert"):
        assert flag in proc.stdout
    assert "127.0.0.1" in proc.stdout


def test_bad_flags_exit_2_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        ("--port", "0"): "invalid port (1 to 65535) value: '0'",
        ("--port", "70000"): "invalid port (1 to 65535) value: '70000'",
        ("--session-idle-s", "soon"): "invalid integer >= 1 value: 'soon'",
        ("--tls-cert", "x.pem"): "--tls-cert and --tls-key go together",
        ("--redis-url", "redis://admin:pw@127.0.0.1:6379/0"): "must not carry credentials",
        ("--tenant", "a:b"): "invalid tenant id",
        ("--read-only", "maybe"): "invalid boolean value: 'maybe'",
        ("--tls-cert", "/no/web.crt", "--tls-key", "/no/web.key"): (
            "cannot load --tls-cert '/no/web.crt' with --tls-key '/no/web.key': No such file"
        ),
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as stopped:
            parse_settings(list(args), {})
        assert stopped.value.code == 2, args
        assert message in capsys.readouterr().err, args
    env = {"EVENTBUS_WEB_PORT": "9001", "EVENTBUS_WEB_READ_ONLY": "yes"}
    settings = parse_settings([], env)
    assert (settings.host, settings.port, settings.read_only) == ("127.0.0.1", 9001, True)
    assert parse_settings(["--port", "9002"], env).port == 9002


def test_the_cli_reports_a_bad_flag_in_one_line() -> None:
    proc = run_web("--port", "0")
    assert proc.returncode == 2 and "invalid port (1 to 65535) value: '0'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_port_already_taken_is_one_clear_line_not_a_start_up_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_web("--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr
    proc = run_web("--host", "no-such-host.invalid")
    assert proc.returncode == 2 and "cannot listen on no-such-host.invalid:8080" in proc.stderr


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze missing: apt-get install systemd (scripts/test does)"
    script = Path(sys.executable).with_name("eventbus")
    assert script.exists(), "the package's console script is not installed"
    unit = (ROOT / "systemd" / "eventbus-web.service").read_text()
    assert "EnvironmentFile=/etc/eventbus/web.env" in unit
    local = tmp_path / "eventbus-web.service"
    local.write_text(unit.replace("/opt/eventbus/venv/bin/eventbus", str(script)))
    proc = subprocess.run([tool, "verify", str(local)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "eventbus-web.service" not in proc.stderr, proc.stderr
    env = (ROOT / "systemd" / "web.env").read_text()
    assert "EVENTBUS_WEB_HOST=127.0.0.1" in env


class Http:
    """One connection to the console, with the cookies it was given."""

    def __init__(self, console: Console, context: ssl.SSLContext | None = None) -> None:
        url = urllib.parse.urlsplit(console.url)
        self.conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(url.hostname or "", url.port, context=context)
            if context
            else http.client.HTTPConnection(url.hostname or "", url.port)
        )
        self.cookies: dict[str, str] = {}
        self.set_cookie: list[str] = []
        self.headers: dict[str, str] = {}

    def send(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = urllib.parse.urlencode(form) if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        self.set_cookie = response.headers.get_all("set-cookie") or []
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        for line in self.set_cookie:
            name, value = line.split(";", 1)[0].split("=", 1)
            self.cookies[name] = value.strip('"')
        return response.status, text

    def login(self, username: str, password: str, tenant: str) -> tuple[int, str]:
        _, page = self.send("GET", "/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        form = {"csrf": token.group(1), "username": username, "password": password}
        return self.send("POST", "/login", {**form, "tenant": tenant})


def test_login_refusals_say_why(acl_redis: LocalRedis, console: Console) -> None:
    client = Http(console)
    name, password = user("acme", "worker")
    status, page = client.login(name, "wrong", "acme")
    assert status == 401 and "invalid username or password" in page
    status, page = client.login("nobody", "pw", "acme")
    assert status == 401 and "invalid username or password" in page
    status, page = client.login(name, password, "globex")
    assert status == 401 and "no access to tenant &#39;globex&#39;" in page
    status, page = client.send("POST", "/login", {"username": name, "password": password})
    assert status == 403 and "the login form expired" in page
    assert "eb_session" not in client.cookies


def test_over_tls_cookies_are_secure_and_hsts_is_sent(
    acl_redis: LocalRedis, console_tmp: Path
) -> None:
    cert, key = console_tmp / "web.crt", console_tmp / "web.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    console = start_console(
        acl_redis, console_tmp, "--tls-cert", str(cert), "--tls-key", str(key), tls=True
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        client = Http(console, context)
        status, _ = client.login(*user("acme", "viewer"), "acme")
        assert status == 303
        (session,) = [c for c in client.set_cookie if c.startswith("eb_session=")]
        flags = session.lower()
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
        assert client.headers["strict-transport-security"].startswith("max-age=")
        client.conn.close()
    finally:
        stop_console(console)


def test_a_session_ends_after_its_maximum_age(acl_redis: LocalRedis, console_tmp: Path) -> None:
    console = start_console(acl_redis, console_tmp, "--session-max-s", "1")
    try:
        client = Http(console)
        assert client.login(*user("acme", "viewer"), "acme")[0] == 303
        assert client.send("GET", "/t/acme/")[0] == 200
        wait_for(lambda: client.send("GET", "/t/acme/") == (303, ""), timeout_s=10, interval_s=0.1)
        assert client.headers["location"] == "/login"
    finally:
        stop_console(console)


def test_without_javascript_a_run_goes_one_batch_per_post(
    acl_redis: LocalRedis, console: Console
) -> None:
    admin = acl_redis.client()
    dlq = DeadLetterQueue(admin, "acme")
    for i in range(250):
        dlq.send_to_dlq("jobs", f"1-{i}", {"x": str(i)}, "boom", 0, reason="manual")
    client = Http(console)
    assert client.login(*user("acme", "worker"), "acme")[0] == 303
    page = client.send("GET", "/t/acme/s/jobs/dlq")[1]
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    csrf = token.group(1)
    form = {"csrf": csrf, "op": "purge:matching", "confirmed": "yes"}
    assert client.send("POST", "/t/acme/s/jobs/dlq/action", form)[0] == 303
    job = client.headers["location"]
    assert client.send("POST", job + "/step", {})[0] == 403  # no token
    posts = 0
    while "Done: 250 purged" not in client.send("GET", job)[1]:
        assert client.send("POST", job + "/step", {"csrf": csrf})[0] == 303
        posts += 1
        assert posts <= 4, "a batch is 100 letters"
    assert posts == 3 and dlq.count("jobs") == 0
    audit = client.send("GET", "/t/acme/audit")[1]
    assert audit.count("purge_matching") == 3
