"""Key layout upgrades: find a tenant's keys left in key layout 1 (``t:T:...``, no hash tag)
and rename them to layout 2 (``t:{T}:...``, see :mod:`eventbus.keys` and
docs/wire-format.md). Run it with the tenant's pool and producers stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventbus.errors import EventBusError
from eventbus.keys import TenantKeys
from eventbus.redis_io import s, translated

SCAN_COUNT = 1000  # keys per SCAN step


def legacy_keys(client: Any, tenant_id: str) -> list[str]:
    """The tenant's layout-1 keys (sorted), found with SCAN (every master of a cluster)."""
    keys = TenantKeys(tenant_id)
    with translated(f"scan for layout-1 keys of tenant {tenant_id!r}"):
        found = client.scan_iter(match=keys.legacy_pattern(), count=SCAN_COUNT)
        return sorted({s(k) for k in found})


def legacy_hint(client: Any, tenant_id: str, stream: str) -> str | None:
    """A cheap check (two EXISTS, no SCAN) for a process that starts: the name of a
    layout-1 key of the tenant's registry or of ``stream`` that exists, else None."""
    keys = TenantKeys(tenant_id)
    for new in (keys.stream(stream), keys.registry()):
        old = keys.legacy_prefix + new[len(keys.prefix) :]
        with translated(f"look for layout-1 key {old!r}"):
            if client.exists(old):
                return old
    return None


def warn_legacy_keys(client: Any, named: Sequence[tuple[str, str]], log: Any) -> None:
    """At a pool's start: for each (tenant, stream) named, log ``legacy_keys_found`` if
    layout-1 keys exist (they are not read under layout 2), with the command that moves
    them; a check the user may not make (a tenant ACL user and ``t:T:*`` names) is logged
    as ``legacy_keys_unchecked``."""
    for tenant, stream in named:
        try:
            old = legacy_hint(client, tenant, stream)
        except EventBusError as exc:
            log.info("legacy_keys_unchecked", error=str(exc))
            continue
        if old:
            log.warning(
                "legacy_keys_found", example=old, fix=f"eventbus migrate-keys --tenant {tenant}"
            )


@dataclass
class Migration:
    """What :func:`migrate` did: renamed (old, new) pairs, and keys left alone because
    their layout-2 name exists already (nothing is overwritten)."""

    renamed: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def migrate(client: Any, tenant_id: str, *, dry_run: bool = False) -> Migration:
    """Move every layout-1 key of the tenant to its layout-2 name: DUMP, RESTORE with its
    TTL (the value and a stream's consumer groups and pending lists go with it), then
    DEL. The old and new names hash to different slots, so this works on a single node and
    on a cluster alike. A key whose new name is taken is left in place and listed in
    ``conflicts`` (nothing is overwritten). Not atomic per key: stop the tenant's pool and
    producers first. A run cut short is resumed by running it again: a crash between the
    RESTORE and the DEL leaves both names holding the same value, and the next run then
    deletes the old one (same DUMP payload) instead of reporting a conflict."""
    keys = TenantKeys(tenant_id)
    out = Migration()
    for old in legacy_keys(client, tenant_id):
        new = keys.from_legacy(old)
        with translated(f"move {old!r} to {new!r}"):
            if client.exists(new):
                if client.dump(new) != client.dump(old):
                    out.conflicts.append((old, new))
                    continue
                if not dry_run:
                    client.delete(old)  # moved by a run that died before its DEL
                out.renamed.append((old, new))
                continue
            if not dry_run:
                payload, ttl_ms = client.dump(old), client.pttl(old)
                if payload is None:  # expired or deleted meanwhile: nothing to move
                    continue
                client.restore(new, max(ttl_ms, 0), payload)
                client.delete(old)
        out.renamed.append((old, new))
    return out
