"""Example agent-style handlers (referenced by the README and systemd/example.env).

``writer_agent`` reads a task, does its "work", and publishes a follow-up event with the
call chain extended, through the worker's own bus (``ctx.bus``). The follow-up's event_id
is derived from the input's, so a redelivery within the publish dedupe window (5 min by
default) publishes nothing new; a later one (a retry after a long outage, a replay from the
DLQ) publishes the follow-up again, with the same event_id, for consumers to deduplicate.
"""

from __future__ import annotations

from eventbus import AgentEvent, EventType, HandlerContext, wants_context

AGENT_ID = "writer"


@wants_context
def writer_agent(event: AgentEvent, ctx: HandlerContext) -> None:
    if event.event_type is not EventType.TASK_ASSIGNED:
        return
    topic = event.data.get("topic", "?")
    ctx.log.info("writing", topic=topic, delivery=ctx.delivery_count)
    follow_up = AgentEvent(
        event_id=f"{event.event_id}.done",  # same id on a redelivery (publish dedupes)
        event_type=EventType.TASK_COMPLETED,
        tenant_id=event.tenant_id,
        source_agent_id=AGENT_ID,
        call_chain=[*event.call_chain, AGENT_ID],
        correlation_id=event.correlation_id or event.event_id,
        parent_event_id=event.event_id,
        data={"topic": topic, "summary": f"a short text about {topic}"},
    )
    ctx.bus.publish("results", follow_up)
