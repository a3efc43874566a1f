"""Intake (pure): which deliveries may reach a handler, and why the others may not."""

from __future__ import annotations

from eventbus import AgentEvent, EventType
from eventbus.intake import Rejected, screen
from eventbus.records import retry_count_of


def fields(tenant: str = "acme", **extra: str) -> dict[bytes, bytes]:
    event = AgentEvent(
        event_type=EventType.TASK_ASSIGNED, tenant_id=tenant, source_agent_id="a", call_chain=["a"]
    )
    out = {k.encode(): v.encode() for k, v in event.to_stream_dict().items()}
    out.update({k.encode(): v.encode() for k, v in extra.items()})
    return out


def verdict(f: dict[bytes, bytes], deliveries: int = 1, max_bytes: int = 10_000) -> object:
    return screen(f, deliveries, max_deliveries=3, max_bytes=max_bytes, tenant_id="acme")


def test_a_valid_event_of_the_tenant_passes_decoded() -> None:
    assert isinstance(verdict(fields()), AgentEvent)


def test_rejections_carry_their_dead_letter_reason() -> None:
    cases = {
        "max_deliveries": verdict(fields(), deliveries=4),
        "too_large": verdict(fields(), max_bytes=50),
        "decode_error": verdict({b"version": b"1.0", b"event_id": b"x"}),
    }
    for reason, got in cases.items():
        assert isinstance(got, Rejected) and got.reason == reason, (reason, got)
    foreign = verdict(fields(tenant="globex"))
    assert isinstance(foreign, Rejected) and "globex" in foreign.failure.message


def test_retry_count_is_read_leniently() -> None:
    assert retry_count_of({b"_retry_count": b"2"}) == 2
    assert retry_count_of({b"_retry_count": b"x"}) == 0
    assert retry_count_of({}) == 0
