"""Bad arguments to library calls raise from the bus's one exception tree (and stay
ValueErrors, for callers that catch those), naming the bad value."""

from __future__ import annotations

import fakeredis
import pytest

from eventbus import TenantEventBus
from eventbus.dlqview import DlqFilter, check_id
from eventbus.errors import EventBusError, InvalidArgument


def test_a_bad_budget_is_an_invalid_argument_naming_the_value() -> None:
    bus = TenantEventBus(fakeredis.FakeRedis(), "acme")  # refused before any command
    with pytest.raises(InvalidArgument, match="set_budget needs events, units or both"):
        bus.set_budget("req-1")
    with pytest.raises(InvalidArgument, match="budget events must be a number >= 0, got -1"):
        bus.set_budget("req-1", events=-1)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: check_id("zz"), "'zz'"),
        (lambda: DlqFilter.parse({"reason": "nope"}), "'nope'"),
        (lambda: DlqFilter.parse({"since": "yesterday"}), "'yesterday'"),
    ],
)
def test_a_bad_dlq_filter_is_an_invalid_argument_naming_the_value(call, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named) as raised:
        call()
    assert isinstance(raised.value, EventBusError) and isinstance(raised.value, ValueError)
