"""``eventbus web``: parse the settings and serve the console with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Sequence

import structlog
import uvicorn

from eventbus.logs import configure_logging
from workers.console.app import create_app
from workers.console.settings import parse_settings

log = structlog.get_logger("eventbus.console")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port or an unknown host is one clear
    line (exit 2) rather than uvicorn's start-up error."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        sys.stderr.write(f"eventbus web: cannot listen on {host}:{port}: {reason}\n")
        raise SystemExit(2) from None
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(list(sys.argv[1:] if argv is None else argv), os.environ)
    configure_logging(settings.log_level)
    if not settings.tls and not _loopback(settings.host):
        log.warning(
            "console_plain_http",
            host=settings.host,
            advice="passwords cross the network in clear: use --tls-cert/--tls-key or a TLS proxy",
        )
    log.info("console_started", host=settings.host, port=settings.port, tls=settings.tls,
             read_only=settings.read_only, redis_cluster=settings.redis_cluster)  # fmt: skip
    sock = _listen(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        log_level="warning",  # our own structlog lines log each request
        access_log=False,
        server_header=False,
        proxy_headers=True,  # X-Forwarded-Proto from a local TLS proxy marks cookies Secure
        timeout_graceful_shutdown=5,  # open requests get this long on SIGTERM
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0
