"""Retry policy (pure): (retry count, error) -> retry after a delay, or dead-letter.

The schedule is written in tenacity's language (its ``wait_*``/``stop_*`` strategies) and
evaluated here for one attempt number; it never sleeps. The consumer carries the decision
out durably in Redis (see ``ack_and_retry.lua``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tenacity import RetryCallState, stop_after_attempt, wait_chain, wait_fixed
from tenacity.stop import stop_base
from tenacity.wait import wait_base

#: Defaults: 3 retries, 1 s, 4 s and 16 s after the failures (4 handler calls in all).
MAX_RETRIES = 3
RETRY_DELAYS: tuple[float, ...] = (1.0, 4.0, 16.0)


@dataclass(frozen=True)
class Decision:
    """What to do with an event whose handler raised."""

    action: Literal["retry", "dead_letter"]
    #: Retry count the event will carry (retry) or carried when it gave up (dead_letter).
    retry_count: int
    delay_s: float = 0.0


def attempt_state(attempt: int, error: BaseException | None = None) -> RetryCallState:
    """A tenacity call state for attempt number ``attempt`` (1-based), so that strategies
    (``wait_*``, ``stop_*``) can be evaluated without running tenacity's loop. Elapsed time
    is not modelled: strategies see the attempt number (and the error) only."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    if error is not None:
        state.set_exception((type(error), error, error.__traceback__))
    return state


def wait_s(wait: wait_base, attempt: int) -> float:
    """Seconds ``wait`` asks for after failed attempt number ``attempt``."""
    return float(wait(attempt_state(attempt)))


def _is_delay(value: object) -> bool:
    """A usable delay in seconds: a finite number >= 0 (NaN or inf would break scheduling)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 0


class RetryPolicy:
    """Decides retry vs dead-letter with tenacity strategies.

    ``RetryPolicy()`` is the default 1 s / 4 s / 16 s schedule. ``RetryPolicy(delays=[...])``
    uses fixed delays in that order; ``RetryPolicy(wait=wait_random_exponential(...))``
    takes any tenacity wait strategy. ``stop`` defaults to ``stop_after_attempt(max_retries
    + 1)``; strategies are evaluated with the attempt number only (no elapsed time).
    """

    def __init__(
        self,
        max_retries: int = MAX_RETRIES,
        delays: Sequence[float] | None = None,
        *,
        wait: wait_base | None = None,
        stop: stop_base | None = None,
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if wait is not None and delays is not None:
            raise ValueError("give either delays or wait, not both")
        if wait is None:
            delays = RETRY_DELAYS if delays is None else tuple(delays)
            if not delays or not all(_is_delay(d) for d in delays):
                raise ValueError(f"retry delays must be non-empty, finite and >= 0, got {delays!r}")
            wait = wait_chain(*(wait_fixed(d) for d in delays))
        self.max_retries = max_retries
        self.wait = wait
        self.stop = stop if stop is not None else stop_after_attempt(max_retries + 1)

    def decide(self, retry_count: int, error: BaseException | None = None) -> Decision:
        """Decision after the handler failed on an event that had ``retry_count`` retries."""
        state = attempt_state(retry_count + 1, error)
        if self.stop(state):
            return Decision("dead_letter", retry_count)
        return Decision("retry", retry_count + 1, float(self.wait(state)))

    def delays(self) -> list[float]:
        """The delays of the whole schedule (for logs and docs)."""
        out = []
        for n in range(self.max_retries + 1):
            d = self.decide(n)
            if d.action == "dead_letter":
                break
            out.append(d.delay_s)
        return out
