"""The CLI's platform commands: ``eventbus acl`` (a tenant's users, or ``--platform``:
the platform pool's and the registry provisioner's), ``eventbus tenants add | remove |
list`` (the platform registry that ``tenant = "*"`` subscriptions follow) and ``eventbus
stats --all-tenants``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from eventbus.acl import PlatformUser, TenantUser, platform_users, tenant_users
from eventbus.bus import TenantEventBus
from eventbus.dlq import DeadLetterQueue
from eventbus.platform import TenantRegistry
from eventbus.redis_io import AnyRedis
from eventbus.settings import DEFAULT_REDIS_URL
from eventbus.stats import tenant_stats
from workers.cli.format import dumps, table


def acl(argv: list[str]) -> int:
    """``eventbus acl TENANT`` / ``eventbus acl --platform``: print ACL SETUSER lines."""
    parser = argparse.ArgumentParser(
        prog="eventbus acl",
        description="Print ACL SETUSER commands for TENANT's worker, publisher and "
        "read-only viewer users "
        "(keys ~t:{TENANT}:* only, just the commands each role needs), or with --platform "
        "for a platform pool's user (every tenant's keys ~t:*, the worker's commands, the "
        "tenant registry read-only) and the registry's provisioner (the registry only). "
        "Nothing is sent to "
        "Redis: pipe the output into redis-cli as an admin, e.g. "
        "'eventbus acl acme | redis-cli'. Passwords are random unless given.",
    )
    parser.add_argument("tenant", metavar="TENANT", nargs="?")
    parser.add_argument("--worker-password", help="password of eventbus-TENANT-worker")
    parser.add_argument("--publisher-password", help="password of eventbus-TENANT-publisher")
    parser.add_argument(
        "--viewer-password", help="password of eventbus-TENANT-viewer (read-only, web console)"
    )
    parser.add_argument(
        "--platform",
        action="store_true",
        help="the platform pool's and the provisioner's users instead of a tenant's",
    )
    parser.add_argument("--pool-password", help="password of eventbus-platform-pool")
    parser.add_argument("--provisioner-password", help="password of eventbus-platform-provisioner")
    args = parser.parse_args(argv)
    if args.platform == (args.tenant is not None):
        parser.error("give TENANT or --platform (one of them)")
    users: Sequence[TenantUser | PlatformUser]
    if args.platform:
        users = platform_users(
            pool_password=args.pool_password, provisioner_password=args.provisioner_password
        )
    else:
        users = tenant_users(
            args.tenant,
            worker_password=args.worker_password,
            publisher_password=args.publisher_password,
            viewer_password=args.viewer_password,
        )
    for user in users:
        print(user.setuser_line())
    for user in users:
        print(f"# {user.role}: {user.url(host='HOST', port=6379)}", file=sys.stderr)
    return 0


def _tenants_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus tenants",
        description="The platform's tenant registry (a Redis set outside every tenant's "
        'keys): platform pools with tenant = "*" subscriptions consume the streams of '
        "every tenant listed, and find one added while they run within about 1 s. Run "
        "with the provisioner's (or an admin's) credentials: a tenant's users cannot "
        "read or change it ('eventbus acl --platform').",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("EVENTBUS_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis URL [env EVENTBUS_REDIS_URL; default {DEFAULT_REDIS_URL}]",
    )
    parser.add_argument(
        "--redis-cluster", action="store_true", help="the URL is a seed node of a Redis Cluster"
    )
    cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "register tenants"), ("remove", "unregister tenants")):
        p = cmds.add_parser(action, help=f"{text} (their data is not touched)")
        p.add_argument("tenant_ids", nargs="+", metavar="TENANT")
    cmds.add_parser("list", help="print the registered tenants, one a line")
    return parser


def url_of(argv: list[str]) -> str | None:
    """The Redis URL ``eventbus tenants`` will use (for error lines), without exiting."""
    try:
        args, _ = _tenants_parser().parse_known_args(argv)
    except SystemExit:
        return None
    return str(args.redis_url)


def tenants(argv: list[str], connect: Callable[..., AnyRedis]) -> int:
    """``eventbus tenants add|remove|list``."""
    args = _tenants_parser().parse_args(argv)
    registry = TenantRegistry(connect(args.redis_url, cluster=args.redis_cluster))
    if args.action == "list":
        for tenant in registry.tenants():
            print(tenant)
        return 0
    if args.action == "add":
        print(f"{registry.add(*args.tenant_ids)} tenant(s) added")
    else:
        print(f"{registry.remove(*args.tenant_ids)} tenant(s) removed")
    return 0


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


_ALL_HEADERS = ("TENANT", "STREAM", "GROUP", "LAG", "PENDING", "SCHEDULED", "DLQ")


def all_tenants_rows(client: AnyRedis) -> list[dict[str, Any]]:
    """One row per (tenant, stream, group) of every registered tenant, by lag (largest
    first; a lag Redis cannot tell, null, first of all: it needs a look)."""
    rows: list[dict[str, Any]] = []
    for tenant in TenantRegistry(client).tenants():
        bus = TenantEventBus(client, tenant)
        doc = tenant_stats(bus, DeadLetterQueue(client, tenant), bus.streams())
        for st in doc["streams"]:
            for g in st["groups"]:
                rows.append(
                    {
                        "tenant": tenant,
                        "stream": st["stream"],
                        "group": g["group"],
                        "lag": g["lag"],
                        "pending": g["pending"],
                        "scheduled": (g["retries"] or {}).get("scheduled"),
                        "dlq": st["dlq"],
                    }
                )
    rows.sort(key=lambda r: (r["lag"] is not None, -(r["lag"] or 0), r["tenant"], r["stream"]))
    return rows


def all_tenants_stats(client: AnyRedis, as_json: bool) -> int:
    """``eventbus stats --all-tenants [--json]``."""
    rows = all_tenants_rows(client)
    if as_json:
        print(dumps({"groups": rows}))
        return 0
    if not rows:
        print("no registered tenant has a consumer group ('eventbus tenants list')")
        return 0
    cells = [
        [
            r["tenant"],
            r["stream"],
            r["group"],
            _num(r["lag"]),
            str(r["pending"]),
            _num(r["scheduled"]),
            str(r["dlq"]),
        ]
        for r in rows
    ]
    print(table(_ALL_HEADERS, cells, {3, 4, 5, 6}))
    return 0
