"""One HTTP connection on a plain blocking socket, driven from worker threads.

Why not an event-loop stream: on loopback a body arrives faster than one core can hash and store it, and
an asyncio/trio stream adds per-chunk work on the loop thread (a fresh ``bytes`` per read, a wake-up per
chunk, the GIL handed back and forth with the thread that hashes). A blocking socket read with
``recv_into`` into a reused buffer, on a thread that releases the GIL while it waits, costs what a C
client's read costs: measured on this project's 2-core VM, a 256 MiB blob reached 0.97–1.11× ``curl -o
file`` this way against 0.70–0.74× through the event-loop stream (``benchmarks/remote_throughput.py``).

Every blocking call has a timeout, and cancelling the awaiting task shuts the socket down, which wakes
the thread at once; so a pull stays cancellable and stall-proof although its reads happen off the loop.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class SocketConn:
    """A connected (possibly TLS) blocking socket with async ``send``/``receive``/``aclose``.

    The async methods run the blocking call on a worker thread; :meth:`run_blocking` runs any function
    that uses :attr:`sock` the same way (the body pump of :mod:`.pump`).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._closed = False
        self._shut = False
        self._lock = threading.Lock()

    @classmethod
    async def connect(
        cls, host: str, port: int, *, timeout: float, tls: ssl.SSLContext | None = None,
    ) -> SocketConn:
        """Connect (and complete the TLS handshake, verifying ``host``) within ``timeout`` seconds."""

        def _connect() -> socket.socket:
            sock = socket.create_connection((host, port), timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
            return sock

        return cls(await _cancellable(_connect, on_cancel=None))

    async def send(self, data: bytes, timeout: float) -> None:
        def _send() -> None:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)

        await self.run_blocking(_send)

    async def receive(self, max_bytes: int, timeout: float) -> bytes:
        """Up to ``max_bytes`` (at least one); ``b""`` at EOF; ``TimeoutError`` after ``timeout`` idle seconds."""

        def _recv() -> bytes:
            self.sock.settimeout(timeout)
            return self.sock.recv(max_bytes)

        return await self.run_blocking(_recv)

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread; cancelling the caller shuts the socket down and waits for ``fn``."""
        return await _cancellable(fn, on_cancel=self.shutdown)

    def shutdown(self) -> None:
        """Wake any thread blocked on the socket (its call then fails or sees EOF)."""
        with self._lock:
            self._shut = True
            if self._closed:
                return
            # The base class's shutdown: SSLSocket.shutdown would also drop the TLS object under the feet of
            # a thread still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    @property
    def usable(self) -> bool:
        """Neither closed nor shut down (a cancelled call shuts the socket down)."""
        return not (self._closed or self._shut)

    def looks_idle(self) -> bool:
        """True when nothing is waiting to be read: no EOF, no reset, no stray bytes (TLS ones included).

        A keep-alive connection between two exchanges must be silent; a readable socket means the peer
        closed it, reset it or sent bytes that belong to no request — in every case it must not be reused.
        Non-blocking: one ``poll`` with a zero timeout.
        """
        if not self.usable:
            return False
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """Close the socket (idempotent). Never blocks: no thread may be using it at this point."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    async def aclose(self) -> None:
        self.close()


async def _cancellable(fn: Callable[[], T], on_cancel: Callable[[], None] | None) -> T:
    """``fn()`` on a worker thread; on cancellation, ``on_cancel()`` then wait (shielded) for the thread to end.

    Waiting matters: the thread may be writing into a file its caller is about to remove. A cancellation that
    comes before a worker thread took ``fn`` up (anyio then never calls it) waits for nothing: ``fn`` is marked
    abandoned and will not start — waiting for it would hang forever.
    """
    done = threading.Event()
    outcome: list = []
    lock = threading.Lock()
    phase = ["queued"]  # → "running" (a worker took it up) or "abandoned" (cancelled before that)

    def _run() -> None:
        with lock:
            if phase[0] == "abandoned":
                return
            phase[0] = "running"
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # re-raised in the awaiting task
            outcome.append((False, exc))
        finally:
            done.set()

    try:
        await anyio.to_thread.run_sync(_run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with lock:
            started = phase[0] == "running"
            if not started:
                phase[0] = "abandoned"
        if not started:
            raise
        if on_cancel is not None:
            on_cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(done.wait)
        if outcome and outcome[0][0] and isinstance(outcome[0][1], socket.socket):
            outcome[0][1].close()  # a connection made after all: nobody will use it
        raise
    ok, value = outcome[0]
    if ok:
        return value
    raise value
