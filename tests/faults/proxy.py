"""A loopback TCP proxy to the private Redis that can lose a reply on the wire.

After it forwarded a command containing ``command`` (e.g. ``b"EVALSHA"``), it reads the
server's reply; if that reply is not an error and contains ``reply_marker``, it swallows
it and closes both sides: the command ran, the client never hears back. It does that
``drops`` times, then forwards everything. Threads only; every loop is bounded and the
proxy stops by itself after ``lifetime_s``.
"""

from __future__ import annotations

import socket
import threading
import time

_CHUNK = 65536
_POLL_S = 0.2


class DropProxy:
    def __init__(
        self,
        target_port: int,
        command: bytes,
        *,
        reply_marker: bytes = b"",
        drops: int = 1,
        lifetime_s: float = 120.0,
    ) -> None:
        self.target_port = target_port
        self.command = command.upper()
        self.reply_marker = reply_marker
        self.remaining = drops
        self.dropped = 0
        self.connections = 0
        self._deadline = time.monotonic() + lifetime_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _alive(self) -> bool:
        return not self._closed.is_set() and time.monotonic() < self._deadline

    def start(self) -> DropProxy:
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._closed.set()
        for thread in list(self._threads):
            thread.join(2)
        self._listener.close()

    def __enter__(self) -> DropProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target, *args: object) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while self._alive():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            for sock in (client, server):
                sock.settimeout(_POLL_S)
            self.connections += 1
            link = {"armed": False, "open": True}
            self._spawn(self._client_to_server, client, server, link)
            self._spawn(self._server_to_client, client, server, link)

    def _recv(self, sock: socket.socket, link: dict[str, bool]) -> bytes | None:
        """Next chunk; None when the link is over (closed, dropped, proxy stopping)."""
        while self._alive() and link["open"]:
            try:
                data = sock.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return None
            return data or None
        return None

    def _client_to_server(self, client: socket.socket, server: socket.socket, link) -> None:  # type: ignore[no-untyped-def]
        while (data := self._recv(client, link)) is not None:
            if self.remaining > 0 and self.command in data.upper():
                link["armed"] = True  # set before forwarding: the next reply answers it
            try:
                server.sendall(data)
            except OSError:
                break
        self._shut(client, server, link)

    def _server_to_client(self, client: socket.socket, server: socket.socket, link) -> None:  # type: ignore[no-untyped-def]
        while (data := self._recv(server, link)) is not None:
            if link["armed"]:
                link["armed"] = False
                if not data.startswith(b"-") and self.reply_marker in data and self._take():
                    break  # swallow the reply: the command ran, the client never hears
            try:
                client.sendall(data)
            except OSError:
                break
        self._shut(client, server, link)

    def _take(self) -> bool:
        with self._lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            self.dropped += 1
            return True

    @staticmethod
    def _shut(client: socket.socket, server: socket.socket, link: dict[str, bool]) -> None:
        link["open"] = False
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
