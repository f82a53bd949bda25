"""Idle keep-alive connections of the lean GET path (:mod:`.fastget`), a few per origin.

Why: a lean GET used to open a new connection (``Connection: close``) per request, which costs a TCP
(and TLS) handshake and, on a link with latency, one more round trip each time; that kept ranged chunks
of a few MiB on the slower httpx path. HTTP/1.1 keep-alive lets consecutive lean GETs to one origin share
a connection.

What is kept: only a connection whose last response body was read to its exact end, that neither side
marked ``Connection: close`` and that broke no rule on the way (the exchange decides that, see
:meth:`.fastget.RawExchange.aclose`). Everything else — an error, a cancellation, a body cut short or
read only in part, bytes beyond the body — closes the connection instead. A connection taken from the
pool is checked first (:meth:`.sockconn.SocketConn.looks_idle`): if the server closed it while it was idle,
or something arrived that no request asked for, it is closed and the next one (or a new one) is used.
The pool holds at most ``max_idle`` connections per origin, each for at most ``idle_timeout`` seconds, and
closing it (the transport's ``aclose``) closes them all; a connection given back after that is closed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .sockconn import SocketConn

#: ``(scheme, host, port)``: one pool of idle connections per origin.
Origin = tuple[str, str, int]

#: Idle connections kept per origin (the parallel puller's downloads of one image rarely exceed this).
MAX_IDLE = 16
#: Seconds an idle connection is kept; below common server keep-alive timeouts (aiohttp 75 s, nginx 75 s).
IDLE_TIMEOUT = 15.0


@dataclass
class _Idle:
    conn: SocketConn
    since: float


class LeanPool:
    """Idle lean connections by origin; all methods are non-blocking and called from the event loop."""

    def __init__(self, max_idle: int = MAX_IDLE, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[Origin, deque[_Idle]] = {}
        self._closed = False
        #: connections given back and kept / closed at once / found dead or expired when taken (for tests)
        self.kept = 0
        self.discarded = 0
        self.stale = 0

    def take(self, origin: Origin) -> SocketConn | None:
        """The most recently used idle connection to ``origin`` that still looks usable, or None."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            item = idle.pop()
            if now - item.since <= self.idle_timeout and item.conn.looks_idle():
                return item.conn
            self.stale += 1
            item.conn.close()
        return None

    def give_back(self, origin: Origin, conn: SocketConn) -> None:
        """Keep ``conn`` for the next request to ``origin`` (the caller vouches its exchange ended cleanly)."""
        idle = self._idle.setdefault(origin, deque())
        self._expire(idle)
        if self._closed or not conn.usable or len(idle) >= self.max_idle:
            self.discarded += 1
            conn.close()
            return
        self.kept += 1
        idle.append(_Idle(conn, time.monotonic()))

    def discard(self, origin: Origin) -> None:
        """Close every idle connection to ``origin`` (one of them was found dead: the others likely are)."""
        idle = self._idle.pop(origin, None)
        while idle:
            self.stale += 1
            idle.popleft().conn.close()

    def idle_count(self, origin: Origin | None = None) -> int:
        if origin is not None:
            return len(self._idle.get(origin, ()))
        return sum(len(d) for d in self._idle.values())

    def _expire(self, idle: deque[_Idle]) -> None:
        now = time.monotonic()
        while idle and now - idle[0].since > self.idle_timeout:
            self.stale += 1
            idle.popleft().conn.close()

    def close(self) -> None:
        """Close every idle connection; connections given back later are closed too."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.popleft().conn.close()
        self._idle.clear()
