"""Operator CLI, arguments: the ``eventbus`` parser, its subcommands and their --help.

Reads the environment only for the defaults of --redis-url and --tenant (their env twins).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from eventbus.logs import LEVELS
from eventbus.schemas import EventPriority, EventType
from eventbus.settings import DEFAULT_REDIS_URL, BusSettings
from workers.cli.events import parse_enum
from workers.parsers import at_least_float, at_least_int, boolean

_positive_int = at_least_int(1)
_non_negative_int = at_least_int(0)
_seconds = at_least_float(0)


def _enum_arg(enum_cls: type[Enum]) -> Callable[[str], Enum]:
    def parse(text: str) -> Enum:
        try:
            return parse_enum(enum_cls, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "")
    try:
        return boolean(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: must be true or false (1/0, yes/no, on/off)") from None


def _common(environ: Mapping[str, str], *, top: bool) -> argparse.ArgumentParser:
    """--redis-url, --tenant and --log-level, accepted before or after the subcommand.

    Only the top-level parser has real defaults: a subcommand's defaults would overwrite
    a value given before the subcommand, so there they are suppressed.
    """

    def default(value: str | None) -> str | None:
        return value if top else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--redis-url",
        default=default(environ.get("EVENTBUS_REDIS_URL", DEFAULT_REDIS_URL)),
        help=f"Redis URL [env EVENTBUS_REDIS_URL; default {DEFAULT_REDIS_URL}]",
    )
    common.add_argument(
        "--redis-cluster",
        action="store_true",
        default=_env_flag(environ, "EVENTBUS_REDIS_CLUSTER") if top else argparse.SUPPRESS,
        help="the Redis URL is a seed node of a Redis Cluster [env EVENTBUS_REDIS_CLUSTER=1]",
    )
    common.add_argument(
        "--tenant",
        default=default(environ.get("EVENTBUS_TENANT")),
        help="tenant id (letters, digits, '_', '-', '.') [env EVENTBUS_TENANT; required]",
    )
    common.add_argument(
        "--log-level",
        choices=LEVELS,
        default=default("warning"),
        help="level of the library's logs on stderr (warning)",
    )
    return common


def _add_publish(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "publish",
        parents=[common],
        help="publish one event, or JSON lines from stdin",
        description="Publish one event built from the flags, or with '-' one event per "
        "stdin line (a JSON object of AgentEvent fields; tenant_id defaults to --tenant), "
        "validated and sent in batches: a bad line stops the run before anything of its "
        "batch is published (earlier batches stay published). Prints one message id per "
        "event. Publishing is idempotent by event_id within the dedupe window.",
    )
    p.add_argument("stream", help="stream name")
    p.add_argument(
        "stdin", nargs="?", choices=["-"], metavar="-", help="read JSON events from stdin"
    )
    types = ", ".join(t.name for t in EventType)
    p.add_argument(
        "--type", type=_enum_arg(EventType), help=f"event type by name or value: {types}"
    )
    p.add_argument("--source", metavar="AGENT", help="source agent id")
    p.add_argument("--chain", metavar="A,B,C", help="call chain, oldest first (default: source)")
    p.add_argument("--data", metavar="JSON", help="JSON object (default {})")
    p.add_argument(
        "--priority", type=_enum_arg(EventPriority), help="low, normal (default), high, critical"
    )
    p.add_argument("--correlation-id")
    p.add_argument("--parent-event-id")
    p.add_argument("--context-ref", action="append", metavar="REF", help="repeatable")
    p.add_argument("--event-id", help="default: a new uuid4")
    p.add_argument(
        "--batch-size", type=_positive_int, default=100, help="stdin events per batch (100)"
    )
    p.add_argument(
        "--maxlen",
        type=_non_negative_int,
        default=BusSettings.maxlen,
        help=f"stream retention target in entries; 0 = never trim ({BusSettings.maxlen})",
    )
    p.set_defaults(command="publish", parser=p)


def _add_readers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tail",
        parents=[common],
        help="follow a stream without joining a group",
        description="Print entries as they arrive (plain XREAD, no consumer group, nothing "
        "acknowledged), from the end of the stream unless --from-start: one JSON line each, "
        '{"message_id", "event"}, or for an entry that is not a valid event of the tenant '
        '{"message_id", "fields", "error"}. Ctrl-C exits 0.',
    )
    p.add_argument("stream", help="stream name (must exist)")
    p.add_argument("--from-start", action="store_true", help="start at the first entry")
    p.add_argument("--count", type=_positive_int, help="exit after N entries")
    p.set_defaults(command="tail", parser=p)

    p = sub.add_parser(
        "stats",
        parents=[common],
        help="length, groups, consumers, DLQ and retries",
        description="For each stream of the tenant (or the one named): length, DLQ size, "
        "per group lag / pending / consumers (pending, idle), scheduled retries and the "
        "retry stream's backlog and pending count. '?' (null in JSON): Redis cannot tell.",
    )
    p.add_argument("stream", nargs="?", help="only this stream")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON document: {"tenant", "streams": [...]} (--all-tenants: {"groups": '
        '[{"tenant", "stream", "group", "lag", "pending", "scheduled", "dlq"}...]})',
    )
    p.add_argument(
        "--all-tenants",
        action="store_true",
        help="one row per group of every tenant in the platform registry, largest lag "
        "first (no --tenant; needs the platform pool's or an admin's credentials)",
    )
    p.set_defaults(command="stats", parser=p)


def _add_dlq(sub: Any, common: argparse.ArgumentParser) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="list, show, replay and purge dead letters",
        description="The dead-letter queue of a stream (all groups): list, show, replay, purge.",
    )
    cmds = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    p = cmds.add_parser(
        "list",
        parents=[common],
        help="dead letters, oldest first",
        description="List dead letters, oldest first: id, when, why, group, retries, event "
        "type and id, error. --json: {tenant, stream, total, entries: [...]}.",
    )
    p.add_argument("stream")
    p.add_argument("--count", type=_positive_int, default=50, help="at most N (50)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(command="dlq list", parser=p)

    p = cmds.add_parser(
        "show",
        parents=[common],
        help="one dead letter, traceback and fields",
        description="Everything about one dead letter: where it came from, the error, its "
        "traceback and the event's fields.",
    )
    p.add_argument("stream")
    p.add_argument("id", help="DLQ id (from 'dlq list')")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(command="dlq show", parser=p)

    p = cmds.add_parser(
        "replay",
        parents=[common],
        help="put dead letters back into work",
        description="Replay dead letters with their retry count reset: to the retry stream "
        "of the group that dead-lettered them (other groups do not see them again), or to "
        "the stream if no group is known. Prints the new message ids.",
    )
    p.add_argument("stream")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="one DLQ id")
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument(
        "--event-type",
        type=_enum_arg(EventType),
        metavar="TYPE",
        help="every dead letter of this event type (name or value)",
    )
    p.set_defaults(command="dlq replay", parser=p)

    p = cmds.add_parser(
        "purge",
        parents=[common],
        help="delete dead letters (needs --yes)",
        description="Delete the given ids, those older than --older-than, or with neither "
        "every dead letter of the stream. Refuses to run without --yes.",
    )
    p.add_argument("stream")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--older-than",
        type=_seconds,
        metavar="SECONDS",
        help="only those older than this (server clock)",
    )
    which.add_argument("--id", action="append", metavar="ID", help="this DLQ id (repeatable)")
    p.add_argument("--yes", action="store_true", help="really delete")
    p.set_defaults(command="dlq purge", parser=p)


def _add_requests(sub: Any, common: argparse.ArgumentParser) -> None:
    """Agent guards on one request (correlation id): budget, halt, resume, trace."""
    p = sub.add_parser(
        "budget",
        parents=[common],
        help="show or set a request's budget of events / cost units",
        description="Without --events/--units: show the request's usage and limits. With "
        "them: give the request its own budget (over the tenant's; 0 = no limit of that "
        "kind); a raised budget lifts a spent mark. Once spent, the request's publishes "
        "are refused (BudgetExceeded) and its queued events dead-lettered (budget_exceeded).",
    )
    p.add_argument("correlation_id", metavar="CORRELATION_ID")
    p.add_argument("--events", type=_non_negative_int, metavar="N", help="events allowed")
    p.add_argument(
        "--units", type=_seconds, metavar="U", help="cost units allowed (ctx.charge: tokens...)"
    )
    p.set_defaults(command="budget", parser=p)

    p = sub.add_parser(
        "halt",
        parents=[common],
        help="stop a request everywhere (kill switch)",
        description="Mark the request halted: from now on none of its events is published "
        "(RequestHalted) or handled (dead-lettered with reason 'halted'), on every stream "
        "and pool of the tenant, within about a second. 'eventbus resume' undoes it.",
    )
    p.add_argument("correlation_id", metavar="CORRELATION_ID")
    p.set_defaults(command="halt", parser=p)

    p = sub.add_parser(
        "resume",
        parents=[common],
        help="undo 'eventbus halt'",
        description="Lift a halt. The events dead-lettered while it was halted stay in the "
        "DLQ (reason 'halted'): replay them with 'eventbus dlq replay'.",
    )
    p.add_argument("correlation_id", metavar="CORRELATION_ID")
    p.set_defaults(command="resume", parser=p)

    p = sub.add_parser(
        "trace",
        parents=[common],
        help="a request's causal tree: agents, events, what became of each",
        description="Print the request's tree of events (parent -> children): time, source "
        "agent, event type, stream and what became of each event (handled, retried n "
        "times, in the DLQ with its reason, halted, queued). Needs the trace on for the "
        "tenant (BusSettings.trace / EVENTBUS_TRACE); a trace expires with its request.",
    )
    p.add_argument("correlation_id", metavar="CORRELATION_ID")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON document: {"correlation_id", "events", "agents", "first", "last", '
        '"roots": [{"event_id", ..., "status", "children": [...]}]}',
    )
    p.set_defaults(command="trace", parser=p)


def _add_migrate(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "migrate-keys",
        parents=[common],
        help="move the tenant's key layout 1 keys (t:T:...) to layout 2 (t:{T}:...)",
        description="Key layout 2 (docs/wire-format.md) writes the tenant as a hash tag: "
        "t:{T}:events:S instead of t:T:events:S. This finds the tenant's layout-1 keys "
        "(SCAN) and moves each (DUMP, RESTORE with its TTL, DEL: value and consumer "
        "groups kept; a key whose new name exists is left alone and reported). Stop the "
        "tenant's pool and producers first. Exit 1 if some key could not be moved.",
    )
    p.add_argument("--dry-run", action="store_true", help="only list the keys and their new names")
    p.set_defaults(command="migrate-keys", parser=p)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus",
        parents=[_common(environ, top=True)],
        description="Operate a tenant's event bus. Every command but acl, tenants, web "
        "and supervise (which have their own flags, after the command name) takes "
        "--redis-url (env EVENTBUS_REDIS_URL), --redis-cluster (env EVENTBUS_REDIS_CLUSTER) "
        "and --tenant (env EVENTBUS_TENANT), before or after its name; tenants takes "
        "--redis-url and --redis-cluster. Errors: one line on stderr, exit 1; usage errors "
        "exit 2.",
    )
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    common = _common(environ, top=False)
    _add_publish(sub, common)
    _add_readers(sub, common)
    _add_dlq(sub, common)
    _add_requests(sub, common)
    _add_migrate(sub, common)
    sub.add_parser(
        "acl",
        add_help=False,
        help="print ACL SETUSER lines for a tenant's users (see 'eventbus acl --help')",
    )
    sub.add_parser(
        "tenants",
        add_help=False,
        help="the platform's tenant registry: add, remove, list (see 'eventbus tenants --help')",
    )
    sub.add_parser(
        "web",
        add_help=False,
        help="serve the operator web console (see 'eventbus web --help')",
    )
    sub.add_parser(
        "supervise",
        add_help=False,
        help="run the worker pool supervisor (all further arguments go to it; "
        "see 'eventbus supervise --help')",
    )
    return parser


_EVENT_FLAGS = (
    "type", "source", "chain", "data", "priority", "correlation_id", "parent_event_id",
    "context_ref", "event_id",
)  # fmt: skip


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse and check combinations; usage errors exit 2."""
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if args.subcommand in (
        "supervise",
        "acl",
        "tenants",
        "web",
    ):  # main() hands these over unparsed
        parser.error(f"'{args.subcommand}' must come first: eventbus {args.subcommand} ...")
    p: argparse.ArgumentParser = args.parser
    if args.command == "stats" and args.all_tenants:
        if args.stream:
            p.error("--all-tenants shows every stream: give no STREAM")
        return args
    if args.tenant is None:
        p.error("--tenant is required (or set EVENTBUS_TENANT)")
    if args.command == "publish":
        if args.stdin and any(getattr(args, f) is not None for f in _EVENT_FLAGS):
            p.error("event flags cannot be combined with '-': put the fields in the lines")
        if not args.stdin and (args.type is None or args.source is None):
            p.error("--type and --source are required (or '-' to read events from stdin)")
    return args
