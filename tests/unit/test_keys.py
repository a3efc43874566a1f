"""The key factory and name validators: tenant isolation lives here (no Redis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from redis.crc import key_slot

from eventbus.errors import EventBusError, InvalidName
from eventbus.keys import (
    KEY_LAYOUT,
    TenantKeys,
    glob_escape,
    validate_consumer,
    validate_event_id,
    validate_group,
    validate_stream,
    validate_tenant_id,
)

NAME_VALIDATORS: dict[str, tuple[Callable[[object], str], int]] = {
    "tenant id": (validate_tenant_id, 64),
    "stream name": (validate_stream, 128),
    "group name": (validate_group, 64),
    "consumer name": (validate_consumer, 64),
}
SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
BAD_NAMES = [":", "a:b", "*", "a*", "{", "a{b}", "}", " ", "a b", "", ".", "..", "../x", "a/b"]


def test_keys_of_a_tenant_follow_the_catalogue() -> None:
    keys = TenantKeys("acme")

    assert keys.prefix == "t:{acme}:"
    assert keys.stream("tasks") == "t:{acme}:events:tasks"
    assert keys.dlq("tasks") == "t:{acme}:events:tasks:dlq"
    assert keys.retry_stream("tasks", "billing") == "t:{acme}:events:tasks:retry:billing"
    assert keys.schedule("tasks", "billing") == "t:{acme}:sched:tasks:billing"
    assert keys.dedupe("tasks", "evt-1") == "t:{acme}:dedupe:tasks:evt-1"
    assert keys.budget("req-1") == "t:{acme}:budget:req-1"
    assert keys.spent() == "t:{acme}:spent"
    assert keys.halted() == "t:{acme}:halted"
    assert keys.trace("req-1") == "t:{acme}:trace:req-1"


def test_correlation_ids_in_keys_follow_the_event_id_rule() -> None:
    keys = TenantKeys("acme")
    assert keys.budget("order-42:attempt-1") == "t:{acme}:budget:order-42:attempt-1"
    for bad in ("", "a b", "x" * 129, "é"):
        with pytest.raises(InvalidName, match="invalid correlation id"):
            keys.trace(bad)


def test_stream_name_of_recognises_only_main_stream_keys_of_the_tenant() -> None:
    keys = TenantKeys("acme")

    assert keys.stream_name_of("t:{acme}:events:tasks") == "tasks"
    assert keys.stream_name_of("t:{acme}:events:tasks:dlq") is None
    assert keys.stream_name_of("t:{acme}:events:tasks:retry:g") is None
    assert keys.stream_name_of("t:{other}:events:tasks") is None


def test_names_at_the_length_limit_are_accepted() -> None:
    for kind, (validate, limit) in NAME_VALIDATORS.items():
        assert validate("x" * limit) == "x" * limit, kind
    assert validate_event_id("e" * 128) == "e" * 128


@pytest.mark.parametrize("kind", list(NAME_VALIDATORS))
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_validators_reject_unsafe_names_with_invalid_name(kind: str, bad: str) -> None:
    validate, _ = NAME_VALIDATORS[kind]

    with pytest.raises(InvalidName) as info:
        validate(bad)

    assert repr(bad) in str(info.value)
    assert kind in str(info.value)


@pytest.mark.parametrize("kind", list(NAME_VALIDATORS))
def test_validators_reject_names_over_the_limit(kind: str) -> None:
    validate, limit = NAME_VALIDATORS[kind]
    too_long = "x" * (limit + 1)

    with pytest.raises(InvalidName, match=f"1 to {limit} characters") as info:
        validate(too_long)

    assert too_long in str(info.value)


@pytest.mark.parametrize("kind", list(NAME_VALIDATORS))
@pytest.mark.parametrize("value", [None, 42, b"acme", ["acme"]])
def test_validators_reject_non_strings(kind: str, value: object) -> None:
    validate, _ = NAME_VALIDATORS[kind]

    with pytest.raises(InvalidName, match="must be a string") as info:
        validate(value)

    assert repr(value) in str(info.value)


@pytest.mark.parametrize("bad", ["", "has space", "tab\there", "é", "x" * 129, "new\nline"])
def test_event_id_must_be_printable_ascii_without_spaces(bad: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_event_id(bad)
    assert repr(bad) in str(info.value)


def test_event_ids_may_contain_colons_and_uuid_shapes() -> None:
    assert validate_event_id("order-42:attempt-1") == "order-42:attempt-1"
    assert validate_event_id("01HZX3B4F7Q9Z6ZC0K8M2V1N0P") == "01HZX3B4F7Q9Z6ZC0K8M2V1N0P"


def test_invalid_name_is_both_a_value_error_and_a_bus_error() -> None:
    assert issubclass(InvalidName, ValueError)
    assert issubclass(InvalidName, EventBusError)


def test_key_factory_validates_every_name_it_formats() -> None:
    with pytest.raises(InvalidName):
        TenantKeys("a:b")
    keys = TenantKeys("acme")
    with pytest.raises(InvalidName):
        keys.stream("tasks:dlq")
    with pytest.raises(InvalidName):
        keys.retry_stream("tasks", "g*")
    with pytest.raises(InvalidName):
        keys.schedule("tasks", "{g}")
    with pytest.raises(InvalidName):
        keys.dedupe("tasks", "not an id")


# -- properties -----------------------------------------------------------------------

_valid = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True).filter(
    lambda n: n not in {".", ".."}
)
# A tiny alphabet makes near-collisions ("a.b" vs "a", "b"...) likely.
_short = st.from_regex(r"[ab._\-]{1,4}", fullmatch=True).filter(lambda n: n not in {".", ".."})
# Mostly valid names, some with unsafe characters: both sides of the validator get drawn.
_names = _valid | st.text(st.sampled_from("ab_-.:*{} Z9/"), min_size=0, max_size=6)


def _accepted(validate: Callable[[object], str], value: str) -> bool:
    try:
        validate(value)
    except InvalidName:
        return False
    return True


@given(tenant=_valid | _short, stream=_valid | _short, group=_names)
def test_every_accepted_name_yields_keys_inside_the_tenant_prefix(
    tenant: str, stream: str, group: str
) -> None:
    keys = TenantKeys(tenant)
    made = [keys.stream(stream), keys.dlq(stream), keys.dedupe(stream, "e-1")]
    if _accepted(validate_group, group):
        made += [keys.retry_stream(stream, group), keys.schedule(stream, group)]

    for key in made:
        assert key.startswith(f"t:{{{tenant}}}:")
        assert key.split(":")[1] == "{" + tenant + "}"  # the tenant segment cannot be escaped
        assert not set(key.replace(keys.tag, "", 1)) & set("*{} ")
        assert key_slot(key.encode()) == key_slot(tenant.encode())  # the tenant's hash tag


@given(a=st.tuples(_short, _short), b=st.tuples(_short | _valid, _short))
def test_different_tenant_stream_pairs_never_share_a_stream_key(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    assume(a != b)
    ka, kb = (TenantKeys(t) for t, _ in (a, b))

    assert ka.stream(a[1]) != kb.stream(b[1])
    assert ka.dlq(a[1]) != kb.dlq(b[1])
    assert ka.stream(a[1]) != kb.dlq(b[1])


@given(name=_names)
def test_a_name_is_accepted_exactly_when_it_uses_only_safe_characters(name: str) -> None:
    safe = 1 <= len(name) <= 64 and set(name) <= set(SAFE) and name not in {".", ".."}

    assert _accepted(validate_tenant_id, name) is safe


def test_dedupe_all_is_dedupe_of_each_event_and_checks_every_name() -> None:
    keys = TenantKeys("acme")

    assert keys.dedupe_all("tasks", ["a", "b-1:x"]) == [
        keys.dedupe("tasks", "a"),
        keys.dedupe("tasks", "b-1:x"),
    ]
    with pytest.raises(InvalidName):
        keys.dedupe_all("tasks", ["ok", "not ok"])
    with pytest.raises(InvalidName):
        keys.dedupe_all("a:b", ["ok"])


def _every_key(keys: TenantKeys, stream: str, group: str, event_id: str, cid: str) -> list[str]:
    return [
        keys.stream(stream),
        keys.dlq(stream),
        keys.retry_stream(stream, group),
        keys.schedule(stream, group),
        keys.dedupe(stream, event_id),
        *keys.dedupe_all(stream, [event_id, "x"]),
        keys.done(stream, group, event_id),
        keys.registry(),
        keys.audit(),
        keys.budget(cid),
        keys.spent(),
        keys.halted(),
        keys.trace(cid),
    ]


_event_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)


@given(tenant=_valid | _short, stream=_valid | _short, event_id=_event_ids, cid=_event_ids)
def test_every_key_of_a_tenant_hashes_to_the_tenants_slot(
    tenant: str, stream: str, event_id: str, cid: str
) -> None:
    """Key layout 2: one hash slot per tenant, whatever braces an event id holds, so every
    Lua script's keys (all derived here) share one slot on Redis Cluster."""
    keys = TenantKeys(tenant)
    slots = {key_slot(k.encode()) for k in _every_key(keys, stream, "g", event_id, cid)}

    assert slots == {key_slot(keys.tag.encode())} == {key_slot(tenant.encode())}


