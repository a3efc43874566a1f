"""The operator CLI: ``eventbus publish | tail | stats | dlq ... | budget | halt | resume |
trace | migrate-keys | acl | tenants | supervise``.

One console script; each subcommand is a small function in ``COMMANDS``. Bad input, bus
errors and Redis errors end as one ``eventbus: error: ...`` line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus import layout, redis_io
from eventbus.bus import TenantEventBus
from eventbus.dlq import DeadLetterQueue
from eventbus.errors import BusConnectionError, EventBusError, StreamNotFound
from eventbus.keys import TenantKeys, validate_correlation_id, validate_stream
from eventbus.logs import configure_logging
from eventbus.redis_io import AnyRedis
from eventbus.settings import BusSettings
from eventbus.stats import tenant_stats
from eventbus.trace import read_trace
from workers.cli import events as cli_events
from workers.cli import platform
from workers.cli.args import parse_args
from workers.cli.format import (
    budget_text,
    dlq_text,
    dumps,
    letter_full,
    letter_summary,
    letter_text,
    reason,
    redact,
    stats_text,
    tail_record,
    trace_text,
)

CONNECT_TIMEOUT_S = 2.0  # an unreachable Redis is reported within about this
SOCKET_TIMEOUT_S = 5.0  # longest wait for one reply; tail's BLOCK stays below it
TAIL_BLOCK_MS = 5000  # one XREAD BLOCK of tail (clamped below SOCKET_TIMEOUT_S)
TAIL_READ_COUNT = 100  # entries per XREAD of tail
_STREAM_ID = re.compile(r"\d+(-\d+)?")


class CliError(Exception):
    """A problem the CLI reports as one line and exit code 1."""


class Ops:
    """What a subcommand works with: its arguments, the tenant's keys (validated before
    any I/O) and, on first use, a Redis client, the bus and the DLQ."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.keys = TenantKeys(args.tenant)
        if getattr(args, "stream", None) is not None:
            validate_stream(args.stream)
        self.settings = BusSettings(maxlen=getattr(args, "maxlen", BusSettings.maxlen))

    @cached_property
    def client(self) -> AnyRedis:
        return connect(self.args.redis_url, cluster=self.args.redis_cluster)

    @cached_property
    def bus(self) -> TenantEventBus:
        return TenantEventBus(self.client, self.keys.tenant_id, settings=self.settings)

    @cached_property
    def dlq(self) -> DeadLetterQueue:
        return DeadLetterQueue(self.client, self.keys.tenant_id)

    def require_stream(self, stream: str) -> None:
        """StreamNotFound unless the stream is registered or it or its DLQ exists."""
        if not self.bus.stream_known(stream):
            raise StreamNotFound(
                f"stream {stream!r} of tenant {self.keys.tenant_id!r} does not exist "
                "('eventbus stats' lists the tenant's streams)"
            )


def connect(url: str, *, cluster: bool = False) -> AnyRedis:
    """A bytes client checked with one PING (no retry: an unreachable Redis is reported
    within CONNECT_TIMEOUT_S). The bus and the DLQ then talk through their own pool of the
    same settings (a publish is retried for the bus's retry budget, 2 s). With ``cluster``,
    a Redis Cluster client seeded with the URL's node."""
    try:
        client = redis_io.connect(
            url,
            cluster=cluster,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            client_name="eventbus-cli",
        )
    except ValueError as exc:  # redis-py's message does not name the URL
        raise CliError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CliError(f"cannot reach Redis at {redact(url)} ({reason(exc)})") from exc
    except redis.RedisError as exc:
        raise CliError(f"Redis at {redact(url)} failed PING ({reason(exc)})") from exc
    return client


def stream_id(value: str) -> str:
    if not _STREAM_ID.fullmatch(value):
        raise CliError(f"invalid DLQ id {value!r}: expected a stream id like 1718000000000-0")
    return value


# -- subcommands -------------------------------------------------------------------------


