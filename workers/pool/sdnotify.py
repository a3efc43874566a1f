"""The systemd notify protocol: datagrams like ``READY=1`` to ``$NOTIFY_SOCKET``.

A few lines, so no dependency: see sd_notify(3). Without ``NOTIFY_SOCKET`` (not under
systemd, or ``Type=`` is not notify) every call is a no-op that returns False.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"WATCHDOG=1"``, ``"STOPPING=1"``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:  # no listener, or its queue is full: never block the supervisor
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of the watchdog timeout systemd asked for (``WATCHDOG_USEC``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
