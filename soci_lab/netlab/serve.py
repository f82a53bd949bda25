"""Serving a background server from the command line until SIGINT/SIGTERM.

Shared by ``soci-lab registry serve`` and ``soci-lab netlab proxy``: start the server, print its URL as
the first line of stdout and flush at once (stdout may be a pipe or a file a script waits on), then
block until a signal asks to stop, and stop cleanly so the exit code is 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

from .background import BackgroundServer


def serve_until_signalled(server: BackgroundServer, out: TextIO | None = None) -> int:
    """Run ``server`` until SIGINT or SIGTERM; print its URL first. Returns the exit code (0)."""
    out = out or sys.stdout
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            out.write(server.url + "\n")
            out.flush()
            while not stop.wait(0.5):
                if not server.running:
                    return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
