"""Group (mechanism): one consumer group of one tenant's stream, and everything Redis does
for it: its keys, groups, reads, acks, claims, the retry schedule, the move scripts, trims
and counts.

:class:`GroupStream` is the one object per (tenant, stream, group) that the consumer, the
outcomes, the pool's reclaimer and sweeper and ``eventbus stats`` talk to. It is the only
place (with :mod:`eventbus.redis_io` and the bus's publish path) that catches redis-py
exceptions: callers see the bus's errors (:mod:`eventbus.errors`) and named results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import redis
import structlog

from eventbus.entries import Acks, Claim, RawEntry, group_row, iter_entries
from eventbus.errors import GroupMissing
from eventbus.keys import validate_consumer, validate_group
from eventbus.redis_io import AnyRedis, error_text, max_block_ms, s, translate, translated
from eventbus.scripts import Moved

if TYPE_CHECKING:
    from eventbus.bus import TenantEventBus


class GroupStream:
    """The mechanism of one (tenant, stream, group): keys, scripts, reads, acks, moves.

    Its two streams are the tenant's stream and the group's retry stream (due retries of
    this group only); entries of both are handled alike. Dead letters go to ``dlq_key``
    (by default the stream's DLQ).
    """

    def __init__(
        self, bus: TenantEventBus, stream: str, group: str, *, dlq_key: str | None = None
    ) -> None:
        keys = bus.keys
        self.bus = bus
        self.tenant_id = bus.tenant_id
        self.stream = stream
        self.group = validate_group(group)
        self.main = keys.stream(stream)
        self.retry = keys.retry_stream(stream, group)
        self.schedule = keys.schedule(stream, group)
        self.dlq = dlq_key or keys.dlq(stream)
        self.keys = (self.main, self.retry)
        self._r = bus.redis
        self._scripts = bus.scripts
        self._seen = False  # the groups existed once: creating them again is news
        self.log = structlog.get_logger("eventbus.group").bind(
            tenant=self.tenant_id, stream=stream, group=group
        )

    def _what(self, action: str) -> str:
        return f"{action} ({self.tenant_id}/{self.stream}/{self.group})"

    # -- groups ------------------------------------------------------------------------

    def ensure(self, cause: BaseException | None = None) -> bool:
        """Create the group on the stream and on its retry stream (from the very start, with
        the streams if missing). True if either was created now; a group that existed
        before and had to be created again is logged as ``consumer_group_recreated``."""
        created = self.bus.ensure_group(self.stream, self.group)
        created = self.bus.ensure_group(self.stream, self.group, key=self.retry) or created
        if created and self._seen:
            self.log.error(
                "consumer_group_recreated",
                error=error_text(cause) if cause else "group missing",
                warning="the group or stream vanished (Redis restarted without persistence, "
                "or they were deleted): unacknowledged entries may be lost; reading from "
                "the start",
            )
        self._seen = True
        return created

    def ensure_once(self) -> None:
        """:meth:`ensure`, unless this object has seen the groups already."""
        if not self._seen:
            self.ensure()

    # -- reading -----------------------------------------------------------------------

    def read_new(
        self, consumer: str, *, count: int, block_ms: int | None, acks: Acks | None = None
    ) -> list[RawEntry]:
        """New entries of both streams for ``consumer`` (XREADGROUP ``>``); the ``acks``
        (``{key: [id, ...]}``) go first, in the same round trip."""
        wanted = {self.main: ">", self.retry: ">"}
        return self.read(consumer, wanted, count=count, block_ms=block_ms, acks=acks)

    def read_own(self, consumer: str, key: str, after: str, *, count: int) -> list[RawEntry]:
        """Entries of ``key`` already delivered to ``consumer`` and not acked, after id
        ``after`` (each read counts as a delivery of what it returns)."""
        return self.read(consumer, {key: after}, count=count, block_ms=None)

    def read(
        self,
        consumer: str,
        streams: Mapping[str, str],
        *,
        count: int,
        block_ms: int | None,
        acks: Acks | None = None,
    ) -> list[RawEntry]:
        """XREADGROUP of ``{key: id}`` (keys of this group), acks first."""
        block = None if block_ms is None else max_block_ms(self._r, block_ms)
        wanted: Any = dict(streams)
        with translated(self._what(f"read as {consumer!r}")):
            if not acks:
                reply = self._r.xreadgroup(self.group, consumer, wanted, count=count, block=block)
            else:
                pipe = self._r.pipeline(transaction=False)
                for key, ids in acks.items():
                    pipe.xack(key, self.group, *ids)
                pipe.xreadgroup(self.group, consumer, wanted, count=count, block=block)
                reply = pipe.execute()[-1]
        return list(iter_entries(reply))

    def delivery_count(self, consumer: str, key: str, message_id: str) -> int:
        """How often the entry was delivered (1 if it is not pending on ``consumer``)."""
        with translated(self._what("pending")):
            rows = self._r.xpending_range(
                key, self.group, min=message_id, max=message_id, count=1, consumername=consumer
            )
        return int(rows[0]["times_delivered"]) if rows else 1

    def ack(self, acks: Acks) -> None:
        """XACK ``{key: [id, ...]}`` (idempotent)."""
        with translated(self._what("ack")):
            if len(acks) == 1:
                ((key, ids),) = acks.items()
                self._r.xack(key, self.group, *ids)
                return
            pipe = self._r.pipeline(transaction=False)
            for key, ids in acks.items():
                pipe.xack(key, self.group, *ids)
            pipe.execute()

    def refresh_claim(self, consumer: str, key: str, message_id: str) -> None:
        """Reset the entry's idle time without counting a delivery (XCLAIM 0 JUSTID), so the
        reclaimer leaves a long-running delivery alone."""
        with translated(self._what("refresh claim")):
            self._r.xclaim(key, self.group, consumer, 0, [message_id], justid=True)

    # -- retries -----------------------------------------------------------------------

    def promote_due(self, limit: int) -> tuple[int, int]:
        """Move due retries into the retry stream; (moved, ms until the next is due or -1)."""
        with translated(self._what("promote due retries")):
            return self._scripts.promote_due(self.schedule, self.retry, limit)

    def schedule_retry(
        self, key: str, message_id: str, consumer: str, *, delay_ms: int, retry_count: int
    ) -> Moved:
        """Write the retry into the schedule and ack, in one script (ack_and_retry.lua)."""
        with translated(self._what(f"schedule retry of {message_id}")):
            return self._scripts.ack_and_retry(
                key,
                self.schedule,
                group=self.group,
                message_id=message_id,
                consumer=consumer,
                delay_ms=delay_ms,
                retry_count=retry_count,
            )

    def dead_letter(
        self, key: str, message_id: str, consumer: str, metadata: dict[str, str]
    ) -> Moved:
        """Copy the entry to the DLQ and ack, in one script (ack_and_dead_letter.lua)."""
        with translated(self._what(f"dead-letter {message_id}")):
            return self._scripts.ack_and_dead_letter(
                key,
                self.dlq,
                group=self.group,
                message_id=message_id,
                consumer=consumer,
                metadata=metadata,
            )

    # -- recovery ----------------------------------------------------------------------

    def reclaim(
        self, assign: Callable[[], str], *, min_idle_ms: int, count: int = 100
    ) -> Iterator[Claim]:
        """Take over entries idle for ``min_idle_ms`` on any consumer, in both streams; each
        chunk of up to ``count`` goes to ``assign()`` (JUSTID: not counted as a delivery).
        Entries deleted from the stream meanwhile are dropped and logged."""
        for key in self.keys:
            start = "0-0"
            while True:
                target = validate_consumer(assign())
                with translated(self._what("reclaim")):
                    start, claimed, deleted = self._scripts.reclaim(
                        key,
                        group=self.group,
                        consumer=target,
                        min_idle_ms=min_idle_ms,
                        start=start,
                        count=count,
                    )
                for message_id in deleted:
                    self.log.warning("reclaim_entry_deleted", message_id=message_id, key=key)
                for message_id, deliveries in claimed:
                    yield Claim(key, message_id, deliveries, target)
                if start == "0-0":
                    break

    # -- housekeeping ------------------------------------------------------------------

    def trim_acked(self, maxlen: int) -> int:
        """Trim acknowledged history of the stream to about ``maxlen`` (0: leave the stream)
        and of the retry stream to nothing; unread or pending entries are never removed."""
        with translated(self._what("trim")):
            trimmed = self._scripts.trim_acked(self.main, maxlen) if maxlen > 0 else 0
            return trimmed + self._scripts.trim_acked(self.retry, 0)

    def consumers(self, key: str) -> list[dict[str, Any]]:
        """XINFO CONSUMERS of the group on ``key``: name, pending, idle_ms, inactive_ms
        (Redis >= 7.2 only, else None). Empty if the stream or group does not exist."""
        try:
            with translated(self._what("consumers")):
                try:
                    rows = self._r.xinfo_consumers(key, self.group)
                except redis.ResponseError as exc:
                    if "no such key" in str(exc).lower():
                        return []
                    raise
        except GroupMissing:
            return []
        return [
            {
                "name": s(c["name"]),
                "pending": int(c["pending"]),
                "idle_ms": int(c["idle"]),
                "inactive_ms": None if c.get("inactive") is None else int(c["inactive"]),
            }
            for c in rows
        ]

    def remove_idle_consumers(self, keep: Iterable[str], *, min_idle_ms: int) -> list[str]:
        """Remove consumer names (not in ``keep``) idle for ``min_idle_ms`` with nothing
        pending; check and removal are one script, so nothing pending is ever dropped."""
        keep = set(keep)
        removed = []
        for key in self.keys:
            for c in self.consumers(key):
                if c["name"] in keep or c["pending"] > 0:
                    continue
                with translated(self._what("remove idle consumer")):
                    done = self._scripts.delete_idle_consumer(
                        key, group=self.group, consumer=c["name"], min_idle_ms=min_idle_ms
                    )
                if done:
                    removed.append(c["name"])
                    self.log.info("consumer_removed", consumer=c["name"], key=key)
        return removed

    def group_row(self, key: str) -> dict[str, Any] | None:
        """This group's XINFO GROUPS row on ``key`` (lag is None when Redis cannot tell),
        or None if the stream or the group does not exist."""
        with translated(self._what("groups")):
            try:
                rows = self._r.xinfo_groups(key)
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    return None
                raise
        for row in rows:
            if s(row["name"]) == self.group:
                return group_row(row)
        return None

    def scheduled(self) -> int:
        """Retries waiting for their time."""
        with translated(self._what("count scheduled retries")):
            return int(self._r.zcard(self.schedule))

    def counts(self) -> dict[str, int]:
        """``backlog`` (undelivered, both streams), ``pending``, ``scheduled_retries`` and
        ``dlq_size``: the numbers of the sweep log line."""
        backlog = pending = 0
        for key in self.keys:
            row = self.group_row(key)
            if row is not None:
                backlog += row["lag"] or 0
                pending += row["pending"]
        with translated(self._what("count dead letters")):
            dlq_size = int(self._r.xlen(self.dlq))
        return {
            "backlog": backlog,
            "pending": pending,
            "scheduled_retries": self.scheduled(),
            "dlq_size": dlq_size,
        }

    # -- gauges (metrics) --------------------------------------------------------------

    def server_time_s(self) -> float:
        """Redis's clock (TIME), in seconds since the epoch."""
        with translated(self._what("time")):
            sec, usec = self._r.time()
        return int(sec) + int(usec) / 1e6

    def lag(self, key: str, row: Mapping[str, Any] | None) -> int:
        """Entries of ``key`` not yet delivered to the group. XINFO GROUPS reports lag as
        nil after an XDEL in that range; then the entries after the group's last delivered
        id are counted (up to ``LAG_FALLBACK_CAP``, a lower bound past it)."""
        if row is None:
            return 0
        if row["lag"] is not None:
            return int(row["lag"])
        with translated(self._what("count lag")):
            if row["last_delivered_id"] in ("0-0", "0"):
                return int(self._r.xlen(key))
            ids = self._r.xrange(key, "(" + row["last_delivered_id"], "+", LAG_FALLBACK_CAP)
        return len(ids or [])

    def oldest_pending_id(self, key: str) -> str | None:
        """The smallest id pending in the group on ``key`` (XPENDING summary), or None."""
        try:
            with translated(self._what("pending summary")):
                summary = self._r.xpending(key, self.group)
        except GroupMissing:
            return None
        return s(summary["min"]) if summary and summary.get("min") else None

    def gauges(self) -> dict[str, float]:
        """The group's numbers for a metrics scrape: ``lag`` (main stream), ``pending``
        (both streams), ``oldest_pending_age_s`` (Redis clock minus the oldest pending id's
        time; 0 when nothing is pending), ``scheduled_retries``, ``retry_backlog`` (due
        retries not yet read) and ``dlq_depth``."""
        main, retry = self.group_row(self.main), self.group_row(self.retry)
        pending = sum(row["pending"] for row in (main, retry) if row is not None)
        oldest: float | None = None
        for key, row in ((self.main, main), (self.retry, retry)):
            if row is not None and row["pending"]:
                found = self.oldest_pending_id(key)
                if found is not None:
                    t = int(found.partition("-")[0]) / 1000
                    oldest = t if oldest is None else min(oldest, t)
        age = 0.0 if oldest is None else max(0.0, self.server_time_s() - oldest)
        with translated(self._what("count dead letters")):
            dlq = int(self._r.xlen(self.dlq))
        return {
            "lag": self.lag(self.main, main),
            "pending": pending,
            "oldest_pending_age_s": age,
            "scheduled_retries": self.scheduled(),
            "retry_backlog": self.lag(self.retry, retry),
            "dlq_depth": dlq,
        }


#: Most entries counted one by one when Redis cannot tell a group's lag (after an XDEL).
LAG_FALLBACK_CAP = 10_000


def create_group(client: AnyRedis, key: str, group: str, registry: tuple[str, str] | None) -> bool:
    """XGROUP CREATE ``group`` on ``key`` at ``0`` (MKSTREAM); True if created now. The one
    place that tells "it exists already" apart (BUSYGROUP, and under OOM, where Redis
    refuses XGROUP CREATE even for an existing group while reads and acks still work, so a
    worker started then must still consume). ``registry``: (set key, stream name) to list
    the stream in. Raises redis-py errors (callers translate)."""
    try:
        client.xgroup_create(key, group, id="0", mkstream=True)
        if registry is not None:
            client.sadd(*registry)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc) and not _group_exists(client, key, group):
            raise
        return False
    return True


def _group_exists(client: AnyRedis, key: str, group: str) -> bool:
    try:
        groups = client.xinfo_groups(key)
    except redis.ResponseError:  # no such key
        return False
    return any(s(g["name"]) == group for g in groups)


__all__ = [
    "Claim",
    "GroupStream",
    "RawEntry",
    "create_group",
    "group_row",
    "iter_entries",
    "translate",
]