def test_layout_2_keys_carry_the_tenant_as_a_literal_hash_tag() -> None:
    keys = TenantKeys("acme")

    assert KEY_LAYOUT == 2
    assert keys.tag == "{acme}"
    assert keys.stream("tasks") == "t:{acme}:events:tasks"
    assert keys.done("tasks", "g", "e{1}") == "t:{acme}:done:tasks:g:e{1}"


def test_glob_escape_makes_every_glob_character_literal() -> None:
    assert glob_escape("a*b?c[d]e\\f{g}") == "a\\*b\\?c\\[d\\]e\\\\f{g}"
    assert TenantKeys("a.b-c_9").acl_pattern() == "t:{a.b-c_9}:*"


def test_legacy_keys_map_to_layout_2_with_the_same_suffix() -> None:
    keys = TenantKeys("acme")

    assert keys.legacy_pattern() == "t:acme:*"
    assert keys.from_legacy("t:acme:events:tasks:dlq") == "t:{acme}:events:tasks:dlq"
    with pytest.raises(InvalidName, match="t:globex:events:tasks"):
        keys.from_legacy("t:globex:events:tasks")
    # a layout-2 key never matches the legacy prefix, so a scan cannot take one for the other
    assert not keys.stream("tasks").startswith(keys.legacy_prefix)
