"""The README's first command runs this demo: it must keep working end to end."""

from __future__ import annotations

import subprocess
import sys

from workers.tools.localredis import LocalRedis


def test_demo_retries_dead_letters_and_replays_one_event(redis_server: LocalRedis) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workers.tools.demo", "--redis-url", redis_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("writer FAILED") == 4  # first attempt + 3 retries
    assert "handler_failed, 3 retries" in proc.stdout
    assert proc.stdout.rstrip().endswith("demo OK")
