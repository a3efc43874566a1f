"""Outcomes of a delivery that did not succeed: the retry policy's decision (pure) carried
out by the group's move scripts: retry scheduled and acked, or dead-lettered and acked, in
one script each. Also the one reclaim loop (the consumer's own and the pool's reclaimer),
since a reclaimed poison pill is such an outcome.

If a move cannot be written (Redis refuses it or is unreachable), the entry stays pending
and the outcome is reported as ``UNWRITTEN``: the caller may carry the same plan out again
later (the consumer does), instead of calling the handler again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from eventbus.errors import BusConnectionError, BusRefused
from eventbus.groupstream import Claim, GroupStream
from eventbus.handler import OutcomeCallback
from eventbus.intake import poison
from eventbus.records import REASON_HANDLER_FAILED, FailureInfo, dead_letter_metadata
from eventbus.redis_io import error_text
from eventbus.retry import RetryPolicy
from eventbus.scripts import MoveStatus


class Result(Enum):
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    NOT_OURS = "not_ours"  # no longer pending on this consumer: someone else decides
    GONE = "gone"  # deleted from the stream meanwhile: nothing left to move
    UNWRITTEN = "unwritten"  # Redis refused or was unreachable: still pending


@dataclass(frozen=True)
class Outcome:
    result: Result
    delay_s: float = 0.0


@dataclass(frozen=True)
class Planned:
    """A decided move of one delivery, ready to be carried out (again, if need be)."""

    key: str
    message_id: str
    consumer: str
    #: "retry" (then ``delay_s`` and ``retry_count``, the count the retry will carry) or
    #: "dead_letter" (then ``reason``, ``failure`` and ``metadata``).
    action: str
    delay_s: float = 0.0
    retry_count: int = 0
    reason: str = ""
    failure: FailureInfo | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Outcomes:
    """The failure paths of one group."""

    def __init__(self, group: GroupStream, on_outcome: OutcomeCallback | None = None) -> None:
        self.group = group
        self.log = group.log
        self.on_outcome = on_outcome  # told of retries, dead letters and reclaims (metrics)

    def _tell(self, what: str, reason: str = "") -> None:
        if self.on_outcome is not None:
            self.on_outcome(what, reason)

    # -- planning (no I/O) ---------------------------------------------------------------

    def plan_failure(
        self,
        key: str,
        message_id: str,
        consumer: str,
        *,
        retry_count: int,
        failure: FailureInfo,
        policy: RetryPolicy,
        error: BaseException | None = None,
        reason: str = REASON_HANDLER_FAILED,
    ) -> Planned:
        """A handler attempt failed: a retry, or a dead letter when the policy gives up."""
        decision = policy.decide(retry_count, error)
        if decision.action == "dead_letter":
            return self.plan_dead_letter(key, message_id, consumer, reason=reason, failure=failure)
        return Planned(
            key,
            message_id,
            consumer,
            "retry",
            delay_s=decision.delay_s,
            retry_count=decision.retry_count,
            failure=failure,
        )

    def plan_dead_letter(
        self, key: str, message_id: str, consumer: str, *, reason: str, failure: FailureInfo
    ) -> Planned:
        """A dead letter; its retry count is the entry's own (read by the script)."""
        meta = dead_letter_metadata(
            reason=reason,
            original_stream=self.group.stream,
            message_id=message_id,
            failure=failure,
            group=self.group.group,
            consumer=consumer,
        )
        return Planned(
            key, message_id, consumer, "dead_letter", reason=reason, failure=failure, metadata=meta
        )

    # -- carrying out --------------------------------------------------------------------

    def carry_out(self, plan: Planned, *, again: bool = False) -> Outcome:
        """Write the move. ``again``: a retry of a plan that could not be written before
        (logged quietly)."""
        try:
            if plan.action == "retry":
                moved = self.group.schedule_retry(
                    plan.key,
                    plan.message_id,
                    plan.consumer,
                    delay_ms=int(plan.delay_s * 1000),
                    retry_count=plan.retry_count,
                )
            else:
                moved = self.group.dead_letter(
                    plan.key, plan.message_id, plan.consumer, plan.metadata
                )
        except (BusRefused, BusConnectionError) as err:
            event = "retry_schedule_failed" if plan.action == "retry" else "dead_letter_failed"
            level = self.log.debug if again else self.log.error
            level(event, error=error_text(err), left_pending=True, message_id=plan.message_id)
            return Outcome(Result.UNWRITTEN)
        return self._report(plan, moved.status, moved.value)

    def _report(self, plan: Planned, status: MoveStatus, value: object) -> Outcome:
        if status is MoveStatus.NOT_OURS:
            self.log.warning(
                "outcome_skipped",
                reason="no longer pending on this consumer",
                message_id=plan.message_id,
            )
            return Outcome(Result.NOT_OURS)
        if status is MoveStatus.GONE:
            self.log.warning(
                "outcome_entry_gone",
                reason="deleted from the stream meanwhile",
                message_id=plan.message_id,
            )
            return Outcome(Result.GONE)
        failure = plan.failure or FailureInfo("", "", "")
        if plan.action == "retry":
            self.log.warning(
                "retry_scheduled",
                delay_s=plan.delay_s,
                next_attempt=plan.retry_count + 1,
                error=failure.message,
                error_type=failure.error_type,
                message_id=plan.message_id,
            )
            self._tell(Result.RETRIED.value)
            return Outcome(Result.RETRIED, plan.delay_s)
        self.log.error(
            "dead_lettered",
            reason=plan.reason,
            dlq_id=value,
            error_type=failure.error_type,
            error=failure.message,
            message_id=plan.message_id,
        )
        self._tell(Result.DEAD_LETTERED.value, plan.reason)
        return Outcome(Result.DEAD_LETTERED)

    def fail(
        self,
        key: str,
        message_id: str,
        consumer: str,
        *,
        retry_count: int,
        failure: FailureInfo,
        policy: RetryPolicy,
        error: BaseException | None = None,
    ) -> Outcome:
        """Plan and carry out the outcome of a failed attempt."""
        plan = self.plan_failure(
            key,
            message_id,
            consumer,
            retry_count=retry_count,
            failure=failure,
            policy=policy,
            error=error,
        )
        return self.carry_out(plan)

    # -- the reclaim loop ----------------------------------------------------------------

    def reclaim(
        self, assign: Callable[[], str], *, min_idle_ms: int, max_deliveries: int
    ) -> list[Claim]:
        """Take over entries idle for ``min_idle_ms`` on any consumer, giving each chunk to
        ``assign()``; poison pills (delivered more than ``max_deliveries`` times) are
        dead-lettered at once. Returns the claims handed to consumers."""
        kept: list[Claim] = []
        for claim in self.group.reclaim(assign, min_idle_ms=min_idle_ms):
            if claim.deliveries > max_deliveries:
                rejected = poison(claim.deliveries, max_deliveries)
                plan = self.plan_dead_letter(
                    claim.key,
                    claim.message_id,
                    claim.consumer,
                    reason=rejected.reason,
                    failure=rejected.failure,
                )
                self.carry_out(plan)
            else:
                kept.append(claim)
                self._tell("reclaimed")
        if kept:
            by_consumer: dict[str, int] = {}
            for claim in kept:
                by_consumer[claim.consumer] = by_consumer.get(claim.consumer, 0) + 1
            self.log.warning("reclaimed", count=len(kept), idle_ms=min_idle_ms, to=by_consumer)
        return kept
