"""What a tenant's streams hold, read without changing anything: stream info, pending
entries, the registry of streams, plain reads after an id. The read-only half of
:class:`~eventbus.bus.TenantEventBus` (its base class)."""

from __future__ import annotations

from typing import Any

import redis

from eventbus.entries import PendingEntry, group_row, iter_entries
from eventbus.errors import StreamNotFound
from eventbus.keys import TenantKeys, validate_group
from eventbus.redis_io import AnyRedis, max_block_ms, s, translated


class Introspection:
    """Read-only queries over one tenant's keys (``redis``, ``keys``, ``tenant_id`` are
    set by the bus)."""

    redis: AnyRedis
    keys: TenantKeys
    tenant_id: str

    def get_stream_info(self, stream: str) -> dict[str, Any]:
        """XINFO STREAM plus the groups, decoded: length, first/last ids, groups (lag...).

        Raises ``KeyError`` (``StreamNotFound``) if the stream does not exist.
        """
        key = self.keys.stream(stream)
        with translated(f"info of {stream!r}"):
            try:
                info = self.redis.xinfo_stream(key)
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    raise StreamNotFound(
                        f"stream {stream!r} of tenant {self.tenant_id!r} does not exist"
                    ) from exc
                raise
            groups = self.redis.xinfo_groups(key)
        out: dict[str, Any] = {
            "stream": stream,
            "key": key,
            "length": int(info["length"]),
            "last_generated_id": s(info["last-generated-id"]),
            "first_entry_id": s(info["first-entry"][0]) if info.get("first-entry") else None,
            "last_entry_id": s(info["last-entry"][0]) if info.get("last-entry") else None,
            "groups": [group_row(g) for g in groups],
        }
        return out

    def get_pending(self, stream: str, group: str, count: int = 100) -> list[PendingEntry]:
        """Pending (delivered, unacknowledged) entries of ``group``, oldest first."""
        validate_group(group)
        with translated(f"pending of {stream!r}/{group!r}"):
            rows = self.redis.xpending_range(
                self.keys.stream(stream), group, min="-", max="+", count=count
            )
        return [
            PendingEntry(
                s(r["message_id"]),
                s(r["consumer"]),
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows
        ]

    def stream_known(self, stream: str) -> bool:
        """True if the stream is registered, or it or its DLQ exists."""
        with translated(f"look up stream {stream!r}"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.sismember(self.keys.registry(), stream)
            pipe.exists(self.keys.stream(stream), self.keys.dlq(stream))
            registered, existing = pipe.execute()
        return bool(registered or existing)

    def last_id(self, stream: str) -> str:
        """The stream's last generated id ("0-0" if it does not exist)."""
        try:
            return str(self.get_stream_info(stream)["last_generated_id"])
        except StreamNotFound:
            return "0-0"

    def read_after(
        self, stream: str, after: str, *, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries after id ``after`` (plain XREAD: no group, nothing acknowledged)."""
        key = self.keys.stream(stream)
        block = None if block_ms is None else max_block_ms(self.redis, block_ms)
        with translated(f"read {stream!r}"):
            reply: Any = self.redis.xread({key: after}, count=count, block=block)
        return [(e.message_id, e.fields) for e in iter_entries(reply)]

    def streams(self) -> list[str]:
        """Names of this tenant's streams (from the registry set; no SCAN needed)."""
        with translated("list streams"):
            names = self.redis.smembers(self.keys.registry())
        return sorted(s(n) for n in names)
