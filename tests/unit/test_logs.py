"""eventbus.logs: the context-local log context and the processor that writes it out."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from eventbus import logs


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging's JSON lines, written to a buffer."""
    old = structlog.get_config()
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.configure_logging("info", "json")
    try:
        yield out
    finally:
        structlog.configure(**old)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_configured_lines_carry_the_bound_context_until_it_is_reset(
    configured: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    token = logs.bind({"message_id": "1-0", "attempt": 1})
    try:
        log.info("inside", attempt=7)  # the line's own key wins
        with logs.log_context(attempt=2, call_chain="a -> b"):  # over the outer keys
            log.info("nested")
        log.info("back")
    finally:
        logs.reset(token)
    log.info("outside")
    inside, nested, back, outside = lines(configured)
    assert (inside["message_id"], inside["attempt"]) == ("1-0", 7)
    assert (nested["message_id"], nested["attempt"], nested["call_chain"]) == ("1-0", 2, "a -> b")
    assert (back["attempt"], "call_chain" in back) == (1, False)
    assert "message_id" not in outside and "attempt" not in outside


def test_the_processor_adds_nothing_when_nothing_is_bound() -> None:
    assert logs.merge_log_context(None, "info", {"event": "x"}) == {"event": "x"}
