"""Console settings: the flags of ``eventbus web`` and their environment twins (the only
place the console reads the environment)."""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventbus.keys import validate_tenant_id
from eventbus.logs import LEVELS
from workers.parsers import at_least_int, boolean

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The environment variables ``eventbus web`` reads (each the twin of a flag).
ENV_NAMES = (
    "EVENTBUS_REDIS_URL",
    "EVENTBUS_REDIS_CLUSTER",
    "EVENTBUS_WEB_HOST",
    "EVENTBUS_WEB_PORT",
    "EVENTBUS_TENANT",
    "EVENTBUS_WEB_READ_ONLY",
    "EVENTBUS_WEB_TLS_CERT",
    "EVENTBUS_WEB_TLS_KEY",
    "EVENTBUS_WEB_SESSION_IDLE_S",
    "EVENTBUS_WEB_SESSION_MAX_S",
    "EVENTBUS_WEB_REFRESH_S",
    "EVENTBUS_LOG_LEVEL",
)


@dataclass(frozen=True)
class ConsoleSettings:
    redis_url: str = DEFAULT_REDIS_URL  # where operators' credentials are checked
    redis_cluster: bool = False  # redis_url is a seed node of a Redis Cluster
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8080
    default_tenant: str = ""  # pre-filled on the login form
    read_only: bool = False  # nobody can change anything, whatever their ACL
    tls_cert: str = ""  # PEM files: serve HTTPS (cookies get Secure)
    tls_key: str = ""
    session_idle_s: int = 1800  # a session unused this long is closed
    session_max_s: int = 8 * 3600  # and any session after this long
    refresh_s: int = 5  # the overview reloads its numbers this often
    log_level: str = "info"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


_positive = at_least_int(1)


def _port(raw: str) -> int:
    value = _positive(raw)
    if value > 65535:
        raise ValueError("must be <= 65535")
    return value


_port.__name__ = "port (1 to 65535)"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    d = ConsoleSettings()

    def env(name: str, default: str) -> str:
        assert name in ENV_NAMES, name  # every variable is listed (docs and tests use it)
        return environ.get(name, default)

    p = argparse.ArgumentParser(
        prog="eventbus web",
        description="Serve the operator console: streams, groups and dead letters of a "
        "tenant; replay and purge with confirmation and an audit trail. Operators log in "
        "with Redis ACL credentials (e.g. the users 'eventbus acl' prints) and the console "
        "talks to Redis as them. Every flag has an environment twin, shown in brackets.",
    )
    p.add_argument(
        "--redis-url",
        default=env("EVENTBUS_REDIS_URL", d.redis_url),
        help=f"Redis to log in to; no credentials in it [EVENTBUS_REDIS_URL; {d.redis_url}]",
    )
    p.add_argument(
        "--redis-cluster",
        nargs="?",
        const="true",
        type=boolean,
        default=env("EVENTBUS_REDIS_CLUSTER", "false"),
        help="--redis-url is a seed node of a Redis Cluster (the console finds the other "
        "nodes) [EVENTBUS_REDIS_CLUSTER]",
    )
    p.add_argument(
        "--host",
        default=env("EVENTBUS_WEB_HOST", d.host),
        help=f"address to listen on [EVENTBUS_WEB_HOST; {d.host}]",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=env("EVENTBUS_WEB_PORT", str(d.port)),
        help=f"port [EVENTBUS_WEB_PORT; {d.port}]",
    )
    p.add_argument(
        "--tenant",
        default=env("EVENTBUS_TENANT", d.default_tenant),
        help="tenant pre-filled on the login form [EVENTBUS_TENANT]",
    )
    p.add_argument(
        "--read-only",
        nargs="?",
        const="true",
        type=boolean,
        default=env("EVENTBUS_WEB_READ_ONLY", "false"),
        help="nobody can replay or purge, whatever their ACL [EVENTBUS_WEB_READ_ONLY]",
    )
    p.add_argument(
        "--tls-cert",
        default=env("EVENTBUS_WEB_TLS_CERT", ""),
        help="PEM certificate: serve HTTPS [EVENTBUS_WEB_TLS_CERT]",
    )
    p.add_argument(
        "--tls-key",
        default=env("EVENTBUS_WEB_TLS_KEY", ""),
        help="PEM private key of --tls-cert [EVENTBUS_WEB_TLS_KEY]",
    )
    p.add_argument(
        "--session-idle-s",
        type=_positive,
        default=env("EVENTBUS_WEB_SESSION_IDLE_S", str(d.session_idle_s)),
        help=f"log out after this long unused [EVENTBUS_WEB_SESSION_IDLE_S; {d.session_idle_s}]",
    )
    p.add_argument(
        "--session-max-s",
        type=_positive,
        default=env("EVENTBUS_WEB_SESSION_MAX_S", str(d.session_max_s)),
        help=f"log out after this long anyway [EVENTBUS_WEB_SESSION_MAX_S; {d.session_max_s}]",
    )
    p.add_argument(
        "--refresh-s",
        type=_positive,
        default=env("EVENTBUS_WEB_REFRESH_S", str(d.refresh_s)),
        help=f"the overview refreshes this often [EVENTBUS_WEB_REFRESH_S; {d.refresh_s}]",
    )
    p.add_argument(
        "--log-level",
        choices=LEVELS,
        default=env("EVENTBUS_LOG_LEVEL", d.log_level),
        help=f"[EVENTBUS_LOG_LEVEL; {d.log_level}]",
    )
    return p


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ConsoleSettings:
    """Settings from flags, then environment, then defaults; usage errors exit 2."""
    parser = build_parser(environ)
    a = parser.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if a.tls_cert:
        try:  # now, not in uvicorn's start-up, which would end in a traceback
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                a.tls_cert, a.tls_key
            )
        except (OSError, ssl.SSLError) as exc:
            parser.error(
                f"cannot load --tls-cert {a.tls_cert!r} with --tls-key {a.tls_key!r}: "
                f"{exc.strerror or exc}"
            )
    if a.tenant:
        try:
            validate_tenant_id(a.tenant)
        except ValueError as exc:
            parser.error(str(exc))
    if "@" in a.redis_url.split("//", 1)[-1].split("/", 1)[0]:
        parser.error("--redis-url must not carry credentials: operators log in with theirs")
    return ConsoleSettings(
        redis_url=a.redis_url,
        redis_cluster=a.redis_cluster,
        host=a.host,
        port=a.port,
        default_tenant=a.tenant,
        read_only=a.read_only,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        session_idle_s=a.session_idle_s,
        session_max_s=a.session_max_s,
        refresh_s=a.refresh_s,
        log_level=a.log_level,
    )
