"""The supervisor's signals: handlers only record them (async-signal-safe), the main loop
acts on them; a wake-up pipe makes the loop's wait return as soon as one arrives."""

from __future__ import annotations

import os
import signal
from collections import deque
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalInbox:
    """``queue`` holds the signals received, oldest first; ``fd`` is readable when one came."""

    def __init__(self) -> None:
        self.queue: deque[int] = deque()
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.queue.append(signum)  # record intent only; the loop acts

    def install(self) -> None:
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._record)

    def drain(self) -> None:
        """Empty the wake-up pipe (the signals themselves stay in ``queue``)."""
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass
