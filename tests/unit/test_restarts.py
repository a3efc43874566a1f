"""Restart policy, table-driven: no processes, no sleeping."""

from __future__ import annotations

import pytest

from workers.pool.restarts import MAX_BACKOFF_S, QUICK_EXIT_S, RestartBudget, SlotBackoff


@pytest.mark.parametrize(
    ("lives", "delays"),
    [
        ([1, 1, 1, 1], [0.5, 1.0, 2.0, 4.0]),
        ([1, 1, QUICK_EXIT_S + 1, 1], [0.5, 1.0, 0.0, 0.5]),
        ([600], [0.0]),
        ([0.1] * 12, [0.5, 1, 2, 4, 8, 16, MAX_BACKOFF_S, *[MAX_BACKOFF_S] * 5]),
    ],
)
def test_slot_backoff_doubles_on_quick_deaths_and_resets_after_a_long_life(
    lives: list[float], delays: list[float]
) -> None:
    backoff = SlotBackoff()
    assert [backoff.after_exit(lived) for lived in lives] == delays


def test_budget_allows_n_restarts_a_minute_then_says_how_long_to_wait() -> None:
    budget = RestartBudget(per_minute=3)
    for t in (0.0, 1.0, 2.0):
        assert budget.wait_s(t) == 0
        budget.record(t)
    assert budget.used(10.0) == 3
    assert budget.wait_s(10.0) == pytest.approx(50.0)  # the restart at t=0 leaves at 60
    assert budget.wait_s(60.5) == 0 and budget.used(60.5) == 2
