"""Trace trees (pure): entries of a request's trace rebuilt into its causal tree."""

from __future__ import annotations

from eventbus.trace import build_tree, walk


def pub(n: int, event_id: str, parent: str = "", agent: str = "a") -> tuple[str, list[str]]:
    record = ["published", event_id, parent, agent, "task_assigned", "tasks", f"{n}-0"]
    return (f"{1_700_000_000_000 + n}-0", record)


def out(n: int, event_id: str, kind: str, r: str = "") -> tuple[str, list[str]]:
    return (f"{1_700_000_000_000 + n}-1", [kind, event_id, "tasks", "g1", r])


def test_a_tree_with_fan_out_and_outcomes() -> None:
    entries = [
        pub(1, "root", agent="planner"),
        pub(2, "w1", "root", "writer"),
        pub(3, "w2", "root", "writer"),
        out(4, "root", "handled"),
        pub(5, "r1", "w1", "reviewer"),
        out(6, "w1", "retried"),
        out(7, "w1", "handled"),
        out(8, "w2", "dead_lettered", r="handler_failed"),
        out(9, "r1", "dead_lettered", r="halted"),
    ]
    tree = build_tree("req-1", entries)
    (root,) = tree.roots
    assert [c.event_id for c in root.children] == ["w1", "w2"]
    assert [c.event_id for c in root.children[0].children] == ["r1"]
    assert root.status == "handled"
    w1, w2 = root.children
    assert (w1.status, w1.retries, w1.handled_by) == ("handled", 1, ["g1"])
    assert w2.status == "in_dlq (handler_failed)"
    assert w1.children[0].status == "halted"
    assert tree.agents == ["planner", "reviewer", "writer"]
    doc = tree.as_dict()
    assert doc["events"] == 4 and doc["roots"][0]["children"][1]["status"].startswith("in_dlq")


def test_a_replayed_dead_letter_is_no_longer_in_the_dlq() -> None:
    entries = [
        pub(1, "e1"),
        out(2, "e1", "dead_lettered", r="halted"),
        out(3, "e1", "replayed"),
        out(4, "e1", "handled"),
    ]
    (node,) = build_tree("req", entries).roots
    assert node.status == "handled" and node.replays == 1


def test_events_whose_parent_was_cut_are_roots_and_outcome_only_events_are_kept() -> None:
    entries = [pub(1, "b", parent="gone"), out(2, "c", "handled")]
    tree = build_tree("req", entries)
    assert [r.event_id for r in tree.roots] == ["b", "c"]
    assert tree.nodes["c"].published is False


def test_a_deep_chain_of_ten_thousand_events_is_one_path() -> None:
    entries = [pub(i, f"e{i}", f"e{i - 1}" if i else "") for i in range(10_000)]
    tree = build_tree("req", entries)
    node = tree.roots[0]
    depth = 1
    while node.children:
        (node,) = node.children
        depth += 1
    assert depth == 10_000
    assert [d for d, _ in walk(tree.roots)][-1] == 9_999
    doc = tree.as_dict()["roots"][0]  # no recursion limit on the way
    assert doc["event_id"] == "e0" and doc["children"][0]["event_id"] == "e1"
