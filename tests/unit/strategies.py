"""Hypothesis strategies for valid events: every field, its edge characters included."""

from __future__ import annotations

from datetime import timedelta, timezone

from hypothesis import strategies as st

from eventbus.schemas import AgentEvent, EventPriority, EventType

_text = st.text(max_size=20)
_agent = st.text(st.characters(codec="utf-8") | st.sampled_from(',"\\[]'), min_size=1, max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=25,
)
_event_ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
)
_offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
_name = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)


@st.composite
def events(draw: st.DrawFn) -> AgentEvent:
    chain = draw(st.lists(_agent, min_size=1, max_size=5))
    return AgentEvent(
        event_id=draw(_event_ids),
        event_type=draw(st.sampled_from(EventType)),
        timestamp=draw(st.datetimes(timezones=_offsets)),
        tenant_id=draw(_name),
        priority=draw(st.sampled_from(EventPriority)),
        source_agent_id=draw(st.sampled_from(chain)),
        call_chain=chain,
        data=draw(st.dictionaries(_text, _json, max_size=5)),
        context_refs=draw(st.lists(_text, max_size=3)),
        correlation_id=draw(st.none() | _event_ids),
        parent_event_id=draw(st.none() | _event_ids),
    )
