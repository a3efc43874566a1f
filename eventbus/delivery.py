"""Handle one delivery: the intake screen, the handler, then the ack or the outcome
(retry scheduled / dead-lettered). An outcome Redis refused (out of memory...) is kept and
written again later: the handler ran, so its attempt is neither repeated nor counted again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from eventbus import handler as handlers
from eventbus import logs, trace, tracing
from eventbus.acks import AckBuffer
from eventbus.groupstream import RawEntry
from eventbus.guards import chain_text
from eventbus.handler import DeliveryObserver, Handler, HandlerContext, OutcomeCallback
from eventbus.intake import Rejected, screen
from eventbus.logs import log_context
from eventbus.outcomes import Outcome, Planned, Result
from eventbus.records import REASON_DECODE_ERROR, FailureInfo, retry_count_of
from eventbus.requests import STOP_REASONS, STOPPED_CONFIRM_S, StoppedCache
from eventbus.schemas import AgentEvent
from eventbus.trace import TraceWriter

if TYPE_CHECKING:
    from eventbus.consumer import EventConsumer


class Deliveries:
    """The per-delivery half of an :class:`~eventbus.consumer.EventConsumer` (the loop
    is the other half): what happens to one entry once it is read."""

    def __init__(
        self,
        consumer: EventConsumer,
        acks: AckBuffer,
        observers: Sequence[DeliveryObserver],
        *,
        on_retry: Callable[[float], None],
        on_outcome: OutcomeCallback | None = None,
    ) -> None:
        self._c = consumer
        self._acks = acks
        self._observers = tuple(observers)
        self._on_retry = on_retry  # a retry is due after this many seconds
        self._on_outcome = on_outcome  # told what became of each delivery (metrics)
        self._unwritten: dict[tuple[str, str], Planned] = {}  # outcomes Redis refused
        self._stopped = StoppedCache(consumer.bus.requests)  # halted / spent requests
        self.trace = TraceWriter(consumer.bus, consumer.stream, consumer.group)
        self._retry_key = consumer.group_stream.retry

    def is_unwritten(self, key: str, message_id: str) -> bool:
        return (key, message_id) in self._unwritten

    def has_unwritten(self) -> bool:
        return bool(self._unwritten)

    def forget_unwritten(self) -> None:
        self._unwritten.clear()

    def handle(self, entry: RawEntry, deliveries: int, handler: Handler) -> None:
        if deliveries > 1 or entry.key == self._retry_key:
            # A redelivery or a retry may be what killed or hung a worker before: ack what
            # is done first, or the events before it are handled again at a crash.
            self._acks.flush()
        retry_count = retry_count_of(entry.fields)
        if deliveries > 1:
            self._tell("redelivered")
        verdict = self._screen(entry, deliveries, self._stopped.current())
        if isinstance(verdict, Rejected) and verdict.reason in STOP_REASONS:
            # confirm with a fresh copy: the request may have been resumed meanwhile
            verdict = self._screen(entry, deliveries, self._stopped.current(STOPPED_CONFIRM_S))
        if isinstance(verdict, Rejected):
            self._reject(entry, verdict, retry_count)
            return
        # The delivery's log context (every line of it, the handler's own included).
        context = {
            "consumer": self._c.consumer_name,
            "message_id": entry.message_id,
            "attempt": retry_count + 1,
            "event_id": verdict.event_id,
            "correlation_id": verdict.correlation_id,
        }
        tracer = tracing.tracer()
        if tracer is None:  # tracing off: nothing around the handler call but the context
            token = logs.bind(context)
            try:
                self._run_handler(entry, verdict, deliveries, retry_count, handler)
            finally:
                logs.reset(token)
            return
        span = tracing.unsampled_parent(entry.fields) or tracing.process_span(
            tracer,
            entry.fields,
            stream=self._c.stream,
            group=self._c.group,
            consumer=self._c.consumer_name,
            message_id=entry.message_id,
            deliveries=deliveries,
            retry_count=retry_count,
            correlation_id=verdict.correlation_id,
        )
        context["trace_id"] = span.trace_id
        token = logs.bind(context)
        try:
            with span:
                self._run_handler(entry, verdict, deliveries, retry_count, handler)
        finally:
            logs.reset(token)

    def _reject(self, entry: RawEntry, verdict: Rejected, retry_count: int) -> None:
        """Dead-letter a delivery the intake refused (the handler is not called)."""
        self._c.stats[f"rejected_{verdict.reason}"] += 1
        if verdict.reason == REASON_DECODE_ERROR:
            self._tell("decode_error")
        context: dict[str, object] = {
            "consumer": self._c.consumer_name,
            "message_id": entry.message_id,
            "attempt": retry_count + 1,
        }
        if verdict.event is not None:  # an agent guard's refusal: log its request and chain
            context["correlation_id"] = verdict.event.correlation_id
            context["call_chain"] = chain_text(verdict.event.call_chain)
        with log_context(**context):
            plan = self._c.outcomes.plan_dead_letter(
                entry.key,
                entry.message_id,
                self._c.consumer_name,
                reason=verdict.reason,
                failure=verdict.failure,
            )
            if self._carry_out(plan).result is Result.DEAD_LETTERED:
                self.trace.note(verdict.event, trace.DEAD_LETTERED, verdict.reason)

    def _screen(
        self, entry: RawEntry, deliveries: int, stopped: dict[str, str]
    ) -> AgentEvent | Rejected:
        settings = self._c.bus.settings
        return screen(
            entry.fields,
            deliveries,
            max_deliveries=self._c.settings.max_deliveries,
            max_bytes=settings.max_event_bytes,
            tenant_id=self._c.bus.tenant_id,
            max_hops=settings.max_hops,
            max_visits=settings.max_visits,
            stopped=stopped,
        )

    def _run_handler(
        self,
        entry: RawEntry,
        event: AgentEvent,
        deliveries: int,
        retry_count: int,
        handler: Handler,
    ) -> None:
        def context() -> HandlerContext:
            return HandlerContext(
                message_id=entry.message_id,
                tenant=self._c.bus.tenant_id,
                stream=self._c.stream,
                group=self._c.group,
                consumer=self._c.consumer_name,
                delivery_count=deliveries,
                retry_count=retry_count,
                log=self._c.log,
                bus=self._c.bus,
                correlation_id=event.correlation_id,
            )

        for observer in self._observers:
            observer.started(entry.key, entry.message_id, retry_count)
        try:
            handlers.call(handler, event, context)
        except Exception as exc:  # a failed attempt; BaseException (exit) leaves it pending
            self._finished()
            self._c.stats["failed"] += 1
            self._tell("failed")
            tracing.record_failure(exc)
            plan = self._c.outcomes.plan_failure(
                entry.key,
                entry.message_id,
                self._c.consumer_name,
                retry_count=retry_count,
                failure=FailureInfo.from_exception(exc),
                policy=self._c.policy,
                error=exc,
            )
            result = self._carry_out(plan).result
            if result is Result.RETRIED:
                self.trace.note(event, trace.RETRIED)
            elif result is Result.DEAD_LETTERED:
                self.trace.note(event, trace.DEAD_LETTERED, plan.reason)
            return
        except BaseException:
            self._finished()
            raise
        self._finished()
        self._acks.add(entry.key, entry.message_id)
        self.trace.note(event, trace.HANDLED)
        self._c.stats["handled"] += 1
        self._tell("handled")
        self._c.log.debug("event_handled")

    def _finished(self) -> None:
        for observer in self._observers:
            observer.finished()

    def _tell(self, what: str, reason: str = "") -> None:
        if self._on_outcome is not None:
            self._on_outcome(what, reason)

    # -- outcomes ------------------------------------------------------------------------

    def _carry_out(self, plan: Planned, *, again: bool = False) -> Outcome:
        outcome = self._c.outcomes.carry_out(plan, again=again)
        where = (plan.key, plan.message_id)
        if outcome.result is Result.UNWRITTEN:
            self._unwritten[where] = plan
            return outcome
        self._unwritten.pop(where, None)
        if outcome.result in (Result.RETRIED, Result.DEAD_LETTERED):
            self._c.stats[outcome.result.value] += 1
        if outcome.result is Result.RETRIED:
            self._on_retry(outcome.delay_s)
        return outcome

    def write_unwritten(self) -> None:
        """Outcomes that Redis refused before (out of memory...) are written again: the
        handler already ran, so its attempt is not repeated and not counted again."""
        for plan in list(self._unwritten.values()):
            with log_context(message_id=plan.message_id):
                if self._carry_out(plan, again=True).result is Result.UNWRITTEN:
                    return  # still refused: try again next round