def publish(ops: Ops) -> int:
    """One event from the flags, or JSON lines from stdin; prints the message ids."""
    a = ops.args
    if a.stdin:
        max_bytes = ops.settings.max_event_bytes
        for batch in cli_events.read_batches(
            sys.stdin.buffer, ops.keys.tenant_id, batch_size=a.batch_size, max_bytes=max_bytes
        ):
            print("\n".join(ops.bus.publish_many(a.stream, batch)), flush=True)
        return 0
    values: dict[str, Any] = {
        "tenant_id": ops.keys.tenant_id,
        "event_type": a.type,
        "source_agent_id": a.source,
        "call_chain": [p.strip() for p in a.chain.split(",")] if a.chain else [a.source],
        "data": cli_events.parse_data(a.data or "{}"),
        "context_refs": a.context_ref or [],
        "priority": a.priority,
        "correlation_id": a.correlation_id,
        "parent_event_id": a.parent_event_id,
        "event_id": a.event_id,
    }
    values = {k: v for k, v in values.items() if v is not None}
    event = cli_events.build_event(values, max_bytes=ops.settings.max_event_bytes)
    print(ops.bus.publish(a.stream, event))
    return 0


def tail(ops: Ops) -> int:
    """Follow a stream with plain XREAD (no group); one JSON line per entry."""
    a = ops.args
    ops.require_stream(a.stream)
    last = "0-0" if a.from_start else ops.bus.last_id(a.stream)
    seen = 0
    try:
        while a.count is None or seen < a.count:
            want = TAIL_READ_COUNT if a.count is None else min(TAIL_READ_COUNT, a.count - seen)
            entries = ops.bus.read_after(a.stream, last, count=want, block_ms=TAIL_BLOCK_MS)
            for message_id, fields in entries:
                print(dumps(tail_record(message_id, fields, ops.keys.tenant_id)), flush=True)
                last, seen = message_id, seen + 1
    except KeyboardInterrupt:
        pass
    return 0


def stats(ops: Ops) -> int:
    """Length, groups, consumers, DLQ and retries of one stream or all of the tenant's."""
    a = ops.args
    if a.stream:
        ops.require_stream(a.stream)
    names = [a.stream] if a.stream else ops.bus.streams()
    doc = tenant_stats(ops.bus, ops.dlq, names)
    print(dumps(doc) if a.json else stats_text(doc))
    return 0


def dlq_list(ops: Ops) -> int:
    a = ops.args
    ops.require_stream(a.stream)
    letters = ops.dlq.list_dlq_messages(a.stream, count=a.count)
    total = ops.dlq.count(a.stream)
    if a.json:
        entries = [letter_summary(x) for x in letters]
        doc = {"tenant": ops.keys.tenant_id, "stream": a.stream, "total": total}
        print(dumps({**doc, "entries": entries}))
    else:
        print(dlq_text(a.stream, letters, total))
    return 0


def dlq_show(ops: Ops) -> int:
    a = ops.args
    dlq_id = stream_id(a.id)
    ops.require_stream(a.stream)
    letter = ops.dlq.get(a.stream, dlq_id)
    print(dumps(letter_full(letter)) if a.json else letter_text(letter))
    return 0


def dlq_replay(ops: Ops) -> int:
    """Prints the new message id of each replayed dead letter; a summary on stderr."""
    a = ops.args
    dlq_id = stream_id(a.id) if a.id else None
    ops.require_stream(a.stream)
    if dlq_id:
        new_ids = [ops.dlq.replay_message(a.stream, dlq_id)]
    else:
        event_type = a.event_type.value if a.event_type else None
        new_ids = ops.dlq.replay_all(a.stream, event_type=event_type)
    for new_id in new_ids:
        print(new_id)
    print(f"replayed {len(new_ids)} dead letter(s) of stream {a.stream!r}", file=sys.stderr)
    return 0


def dlq_purge(ops: Ops) -> int:
    a = ops.args
    if not a.yes:
        raise CliError("purge deletes dead letters for good: add --yes to confirm")
    ids = [stream_id(i) for i in a.id] if a.id else None
    ops.require_stream(a.stream)
    deleted = ops.dlq.purge(a.stream, ids=ids, older_than_s=a.older_than)
    print(f"purged {deleted} dead letter(s) from the DLQ of stream {a.stream!r}")
    return 0


def budget(ops: Ops) -> int:
    """Show a request's budget, or set it with --events / --units."""
    a = ops.args
    validate_correlation_id(a.correlation_id)
    if a.events is None and a.units is None:
        state = ops.bus.requests.budget(a.correlation_id)
    else:
        state = ops.bus.set_budget(a.correlation_id, events=a.events, units=a.units)
    print(budget_text(state))
    return 0


def halt(ops: Ops) -> int:
    cid = ops.args.correlation_id
    new = ops.bus.halt(cid)
    state = "halted" if new else "was already halted"
    print(f"request {cid!r} {state}: its events are no longer handled or published")
    return 0


