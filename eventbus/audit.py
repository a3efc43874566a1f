"""The audit stream: one entry per operator action (who, what, which ids, when), kept in
``t:{tenant}:audit`` (capped) so that Redis's ACLs guard it like the tenant's other keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventbus.keys import TenantKeys
from eventbus.redis_io import AnyRedis, bus_client, s, translated

AUDIT_MAXLEN = 100_000  # approximate cap of the audit stream (MAXLEN ~)
IDS_MAX = 1000  # ids written into one audit entry (a batch is far smaller)


@dataclass(frozen=True)
class AuditEntry:
    audit_id: str
    at: datetime
    actor: str
    action: str
    stream: str
    ids: list[str]
    count: int
    detail: str


class AuditLog:
    """Append and read the tenant's audit stream."""

    def __init__(self, redis: AnyRedis, tenant_id: str, maxlen: int = AUDIT_MAXLEN) -> None:
        self.keys = TenantKeys(tenant_id)
        self.redis = bus_client(redis)
        self.maxlen = maxlen

    def record(
        self, *, actor: str, action: str, stream: str, ids: list[str], count: int, detail: str = ""
    ) -> str:
        """Append one entry (the id is its time, by the Redis clock); returns the id."""
        fields: dict[Any, Any] = {
            "actor": actor,
            "action": action,
            "stream": stream,
            "ids": " ".join(ids[:IDS_MAX]),
            "count": str(count),
            "detail": detail,
        }
        with translated("write the audit stream"):
            new_id = self.redis.xadd(
                self.keys.audit(),
                fields,
                maxlen=self.maxlen,
                approximate=True,
            )
        return s(new_id)

    def recent(self, count: int = 50, before: str | None = None) -> list[AuditEntry]:
        """The newest entries first, older than ``before`` (an audit id) if given."""
        end = "(" + before if before else "+"
        with translated("read the audit stream"):
            rows: Any = self.redis.xrevrange(self.keys.audit(), max=end, min="-", count=count)
        return [_entry(s(i), f) for i, f in rows]


def _entry(audit_id: str, raw: dict[bytes, bytes]) -> AuditEntry:
    def get(name: str) -> str:
        return raw.get(name.encode(), b"").decode("utf-8", "replace")

    ids = get("ids").split()
    try:
        count = int(get("count") or len(ids))
    except ValueError:
        count = len(ids)
    ms = int(audit_id.split("-", 1)[0])
    return AuditEntry(
        audit_id=audit_id,
        at=datetime.fromtimestamp(ms / 1000, tz=timezone.utc),
        actor=get("actor"),
        action=get("action"),
        stream=get("stream"),
        ids=ids,
        count=count,
        detail=get("detail"),
    )
