"""The fast path's connections: urllib3 keep-alive pools that note whether a request reused a connection.

:class:`FastPool` holds one transport's urllib3 :class:`~urllib3.PoolManager` (made on first use: up to
:data:`MAX_IDLE` idle connections per origin, no retries or redirects of urllib3's own — :mod:`.fastpath`
does those — the transport's TLS context and timeouts). urllib3 checks a pooled connection before reuse and
replaces one the server closed or that holds unread bytes. :func:`open_blocking` sends one GET and reads
its response head (on a worker thread); it tells whether the request went over a connection opened for an
earlier one, and raises :class:`Stale` when such a connection failed before any byte of an answer.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError

#: Idle connections kept per origin.
MAX_IDLE = 16

_wire = threading.local()


class _NotesReuse:
    """Notes, per thread, whether a request went over a connection opened for an earlier one (a pooled one);
    mixed into urllib3's HTTP and HTTPS connections."""

    _fresh = False  # connected since the last request (HTTPS pools connect before the request)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._fresh = True

    def request(self, *args: Any, **kwargs: Any) -> None:
        _wire.reused = self.sock is not None and not self._fresh  # type: ignore[attr-defined]
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._fresh = False


class _NotedHTTPConnection(_NotesReuse, HTTPConnection):
    pass


class _NotedHTTPSConnection(_NotesReuse, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _NotedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _NotedHTTPSConnection


class FastPool:
    """The fast path's urllib3 pools of one transport (made on first use; ``close`` closes them all)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, connect_timeout: float, read_timeout: float) -> None:
        self.ssl_context = ssl_context
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._manager: urllib3.PoolManager | None = None
        self._lock = threading.Lock()
        self._closed = False

    def manager(self) -> urllib3.PoolManager:
        with self._lock:
            if self._closed:
                raise RuntimeError("the transport is closed")
            if self._manager is None:
                # the caller's TLS context, else the system's trust store with certificates and names verified
                ctx = self.ssl_context if self.ssl_context is not None else ssl.create_default_context()
                pm = urllib3.PoolManager(num_pools=16, maxsize=MAX_IDLE, block=False, retries=False,
                                         timeout=self.timeout, ssl_context=ctx)
                pm.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
                self._manager = pm
            return self._manager

    def drop_idle(self) -> None:
        """Close every idle connection (one was found dead in use: its siblings likely are too)."""
        with self._lock:
            if self._manager is not None:
                self._manager.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.clear()


class Stale(Exception):
    """A pooled connection failed before any byte of an answer: the request is sent once more."""


def open_blocking(pool: FastPool, url: str, headers: dict[str, str]) -> tuple[urllib3.BaseHTTPResponse, bool]:
    """Send the GET and read the response head (worker thread): ``(response, went over a pooled connection)``."""
    _wire.reused = False
    try:
        response = pool.manager().urlopen("GET", url, headers=headers, redirect=False, retries=False,
                                          preload_content=False, decode_content=False)
    except ProtocolError as exc:
        if getattr(_wire, "reused", False):
            raise Stale(_reason(exc)) from exc
        raise
    return response, bool(getattr(_wire, "reused", False))


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["MAX_IDLE", "FastPool", "Stale", "open_blocking"]