def resume(ops: Ops) -> int:
    cid = ops.args.correlation_id
    if not ops.bus.resume(cid):
        print(f"request {cid!r} was not halted")
        return 0
    print(
        f"request {cid!r} resumed; its events dead-lettered meanwhile (reason 'halted') "
        "can be replayed with 'eventbus dlq replay STREAM ID'"
    )
    return 0


def trace(ops: Ops) -> int:
    a = ops.args
    tree = read_trace(ops.bus, validate_correlation_id(a.correlation_id))
    if not tree.nodes:
        raise CliError(
            f"no trace of request {a.correlation_id!r} in tenant {ops.keys.tenant_id!r} "
            "(the trace is off for the tenant, or the request expired)"
        )
    print(dumps(tree.as_dict()) if a.json else trace_text(tree))
    return 0


def supervise(argv: list[str]) -> int:
    """``eventbus supervise ARGS`` is ``eventbus-supervisor ARGS`` (imported only here)."""
    try:
        module = importlib.import_module("workers.pool.supervisor")
    except ModuleNotFoundError as exc:
        if exc.name != "workers.pool.supervisor":
            raise
        raise CliError(
            "the supervisor is not installed (no module workers.pool.supervisor)"
        ) from None
    return cast(Callable[..., int], module.main)(argv, prog="eventbus supervise")


def web(argv: list[str]) -> int:
    """``eventbus web ARGS``: the operator console (needs the ``web`` extra)."""
    try:
        module = importlib.import_module("workers.console.server")
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] not in (
            "workers", "starlette", "uvicorn", "jinja2", "multipart", "python_multipart"
        ):  # fmt: skip
            raise
        raise CliError(
            f"the web console needs the 'web' extra (pip install 'eventbus[web]'): {exc}"
        ) from None
    return cast(Callable[[list[str]], int], module.main)(argv)


def migrate_keys(ops: Ops) -> int:
    """Move the tenant's layout-1 keys; one line per key: ``old -> new`` (or why not)."""
    done = layout.migrate(ops.client, ops.keys.tenant_id, dry_run=ops.args.dry_run)
    verb = "would move" if ops.args.dry_run else "moved"
    for old, new in done.renamed:
        print(f"{verb} {old} -> {new}")
    for old, new in done.conflicts:
        print(f"kept {old}: {new} exists already (compare them, then rename or delete one)")
    if not done.renamed and not done.conflicts:
        print(f"no layout-1 keys of tenant {ops.keys.tenant_id!r}")
    return 1 if done.conflicts else 0


COMMANDS: dict[str, Callable[[Ops], int]] = {
    "migrate-keys": migrate_keys,
    "publish": publish,
    "tail": tail,
    "stats": stats,
    "dlq list": dlq_list,
    "dlq show": dlq_show,
    "dlq replay": dlq_replay,
    "dlq purge": dlq_purge,
    "budget": budget,
    "halt": halt,
    "resume": resume,
    "trace": trace,
}


def error_line(exc: BaseException, url: str | None) -> str:
    """One line for any error the CLI reports."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or (
        type(exc) is BusConnectionError
        and isinstance(exc.__cause__, (redis.ConnectionError, redis.TimeoutError))
    ):
        cause = exc.__cause__ if isinstance(exc, BusConnectionError) else exc
        text = f"cannot reach Redis at {redact(url or '?')} ({reason(cause or exc)})"
    elif type(exc) is KeyError and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


ERRORS = (CliError, EventBusError, ValueError, KeyError, redis.RedisError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eventbus`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    url: str | None = None
    try:
        if argv[:1] == ["supervise"]:
            return supervise(argv[1:])
        if argv[:1] == ["acl"]:
            return platform.acl(argv[1:])
        if argv[:1] == ["tenants"]:
            url = platform.url_of(argv[1:])
            return platform.tenants(argv[1:], connect)
        if argv[:1] == ["web"]:
            return web(argv[1:])
        args = parse_args(argv, os.environ)
        url = args.redis_url
        configure_logging(args.log_level)
        if args.command == "stats" and args.all_tenants:
            return platform.all_tenants_stats(connect(url, cluster=args.redis_cluster), args.json)
        return COMMANDS[args.command](Ops(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): exit without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ERRORS as exc:
        print(f"eventbus: error: {error_line(exc, url)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
