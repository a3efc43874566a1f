"""Example agent-style handlers (referenced by the README and systemd/example.env).

``writer_agent`` reads a task, does its "work", and publishes a follow-up event with the
call chain extended, through the worker's own bus (``ctx.bus``). It is idempotent: the
follow-up's event_id is derived from the input's, so a redelivery publishes nothing new
(publish dedupes by event_id).
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
        event_id=f"{event.event_id}.done",  # deterministic: redeliveries dedupe
        event_type=EventType.TASK_COMPLETED,
        tenant_id=event.tenant_id,
        source_agent_id=AGENT_ID,
        call_chain=[*event.call_chain, AGENT_ID],
        correlation_id=event.correlation_id or event.event_id,
        parent_event_id=event.event_id,
        data={"topic": topic, "summary": f"a short text about {topic}"},
    )
    ctx.bus.publish("results", follow_up)
