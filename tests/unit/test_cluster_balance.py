"""How evenly key layout 2 spreads tenants over a cluster's masters (no server): one hash
slot per tenant, so a master's share is the number of tenants whose slot it owns."""

from __future__ import annotations

from redis.crc import key_slot

from eventbus.keys import TenantKeys

#: The slot ranges ``redis-cli --cluster create`` gives 3 masters (16384 slots).
THREE_MASTERS = ((0, 5460), (5461, 10922), (10923, 16383))


def tenants_per_master(tenants: list[str], ranges: tuple[tuple[int, int], ...]) -> list[int]:
    counts = [0] * len(ranges)
    for tenant in tenants:
        slot = key_slot(TenantKeys(tenant).stream("tasks").encode())
        counts[next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi)] += 1
    return counts


def test_1000_tenants_spread_over_3_masters_within_1_2_times_the_mean() -> None:
    """The README's figure: tenants ``tenant-0`` .. ``tenant-999``."""
    counts = tenants_per_master([f"tenant-{i}" for i in range(1000)], THREE_MASTERS)

    assert sum(counts) == 1000
    assert max(counts) <= 1.2 * (1000 / 3), counts


def test_uuid_like_and_word_tenant_ids_spread_as_well() -> None:
    words = [f"{w}{i}" for i in range(200) for w in ("acme", "globex", "initech", "umbrella", "x")]
    counts = tenants_per_master(words, THREE_MASTERS)

    assert max(counts) <= 1.2 * (len(words) / 3), counts
