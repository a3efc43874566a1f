"""Outcomes of a failed delivery, carried out atomically: retry scheduled and acked
(``ack_and_retry.lua``) or dead-lettered and acked (``ack_and_dead_letter.lua``).

Used by the consumer, and by a pool's supervisor when it kills a hung handler on a
worker's behalf. If the move cannot be written, the entry stays pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import redis

from eventbus.bus import TenantEventBus
from eventbus.records import REASON_HANDLER_FAILED, FailureInfo, dead_letter_metadata
from eventbus.redis_io import error_text
from eventbus.retry import RetryPolicy

Result = Literal["retried", "dead_lettered", "not_ours", "gone", "failed"]


@dataclass(frozen=True)
class Outcome:
    result: Result
    delay_s: float = 0.0


class Outcomes:
    """The failure paths of one (stream, group)."""

    def __init__(self, bus: TenantEventBus, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        self._scripts = bus.scripts
        self._schedule = bus.keys.schedule(stream, group)
        self._dlq = bus.keys.dlq(stream)

    def fail(
        self,
        key: str,
        message_id: str,
        consumer: str,
        *,
        retry_count: int,
        failure: FailureInfo,
        policy: RetryPolicy,
        log: Any,
        error: BaseException | None = None,
        reason: str = REASON_HANDLER_FAILED,
    ) -> Outcome:
        """A handler attempt failed: schedule the retry, or dead-letter when the policy
        gives up."""
        decision = policy.decide(retry_count, error)
        if decision.action == "dead_letter":
            return self.dead_letter(
                key,
                message_id,
                consumer,
                reason=reason,
                retry_count=retry_count,
                failure=failure,
                log=log,
            )
        try:
            due = self._scripts.ack_and_retry(
                key,
                self._schedule,
                group=self.group,
                message_id=message_id,
                consumer=consumer,
                delay_ms=int(decision.delay_s * 1000),
                retry_count=decision.retry_count,
            )
        except redis.RedisError as err:
            log.error("retry_schedule_failed", error=error_text(err), left_pending=True)
            return Outcome("failed")
        if due == 0:
            log.warning("outcome_skipped", reason="no longer pending on this consumer")
            return Outcome("not_ours")
        if due < 0:
            log.warning("retry_entry_gone", reason="deleted from the stream meanwhile")
            return Outcome("gone")
        log.warning(
            "retry_scheduled",
            delay_s=decision.delay_s,
            next_attempt=decision.retry_count + 1,
            error=failure.message,
            error_type=failure.error_type,
        )
        return Outcome("retried", decision.delay_s)

    def dead_letter(
        self,
        key: str,
        message_id: str,
        consumer: str,
        *,
        reason: str,
        retry_count: int,
        failure: FailureInfo,
        log: Any,
    ) -> Outcome:
        meta = dead_letter_metadata(
            reason=reason,
            original_stream=self.stream,
            message_id=message_id,
            retry_count=retry_count,
            failure=failure,
            group=self.group,
            consumer=consumer,
        )
        try:
            result = self._scripts.ack_and_dead_letter(
                key,
                self._dlq,
                group=self.group,
                message_id=message_id,
                consumer=consumer,
                metadata=meta,
            )
        except redis.RedisError as err:
            log.error("dead_letter_failed", reason=reason, error=error_text(err), left_pending=True)
            return Outcome("failed")
        if result == 0:
            log.warning("outcome_skipped", reason="no longer pending on this consumer")
            return Outcome("not_ours")
        if result == -1:
            log.warning("dead_letter_entry_gone", reason=reason)
            return Outcome("gone")
        log.error(
            "dead_lettered",
            reason=reason,
            dlq_id=result,
            retry_count=retry_count,
            error_type=failure.error_type,
            error=failure.message,
        )
        return Outcome("dead_lettered")
