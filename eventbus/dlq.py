"""Dead letters: the per-stream DLQ that operators list, replay and purge.

A dead letter is the original entry's fields, byte for byte, plus reserved ``_dlq_*``
metadata fields (reason, error, where it came from, when it failed) and ``_retry_count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
import structlog

from eventbus import trace
from eventbus.errors import DecodeError, DLQEntryNotFound
from eventbus.keys import validate_group
from eventbus.records import (  # noqa: F401  (re-exported: the DLQ's reasons)
    REASON_BUDGET_EXCEEDED,
    REASON_CYCLE,
    REASON_DECODE_ERROR,
    REASON_HALTED,
    REASON_HANDLER_FAILED,
    REASON_HOP_LIMIT,
    REASON_MANUAL,
    REASON_MAX_DELIVERIES,
    REASON_TOO_LARGE,
    FailureInfo,
    dead_letter_metadata,
)
from eventbus.redis_io import AnyRedis, lossy, lossy_fields, s, translated
from eventbus.schemas import AgentEvent, EventType

log = structlog.get_logger("eventbus.dlq")


@dataclass(frozen=True)
class DeadLetter:
    """One decoded DLQ entry."""

    dlq_id: str
    original_stream: str
    #: The id ``publish`` returned (the entry's id in the main stream), also after retries.
    original_message_id: str
    reason: str
    error_type: str | None
    error: str | None
    traceback: str | None
    retry_count: int
    group: str | None
    consumer: str | None
    failed_at: datetime
    #: The event's own fields (reserved ``_`` fields removed), decoded as UTF-8 with
    #: undecodable bytes shown as U+FFFD.
    fields: dict[str, str]
    #: The decoded event, or None when the entry is not a valid event (see decode_error).
    event: AgentEvent | None
    decode_error: str | None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "event"}
        out["failed_at"] = self.failed_at.isoformat()
        out["event_id"] = self.event.event_id if self.event else self.fields.get("event_id")
        out["event_type"] = self.event.event_type.value if self.event else None
        return out


def _int_or_zero(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:  # a hand-written entry: show it rather than fail the listing
        return 0


def _parse(dlq_id: str, raw: Mapping[bytes, bytes]) -> DeadLetter:
    meta: dict[str, str] = {}
    own: dict[bytes, bytes] = {}
    for k, v in raw.items():
        name = lossy(k)
        if name.startswith("_"):
            meta[name] = lossy(v)
        else:
            own[k] = v
    try:
        event: AgentEvent | None = AgentEvent.from_stream_dict(own)
        decode_error = None
    except DecodeError as exc:
        event, decode_error = None, str(exc)
    failed_ms = meta.get("_dlq_failed_at_ms") or dlq_id.split("-", 1)[0]
    return DeadLetter(
        dlq_id=dlq_id,
        original_stream=meta.get("_dlq_stream", ""),
        original_message_id=meta.get("_dlq_message_id", ""),
        reason=meta.get("_dlq_reason", REASON_MANUAL),
        error_type=meta.get("_dlq_error_type"),
        error=meta.get("_dlq_error"),
        traceback=meta.get("_dlq_traceback"),
        retry_count=_int_or_zero(meta.get("_retry_count")),
        group=meta.get("_dlq_group"),
        consumer=meta.get("_dlq_consumer"),
        failed_at=datetime.fromtimestamp(int(failed_ms) / 1000, tz=timezone.utc),
        fields=lossy_fields(own),
        event=event,
        decode_error=decode_error,
    )


def event_type_value(name_or_value: str) -> str:
    """An event type given by value or by name (``task_failed`` / ``TASK_FAILED``), as
    its value; ValueError naming the known ones otherwise."""
    for member in EventType:
        if name_or_value in (member.value, member.name):
            return member.value
    known = ", ".join(m.name for m in EventType)
    raise ValueError(f"unknown event type {name_or_value!r}; known: {known}")


class DeadLetterQueue:
    """Operator access to a tenant's dead-letter streams (``t:{T}:events:{S}:dlq``)."""

    def __init__(self, redis: AnyRedis, tenant_id: str) -> None:
        from eventbus.bus import TenantEventBus  # the bus owns the client and the scripts

        self._bus = TenantEventBus(redis, tenant_id)
        self.keys = self._bus.keys
        self.tenant_id = tenant_id
        self.redis = self._bus.redis
        self.scripts = self._bus.scripts

    def send_to_dlq(
        self,
        original_stream: str,
        message_id: str,
        data: AgentEvent | Mapping[str, str],
        error: BaseException | str,
        retry_count: int,
        *,
        reason: str = REASON_MANUAL,
        group: str | None = None,
        consumer: str | None = None,
    ) -> str:
        """Add a dead letter by hand (this does not ack anything); returns its DLQ id.

        The consumer does not use this: it dead-letters and acks in one script.
        """
        fields = dict(data.to_stream_dict() if isinstance(data, AgentEvent) else data)
        failure = (
            FailureInfo.from_exception(error)
            if isinstance(error, BaseException)
            else FailureInfo("Error", str(error), "")
        )
        fields.update(
            dead_letter_metadata(
                reason=reason,
                original_stream=original_stream,
                message_id=message_id,
                retry_count=retry_count,
                failure=failure,
                group=group,
                consumer=consumer,
            )
        )
        with translated(f"dead-letter {message_id!r} of {original_stream!r}"):
            return s(self.redis.xadd(self.keys.dlq(original_stream), fields))  # type: ignore[arg-type]

    def list_dlq_messages(
        self, original_stream: str, count: int = 50, start: str = "-"
    ) -> list[DeadLetter]:
        """Dead letters of ``original_stream``, oldest first, decoded, with their errors."""
        with translated(f"list DLQ of {original_stream!r}"):
            rows: Any = self.redis.xrange(self.keys.dlq(original_stream), min=start, count=count)
        return [_parse(s(i), f) for i, f in rows]

    def get(self, original_stream: str, dlq_id: str) -> DeadLetter:
        """One dead letter; :class:`DLQEntryNotFound` if there is none with that id."""
        with translated(f"read DLQ entry {dlq_id!r}"):
            try:
                rows: Any = self.redis.xrange(self.keys.dlq(original_stream), dlq_id, dlq_id)
            except redis.ResponseError as exc:
                raise DLQEntryNotFound(f"invalid DLQ message id {dlq_id!r}: {exc}") from exc
        if not rows:
            raise DLQEntryNotFound(
                f"no dead letter {dlq_id!r} in the DLQ of stream {original_stream!r}"
            )
        return _parse(s(rows[0][0]), rows[0][1])

    def replay_message(self, original_stream: str, dlq_message_id: str) -> str:
        """Put a dead letter back into work with its retry count reset; returns the new id.

        It goes to the retry stream of the group that dead-lettered it (so other groups,
        which handled it, do not see it twice), or to the main stream if no group is known.
        Moving and deleting from the DLQ is one script: a crash leaves exactly one copy.
        """
        letter = self.get(original_stream, dlq_message_id)
        target = self.keys.stream(original_stream)
        if letter.group:
            group = validate_group(letter.group)
            target = self.keys.retry_stream(original_stream, group)
            self._bus.ensure_group(original_stream, group, key=target)
        with translated(f"replay {dlq_message_id!r}"):
            new_id = self.scripts.replay(self.keys.dlq(original_stream), target, dlq_message_id)
        if new_id is None:
            raise DLQEntryNotFound(
                f"no dead letter {dlq_message_id!r} in the DLQ of stream {original_stream!r}"
            )
        if letter.event is not None and letter.event.correlation_id is not None:
            key = self.keys.trace(letter.event.correlation_id)
            record = [trace.REPLAYED, letter.event.event_id, original_stream, "", ""]
            trace.write(self._bus, [(key, record)])
        log.info(
            "dlq_replayed",
            tenant=self.tenant_id,
            stream=original_stream,
            dlq_id=dlq_message_id,
            message_id=new_id,
            group=letter.group,
        )
        return new_id

    def replay_all(
        self, original_stream: str, *, event_type: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Replay every dead letter (or those of one event type, by value or by name, e.g.
        ``"task_failed"`` or ``"TASK_FAILED"``); returns the new ids."""
        if event_type is not None:
            event_type = event_type_value(event_type)
        replayed: list[str] = []
        start = "-"
        while limit is None or len(replayed) < limit:
            batch = self.list_dlq_messages(original_stream, count=100, start=start)
            if not batch:
                break
            for letter in batch:
                if limit is not None and len(replayed) >= limit:
                    break
                if event_type is not None and (
                    letter.event is None or letter.event.event_type.value != event_type
                ):
                    continue
                try:
                    replayed.append(self.replay_message(original_stream, letter.dlq_id))
                except DLQEntryNotFound:
                    continue  # replayed or purged concurrently
            start = "(" + batch[-1].dlq_id
        return replayed

    def count(self, original_stream: str) -> int:
        with translated(f"count DLQ of {original_stream!r}"):
            return int(self.redis.xlen(self.keys.dlq(original_stream)))

    def purge(
        self,
        original_stream: str,
        *,
        ids: list[str] | None = None,
        older_than_s: float | None = None,
    ) -> int:
        """Delete dead letters: the given ids, those older than ``older_than_s`` (by the
        server clock), or with neither, all of them. Returns how many were deleted.

        An empty ``ids`` list deletes nothing (it is a selection that matched nothing).
        """
        if ids is not None and older_than_s is not None:
            raise ValueError("purge takes ids or older_than_s, not both")
        key = self.keys.dlq(original_stream)
        with translated(f"purge DLQ of {original_stream!r}"):
            if ids is not None:
                return int(self.redis.xdel(key, *ids)) if ids else 0
            if older_than_s is None:
                return int(self.redis.xtrim(key, maxlen=0, approximate=False))
            now_s, now_us = self.redis.time()
            cutoff = int(now_s) * 1000 + int(now_us) // 1000 - int(older_than_s * 1000)
            return int(self.redis.xtrim(key, minid=f"{max(cutoff, 0)}-0", approximate=False))

    def apply_retention(
        self, original_stream: str, *, max_age_s: float, max_len: int, min_age_s: float
    ) -> int:
        """Retention for the sweeper: drop letters older than ``max_age_s`` (0 = no age
        limit), then the oldest beyond ``max_len`` (0 = no cap) but never one younger than
        ``min_age_s``. Returns how many were deleted."""
        deleted = self.purge(original_stream, older_than_s=max_age_s) if max_age_s > 0 else 0
        if max_len <= 0:
            return deleted
        key = self.keys.dlq(original_stream)
        with translated(f"cap DLQ of {original_stream!r}"):
            excess = int(self.redis.xlen(key)) - max_len
            if excess <= 0:
                return deleted
            now_s, now_us = self.redis.time()
            protect_ms = int(now_s) * 1000 + int(now_us) // 1000 - int(min_age_s * 1000)
            rows = self.redis.xrange(key, max=f"({max(protect_ms, 0)}-0", count=excess)
            if rows:
                last = s(rows[-1][0])
                ms, seq = last.split("-")
                deleted += int(
                    self.redis.xtrim(key, minid=f"{ms}-{int(seq) + 1}", approximate=False)
                )
        return deleted

    # -- newest-first reads for the web console (eventbus.dlqview) ------------------------

    def raw_newest_first(
        self, original_stream: str, *, end: str = "+", start: str = "-", count: int = 50
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Up to ``count`` entries between ``start`` and ``end`` (ids, ``(`` for an
        exclusive bound), newest first, undecoded: filters look at raw fields cheaply."""
        with translated(f"read DLQ of {original_stream!r}"):
            rows: Any = self.redis.xrevrange(
                self.keys.dlq(original_stream), max=end, min=start, count=count
            )
        return [(s(i), f) for i, f in rows]

    def raw_oldest_first(
        self, original_stream: str, *, start: str = "-", end: str = "+", count: int = 100
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Like :meth:`raw_newest_first`, oldest first."""
        with translated(f"read DLQ of {original_stream!r}"):
            rows: Any = self.redis.xrange(
                self.keys.dlq(original_stream), min=start, max=end, count=count
            )
        return [(s(i), f) for i, f in rows]

    @staticmethod
    def decode(dlq_id: str, raw: Mapping[bytes, bytes]) -> DeadLetter:
        """A raw entry (from :meth:`raw_newest_first`) as a :class:`DeadLetter`."""
        return _parse(dlq_id, raw)
