"""Intake (pure): which deliveries may reach a handler, and why the others may not."""

from __future__ import annotations

from eventbus import AgentEvent, EventType
from eventbus.intake import Rejected, screen
from eventbus.records import REASON_WRONG_TENANT, FailureInfo, retry_count_of


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
        "wrong_tenant": verdict(fields(tenant="globex")),
    }
    for reason, got in cases.items():
        assert isinstance(got, Rejected) and got.reason == reason, (reason, got)


def test_an_event_of_another_tenant_is_wrong_tenant_naming_both_tenants() -> None:
    entry = fields(tenant="globex")
    event_id = entry[b"event_id"].decode()

    got = verdict(entry)

    assert isinstance(got, Rejected)
    assert got.reason == REASON_WRONG_TENANT == "wrong_tenant"
    assert got.failure == FailureInfo(
        "TenantMismatch",
        f"event {event_id!r} belongs to tenant 'globex', not to tenant 'acme'",
        "",
    )


def test_an_entry_lacking_a_field_the_constructor_defaults_is_a_decode_error() -> None:
    entry = fields()
    del entry[b"priority"]

    got = verdict(entry)

    assert isinstance(got, Rejected) and got.reason == "decode_error"
    assert got.failure.error_type == "DecodeError"
    assert got.failure.message == "missing required field(s) 'priority'"


def test_retry_count_is_read_leniently() -> None:
    assert retry_count_of({b"_retry_count": b"2"}) == 2
    assert retry_count_of({b"_retry_count": b"x"}) == 0
    assert retry_count_of({}) == 0
