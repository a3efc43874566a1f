"""Benchmark of the web console on a large DLQ (not shipped; run from a checkout).

    python -m workers.tools.console_bench [--letters 1000000] [--replay 100000] [--json F]

Fills a private redis-server with dead letters (the fields the consumer writes: an
event's ``to_stream_dict()`` plus ``dead_letter_metadata``), starts ``eventbus web`` as a
process, logs in as a tenant worker user and times, by the server's own Server-Timing
header and by the client: the newest page, deep pages, a lookup by id and filtered pages.
Then it replays ``--replay`` letters through the console's batch endpoint while a second
client PINGs Redis in a loop and records its latency, next to the same PING loop with
the DLQ idle.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from eventbus import AgentEvent, EventType
from eventbus.acl import tenant_users
from eventbus.keys import TenantKeys
from eventbus.records import REASON_DECODE_ERROR, REASON_HANDLER_FAILED, FailureInfo
from eventbus.records import dead_letter_metadata as metadata
from workers.tools.localredis import LocalRedis, free_port

TENANT, STREAM, GROUP = "bench", "tasks", "writers"
RARE_EVERY = 50_000  # one letter in this many carries the rare error text
TYPES = list(EventType)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/agents/writer.py", line 118, in handle\n'
    "    reply = llm.complete(prompt, tools=tools)\n"
    '  File "/srv/agents/llm.py", line 52, in complete\n'
    "    raise ToolTimeout(f'tool {name} did not answer in {timeout}s')\n"
)


def letter(i: int) -> dict[str, str]:
    event = AgentEvent(
        event_type=TYPES[i % len(TYPES)],
        tenant_id=TENANT,
        source_agent_id=f"agent-{i % 17}",
        call_chain=["user", "planner", f"agent-{i % 17}"],
        data={"task": f"summarise document {i}", "attempt": i % 4, "chars": 1200 + i % 300},
        context_refs=[f"s3://docs/{i % 1000}.md"],
    )
    rare = i % RARE_EVERY == 7
    failure = FailureInfo(
        "QuotaExceeded" if rare else "ToolTimeout",
        "quota exceeded for model gpt-x" if rare else f"tool search did not answer in {i % 30}s",
        TRACEBACK,
    )
    fields = dict(event.to_stream_dict())
    fields.update(
        metadata(
            reason=REASON_DECODE_ERROR if i % 5 == 0 else REASON_HANDLER_FAILED,
            original_stream=STREAM,
            message_id=f"{1_700_000_000_000 + i}-0",
            retry_count=3,
            failure=failure,
            group=GROUP,
            consumer=f"writer-{i % 4}",
        )
    )
    return fields


def fill(client: redis.Redis, n: int, first_ms: int) -> None:
    keys = TenantKeys(TENANT)
    key = keys.dlq(STREAM)
    client.sadd(keys.registry(), STREAM)
    client.xgroup_create(keys.stream(STREAM), GROUP, id="0", mkstream=True)
    templates = [letter(i) for i in range(1000)]
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        fields = dict(templates[i % 1000])
        if i % RARE_EVERY == 7:
            fields.update(letter(i))
        pipe.xadd(key, fields, id=f"{first_ms + i}-0")  # type: ignore[arg-type]
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


class Client:
    """Logged-in HTTP client of the console (one keep-alive connection)."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""
        status, body, headers = self.request("GET", "/login")
        token = re.search(r'name="csrf" value="([^"]+)"', body)
        login = re.search(r"eb_login=([^;]+)", headers.get("set-cookie", ""))
        assert token and login, "no login form"
        self.cookie = f"eb_login={login.group(1)}"
        form = {"csrf": token.group(1), "username": username, "password": password}
        status, body, headers = self.request("POST", "/login", {**form, "tenant": TENANT})
        session = re.search(r"eb_session=([^;]+)", headers.get("set-cookie", ""))
        assert status == 303 and session, f"login failed: {status}"
        self.cookie = f"eb_session={session.group(1)}"
        page = self.request("GET", f"/t/{TENANT}/")[1]
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found
        self.csrf = found.group(1)

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, *, json_: bool = False
    ) -> tuple[int, str, dict[str, str]]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if json_:
            headers.update({"Accept": "application/json", "X-CSRF-Token": self.csrf})
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):  # idle keep-alive closed
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        text = response.read().decode()
        out: dict[str, str] = {}
        for k, v in response.getheaders():  # several Set-Cookie headers: keep them all
            out[k.lower()] = out[k.lower()] + "\n" + v if k.lower() in out else v
        return response.status, text, out

    def timed(self, path: str) -> tuple[float, float]:
        """(server ms from Server-Timing, client ms) of one GET that must succeed."""
        started = time.perf_counter()
        status, body, headers = self.request("GET", path)
        client_ms = (time.perf_counter() - started) * 1000
        assert status == 200, f"{path}: {status} {body[:300]}"
        server = re.search(r"dur=([\d.]+)", headers.get("server-timing", ""))
        assert server, "no Server-Timing header"
        return float(server.group(1)), client_ms


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(name: str, samples: list[tuple[float, float]]) -> dict[str, Any]:
    server = [s for s, _ in samples]
    client = [c for _, c in samples]
    return {
        "what": name,
        "n": len(samples),
        "server_p50_ms": round(statistics.median(server), 1),
        "server_p95_ms": round(pct(server, 95), 1),
        "server_max_ms": round(max(server), 1),
        "client_p95_ms": round(pct(client, 95), 1),
    }


