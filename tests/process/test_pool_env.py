"""The env file has one reader, the supervisor: its EVENTBUS_* lines are settings, and its
other variables (API keys...) are in the environment the handlers run with, as systemd's
EnvironmentFile= put them before, also after a SIGHUP reload."""

from __future__ import annotations

import signal
from pathlib import Path

from eventbus import TenantEventBus
from tests.conftest import wait_for
from tests.process.pool import STREAM, event


def _seen(pool, event_id: str) -> list[str | None]:  # type: ignore[no-untyped-def]
    return [x.get("env") for x in pool.ledger() if x["event_id"] == event_id]


def test_handlers_get_the_env_files_other_variables_and_a_reload_updates_them(
    make_pool, tbus: TenantEventBus, tmp_path: Path
) -> None:
    env_file = tmp_path / "pool.env"
    env_file.write_text("EVENTBUS_PROCESSES=1\nAGENT_API_KEY=first\n")
    pool = make_pool(processes=1, args=["--env-file", str(env_file)]).start()
    one = event(env="AGENT_API_KEY")
    tbus.publish(STREAM, one)
    wait_for(lambda: one.event_id in pool.done_ids(), 30)

    env_file.write_text("EVENTBUS_PROCESSES=1\nAGENT_API_KEY=second\n")
    pool.signal(signal.SIGHUP)
    wait_for(lambda: pool.logged("reload_done"), 30)
    two = event(env="AGENT_API_KEY")
    tbus.publish(STREAM, two)
    wait_for(lambda: two.event_id in pool.done_ids(), 30)

    assert set(_seen(pool, one.event_id)) == {"first"}
    assert set(_seen(pool, two.event_id)) == {"second"}
    assert pool.stop() == 0
