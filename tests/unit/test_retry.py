"""RetryPolicy (pure): (retry count, error) -> retry after a delay, or dead-letter."""

from __future__ import annotations

import time

import pytest
from tenacity import stop_after_attempt, wait_exponential, wait_fixed

from eventbus.records import FailureInfo
from eventbus.retry import Decision, RetryPolicy


@pytest.mark.parametrize(
    ("retry_count", "expected"),
    [
        (0, Decision("retry", 1, 1.0)),
        (1, Decision("retry", 2, 4.0)),
        (2, Decision("retry", 3, 16.0)),
        (3, Decision("dead_letter", 3)),
    ],
)
def test_default_policy_retries_after_1_4_16_seconds_then_dead_letters(
    retry_count: int, expected: Decision
) -> None:
    assert RetryPolicy().decide(retry_count, RuntimeError("boom")) == expected


def test_default_schedule_lists_its_delays() -> None:
    assert RetryPolicy().delays() == [1.0, 4.0, 16.0]


@pytest.mark.parametrize(
    ("policy", "delays", "gives_up_after"),
    [
        (RetryPolicy(delays=[0.5, 2]), [0.5, 2.0, 2.0], 3),  # the last delay repeats
        (RetryPolicy(max_retries=2, delays=[0.1, 0.2, 0.3]), [0.1, 0.2], 2),
        (RetryPolicy(max_retries=1, delays=[0]), [0.0], 1),
        (RetryPolicy(max_retries=0), [], 0),
        (RetryPolicy(max_retries=4, wait=wait_exponential(multiplier=1, max=5)), [1, 2, 4, 5], 4),
        (RetryPolicy(max_retries=2, wait=wait_fixed(3)), [3.0, 3.0], 2),
        (RetryPolicy(max_retries=9, stop=stop_after_attempt(2)), [1.0], 1),
    ],
)
def test_custom_policies_follow_their_schedule(
    policy: RetryPolicy, delays: list[float], gives_up_after: int
) -> None:
    assert policy.delays() == delays
    for n, delay in enumerate(delays):
        assert policy.decide(n) == Decision("retry", n + 1, float(delay))
    assert policy.decide(gives_up_after) == Decision("dead_letter", gives_up_after)


def test_max_retries_zero_dead_letters_on_the_first_failure() -> None:
    assert RetryPolicy(max_retries=0).decide(0, ValueError("x")) == Decision("dead_letter", 0)


def test_decide_never_sleeps_even_for_long_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # tenacity's nap.sleep calls it too

    decision = RetryPolicy(delays=[3600]).decide(0)

    assert decision.delay_s == 3600.0
    assert slept == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_retries": -1}, "-1"),
        ({"max_retries": "3"}, "'3'"),
        ({"max_retries": 2.5}, "2.5"),
        ({"max_retries": True}, "True"),
        ({"delays": []}, "()"),
        ({"delays": [1, -2]}, "-2"),
        ({"delays": ["1"]}, "'1'"),
        ({"delays": [float("nan")]}, "nan"),
        ({"delays": [float("inf")]}, "inf"),
        ({"delays": [1], "wait": wait_fixed(1)}, "not both"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

    assert named in str(info.value)


def _raise(exc: BaseException) -> FailureInfo:
    try:
        raise exc
    except BaseException as caught:
        return FailureInfo.from_exception(caught)


def test_failure_info_keeps_type_message_and_traceback() -> None:
    info = _raise(KeyError("order-42"))

    assert info.error_type == "KeyError"
    assert info.message == "'order-42'"
    assert info.traceback.startswith("Traceback (most recent call last):")
    assert "in _raise" in info.traceback


def test_failure_info_traceback_is_bounded_and_keeps_its_end() -> None:
    info = _raise(ValueError("x" * 5000 + " the end"))

    assert len(info.traceback) == 2000
    assert info.traceback.endswith(" the end\n")