class PingProbe(threading.Thread):
    """PING in a loop from its own connection; latencies in ms."""

    def __init__(self, server: LocalRedis) -> None:
        super().__init__(daemon=True)
        self.client = server.client()
        self.stop = threading.Event()
        self.samples: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            self.client.ping()
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.001)

    def result(self) -> dict[str, float]:
        return {
            "pings": len(self.samples),
            "p50_ms": round(statistics.median(self.samples), 3),
            "p99_ms": round(pct(self.samples, 99), 3),
            "max_ms": round(max(self.samples), 3),
        }


def probe_for(server: LocalRedis, seconds: float) -> dict[str, float]:
    probe = PingProbe(server)
    probe.start()
    time.sleep(seconds)  # measuring a quiet period: the time is the measurement
    probe.stop.set()
    probe.join()
    return probe.result()


def measure(args: argparse.Namespace, server: LocalRedis, port: int) -> dict[str, Any]:
    name, password = f"eventbus-{TENANT}-worker", "bench-pw"
    http_ = Client(port, name, password)
    base = f"/t/{TENANT}/s/{STREAM}/dlq"
    admin = server.client()
    rows: Any = admin.xrange(TenantKeys(TENANT).dlq(STREAM), count=1)
    first_ms = int(rows[0][0].decode().split("-")[0])
    rng = random.Random(7)

    def some_id() -> str:
        return f"{first_ms + rng.randrange(args.letters)}-0"

    def run(name: str, n: int, path: Callable[[], str]) -> dict[str, Any]:
        http_.timed(path())  # warm up
        return summary(name, [http_.timed(path()) for _ in range(n)])

    mid = first_ms + args.letters // 2
    lines = [
        run("newest page (50 letters)", args.requests, lambda: base),
        run("a page deep in the DLQ (before=random id)", args.requests,
            lambda: f"{base}?before={some_id()}"),
        run("one letter by id", args.requests, lambda: f"{base}/{some_id()}"),
        run("filtered: reason=decode_error (1 in 5)", 20, lambda: f"{base}?reason=decode_error"),
        run("filtered: event type + time range (1 h)", 20,
            lambda: f"{base}?event_type=task_failed&since={mid}&until={mid + 3_600_000}"),
        run("filtered: rare error text (1 in 50,000), one page of search", 10,
            lambda: f"{base}?q=quota+exceeded"),
    ]  # fmt: skip
    out: dict[str, Any] = {"letters": args.letters, "pages": lines}
    body = http_.request("GET", f"{base}?q=quota+exceeded")[1]
    scanned = re.search(r"Searched (\d+) dead letters", body)
    out["rare_search_scanned_per_page"] = int(scanned.group(1)) if scanned else None
    out["ping_idle"] = probe_for(server, 5.0)
    out["replay"] = replay(args, server, http_, first_ms)
    return out


def replay(args: argparse.Namespace, server: LocalRedis, http_: Client, first_ms: int) -> Any:
    """Replay ``args.replay`` letters (an id range) in the console's batches, with a PING
    probe running."""
    since, until = first_ms, first_ms + args.replay - 1
    form = {"csrf": http_.csrf, "op": "replay:matching", "confirmed": "yes"}
    status, _, headers = http_.request(
        "POST", f"/t/{TENANT}/s/{STREAM}/dlq/action", {**form, "since": str(since),
                                                       "until": str(until)}
    )  # fmt: skip
    assert status == 303, status
    job = headers["location"]
    probe = PingProbe(server)
    probe.start()
    started = time.perf_counter()
    step_ms: list[float] = []
    while True:
        t0 = time.perf_counter()
        status, body, _ = http_.request("POST", job + "/step", {}, json_=True)
        step_ms.append((time.perf_counter() - t0) * 1000)
        assert status == 200, body
        state = json.loads(body)
        if state["finished"]:
            break
    seconds = time.perf_counter() - started
    probe.stop.set()
    probe.join()
    return {
        "replayed": state["done"],
        "seconds": round(seconds, 1),
        "per_s": round(state["done"] / seconds),
        "batches": len(step_ms),
        "batch_p50_ms": round(statistics.median(step_ms), 1),
        "ping_during": probe.result(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--letters", type=int, default=1_000_000)
    p.add_argument("--replay", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=200, help="timed requests per page kind")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with LocalRedis() as server, tempfile.TemporaryDirectory() as tmp:
        admin = server.client()
        for u in tenant_users(TENANT, worker_password="bench-pw"):
            admin.execute_command("ACL", "SETUSER", *u.setuser_args())  # type: ignore[no-untyped-call]
        first_ms = int(time.time() * 1000) - args.letters - 60_000
        started = time.perf_counter()
        fill(admin, args.letters, first_ms)
        memory = admin.info("memory")["used_memory_human"]
        took = time.perf_counter() - started
        print(
            f"filled {args.letters} letters in {took:.0f} s; Redis uses {memory}", file=sys.stderr
        )
        port = free_port()
        log = open(Path(tmp) / "console.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "web", "--redis-url", server.url,
             "--port", str(port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the console did not start") from None
                    time.sleep(0.05)
            result = measure(args, server, port)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
