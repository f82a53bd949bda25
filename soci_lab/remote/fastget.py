"""A lean GET for blob bodies: pooled keep-alive connections, h11 for the response head, raw reads for the body.

Why: httpx passes every body byte through h11's receive buffer and two more copies, which costs about a
third of the download rate on loopback. For transfers of ``FAST_MIN_BYTES`` and more (whole layers, big
ranges, the parallel puller's chunks) this module uses its own connections (blocking sockets driven from
worker threads, :mod:`.sockconn`; TLS verified as httpx would), sends one ``GET``, lets h11 parse the
status line and headers, and then either hands the socket's bytes to the caller as they arrive, counting them
against ``Content-Length`` (:meth:`RawExchange.aiter_raw`), or pumps them straight into a verified blob
sink without passing through the event loop at all (:meth:`RawExchange.pump_into`, :mod:`.pump`).

Connections are HTTP/1.1 keep-alive and go back to the transport's :class:`~.leanpool.LeanPool` when an
exchange ends cleanly: the body read to its exact end, no ``Connection: close`` from the server, nothing
read beyond the body, no error and no cancellation (:meth:`RawExchange.aclose`). A pooled connection that
turns out dead when reused (the server closed it while idle; it fails before a valid response head) is
closed and the request sent once more on a new connection without spending the retry budget: a GET is
idempotent and no byte of the answer was seen. That failed exchange is still recorded as an event.

It covers the success case: a 200/206, possibly after redirects (followed here, credentials dropped across
origins, the final URL cached when asked); a body without ``Content-Length`` (chunked, or ended by the
close) is decoded by h11 instead. Retryable statuses and connection errors spend the same retry budget as
the full path. Anything else — a challenge, an error status — is left to the full
:class:`~.transport.Transport` path, which re-sends the request and handles it; so auth and errors behave
exactly as everywhere else.
Each exchange is recorded as an ``http_request`` event like any other, with ``fast=True`` and ``reused``
(whether it went over a pooled connection).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING

import anyio
import h11
import httpx

from ..errors import RegistryUnreachable, TruncatedBody
from ..leanpath import FAST_MIN_BYTES  # noqa: F401  (re-exported: remote.ranges and tests read it here)
from .cleartext import check_cleartext
from .leanpool import Origin
from .pump import SplitSink, pump_body
from .retry import is_retryable_status, redact_url
from .sockconn import SocketConn
from .transport import tls_verification_error

if TYPE_CHECKING:
    from .transport import Exchange, RetryBudget, Transport

READ = 1 << 20
MAX_HEAD = 64 << 10
MAX_REDIRECTS = 10
_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class RawExchange:
    """A 200/206 answer with a known length, its body read straight from the socket."""

    def __init__(
        self,
        transport: Transport,
        stream: SocketConn,
        request: httpx.Request,
        status: int,
        headers: httpx.Headers,
        prefix: bytes,
        length: int | None,
        t0: float,
        attempt: int,
        range_: str | None,
        deadline: float,
        redirected: bool,
        conn: h11.Connection | None = None,
        *,
        origin: Origin,
        reused: bool,
        keep_alive: bool,
    ) -> None:
        self.transport = transport
        self.conn = conn  # set when the body is not a plain Content-Length body: h11 decodes it
        self.origin = origin
        #: the connection came from the pool (an event attribute)
        self.reused = reused
        #: the server allows another request on this connection (HTTP/1.1, no ``Connection: close``)
        self.keep_alive = keep_alive
        #: bytes beyond the announced body came with the head: the connection is out of step, never reused
        self.overran = length is not None and len(prefix) > length
        self._ended = False  # h11 saw the end of a decoded body
        self.stream = stream
        self.request = request
        self.status = status
        self.headers = headers
        self.prefix = prefix
        self.length = length
        self.t0 = t0
        self.attempt = attempt
        self.range = range_
        self.deadline = deadline
        self.redirected = redirected
        self.nbytes = 0
        self._closed = False

    @property
    def url(self) -> str:
        return str(self.request.url)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a break, a stall or an early end raises :class:`TruncatedBody`."""
        source = self._plain() if self.conn is None else self._decoded()
        async with aclosing(source) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                self.nbytes += len(chunk)
                yield chunk

    @property
    def read_timeout(self) -> float:
        return self.transport.http.timeout.read or 30.0

    async def _receive(self) -> bytes:
        """Up to ``READ`` bytes from the socket; ``b""`` at EOF; :class:`TruncatedBody` on stalls and errors."""
        read_timeout = self.read_timeout
        left = self.deadline - time.monotonic()
        want = READ if self.length is None else min(READ, self.length - self.nbytes)
        try:
            if left <= 0:
                raise TimeoutError
            data = await self.stream.receive(want, min(read_timeout, left))
            if time.monotonic() > self.deadline:
                raise TimeoutError
            return data
        except TimeoutError:
            if read_timeout < left:
                await self._broke(f"ReadTimeout: no data for {read_timeout:g} s")
            await self._broke("the whole-request timeout passed while the body was streaming")
        except OSError as exc:
            await self._broke(f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    @property
    def can_pump(self) -> bool:
        """True for a plain ``Content-Length`` body not yet read: :meth:`pump_into` can take it."""
        return self.conn is None and self.length is not None and self.nbytes == 0

    async def pump_into(self, sink: SplitSink, *, skip: int, limit: int) -> int:
        """Deliver body bytes ``skip .. skip+limit-1`` to ``sink`` on worker threads; the count delivered.

        Every delivered byte is hashed and stored before this returns or raises, so after a
        :class:`TruncatedBody` (whose ``delivered`` attribute holds the count) the caller resumes from there.
        """
        assert self.can_pump and self.length is not None
        prefix, self.prefix = self.prefix, b""
        result = await self.stream.run_blocking(lambda: pump_body(
            self.stream.sock, prefix, sink, body_left=self.length, skip=skip, limit=limit,  # type: ignore[arg-type]
            read_timeout=self.read_timeout, deadline=self.deadline))
        self.nbytes += result.received
        if result.error is not None:
            raise result.error
        if result.broke is not None:
            try:
                await self._broke(result.broke)
            except TruncatedBody as exc:
                exc.delivered = result.delivered  # type: ignore[attr-defined]
                raise
        return result.delivered

    async def _broke(self, reason: str) -> None:
        await self.aclose(error=reason)
        raise TruncatedBody(f"GET {redact_url(self.url)}: body broke after {self.nbytes} bytes ({reason})",
                            status=self.status)

    async def _plain(self) -> AsyncIterator[bytes]:
        assert self.length is not None
        if self.prefix:
            chunk, self.prefix = self.prefix[: self.length], b""
            yield chunk
        while self.nbytes < self.length:
            chunk = await self._receive()
            if not chunk:
                await self._broke(f"connection closed {self.length - self.nbytes} bytes before the announced end")
            yield chunk

    async def _decoded(self) -> AsyncIterator[bytes]:
        conn = self.conn
        assert conn is not None
        if self.prefix:  # (h11 takes an empty receive_data as the end of the stream)
            conn.receive_data(self.prefix)
            self.prefix = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._broke(f"RemoteProtocolError: {exc}")
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self._ended = isinstance(event, h11.EndOfMessage)
                return
            elif event is h11.NEED_DATA:
                conn.receive_data(await self._receive())
            else:
                await self._broke(f"unexpected {type(event).__name__} in the body")

    @property
    def reusable(self) -> bool:
        """The wire is in step for another request: the body was read to its exact end and nothing more.

        Decided from what happened on the socket, never from what the caller meant to read: a body read only
        in part (a 200 sliced to a range, a break, a cancellation) or overrun leaves the connection unusable.
        """
        if not self.keep_alive or not self.stream.usable or self.overran:
            return False
        if self.conn is None:
            return self.length is not None and self.nbytes == self.length
        return (self._ended and self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                and not self.conn.trailing_data[0])

    async def aclose(self, error: str | None = None) -> None:
        """Give the connection back to the pool when :attr:`reusable` and no error, else close it; record."""
        if self._closed:
            return
        self._closed = True
        if error is None and self.reusable:
            self.transport.lean_pool.give_back(self.origin, self.stream)
        else:
            await _close(self.stream)
        self.transport.record(self.request, self.t0, self.status, self.nbytes, self.attempt, self.range, error,
                              redirected=self.redirected, fast=True, reused=self.reused)

    async def __aenter__(self) -> RawExchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose(error=None if exc[0] is None else type(exc[1]).__name__)


async def _close(stream: SocketConn) -> None:
    with anyio.CancelScope(shield=True):
        await stream.aclose()


def _request_bytes(url: httpx.URL, headers: dict[str, str]) -> bytes:
    lines = [f"GET {url.raw_path.decode('ascii')} HTTP/1.1", f"Host: {url.netloc.decode('ascii')}"]
    for k, v in headers.items():
        if "\r" in v or "\n" in v or "\r" in k or "\n" in k:
            raise ValueError("header with a line break")
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _NoAnswer(OSError):
    """The connection ended (EOF or reset) before any byte of a response head arrived."""


#: how a connection the peer has closed fails a send or a receive
_GONE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _ask_blocking(sock: socket.socket, data: bytes, send_timeout: float, head_timeout: float) -> tuple[bytes, bytes]:
    """Send the request and read the response head, in one worker-thread hop: ``(head, body bytes after it)``."""
    buf = b""
    try:
        sock.settimeout(send_timeout)
        sock.sendall(data)
        until = time.monotonic() + head_timeout
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                return buf[: end + 4], buf[end + 4 :]
            if len(buf) > MAX_HEAD:
                raise h11.RemoteProtocolError("response head too large")
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete response head in time")
            sock.settimeout(left)
            chunk = sock.recv(READ)
            if not chunk:
                if not buf:
                    raise _NoAnswer("connection closed before any response")
                raise h11.RemoteProtocolError("connection closed before the response head ended")
            buf += chunk
    except TimeoutError:
        raise
    except _GONE as exc:
        if buf:
            raise
        raise _NoAnswer(f"{type(exc).__name__}: {exc}") from exc


def _parse_head(head: bytes, target: bytes, host: bytes) -> tuple[h11.Response, h11.Connection]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target=target, headers=[("Host", host)]))  # type: ignore[arg-type]
    conn.send(h11.EndOfMessage())
    conn.receive_data(head)
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            return event, conn
        if isinstance(event, h11.InformationalResponse):
            continue
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in the response head")


def _keep_alive(response: h11.Response, headers: httpx.Headers) -> bool:
    """HTTP/1.1 and no ``close`` among the ``Connection`` tokens: the server allows another request."""
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    return response.http_version == b"1.1" and "close" not in tokens


def _settle(transport: Transport, origin: Origin, stream: SocketConn, keep_alive: bool, headers: httpx.Headers,
            rest: bytes) -> None:
    """After an answer whose body is not read (a redirect, an error status): pool the connection only when
    that body (announced by ``Content-Length``) came whole with the head, else close it."""
    length = headers.get("Content-Length", "")
    whole = (length.isdigit() and int(length) == len(rest)
             and "chunked" not in headers.get("Transfer-Encoding", "").lower())
    if keep_alive and whole:
        transport.lean_pool.give_back(origin, stream)
    else:
        stream.close()


def _origin(url: httpx.URL) -> Origin:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


async def send_fast(
    transport: Transport,
    url: str,
    *,
    headers: dict[str, str],
    scopes: tuple[str, ...] | None,
    budget: RetryBudget,
    cache_redirect: bool,
) -> RawExchange | Exchange:
    """GET ``url``; a :class:`RawExchange` for a plain 200/206 answer, else whatever ``Transport.send`` gives."""
    cfg = transport.config
    connect_timeout = cfg.dial_timeout_msec / 1000
    header_timeout = max(cfg.response_header_timeout_msec, 1) / 1000
    while True:
        target = httpx.URL(url)
        req_headers = {"User-Agent": transport.http.headers.get("User-Agent", ""), "Accept-Encoding": "identity",
                       **headers}
        if cache_redirect and url in transport.redirects:
            target = httpx.URL(transport.redirects[url])
            req_headers["Referer"] = url
        redirected = False
        for _hop in range(MAX_REDIRECTS + 1):
            if scopes is not None and transport.same_origin(target):
                authz = await transport.auth.authorize(scopes)
                if authz:
                    req_headers["Authorization"] = authz
            else:
                req_headers.pop("Authorization", None)
            request = httpx.Request("GET", target)
            attempt = budget.used
            deadline = time.monotonic() + transport.request_timeout
            stream: SocketConn | None = None
            reused = False
            try:
                if target.scheme not in ("http", "https") or target.host == "":
                    raise ValueError("unsupported URL")
                origin = _origin(target)
                data = _request_bytes(target, req_headers)
                fresh = False
                while True:  # at most twice: a pooled connection found dead, then a new one
                    t0 = transport._now()
                    stream = None if fresh else transport.lean_pool.take(origin)
                    reused = stream is not None
                    if stream is None:
                        stream = await SocketConn.connect(
                            target.host, origin[2], timeout=connect_timeout,
                            tls=(transport.ssl_context or _tls()) if target.scheme == "https" else None)
                    ask = partial(_ask_blocking, stream.sock, data, transport.request_timeout,
                                  min(header_timeout, transport.request_timeout))
                    try:
                        head, rest = await stream.run_blocking(ask)
                        response, conn = _parse_head(head, target.raw_path, target.netloc)
                    except (_NoAnswer, h11.RemoteProtocolError) as exc:
                        if not reused:
                            raise
                        # the server closed (or broke) this pooled connection while it sat idle, and likely its
                        # siblings too: say so, drop them, and ask once more on a new connection
                        await _close(stream)
                        transport.lean_pool.discard(origin)
                        transport.record(request, t0, None, 0, attempt, headers.get("Range"),
                                         f"stale pooled connection ({_reason(exc)})", fast=True, reused=True)
                        fresh = True
                        continue
                    break
            except (OSError, TimeoutError, h11.RemoteProtocolError) as exc:
                if stream is not None:
                    await _close(stream)
                reason = _reason(exc)
                transport.record(request, t0, None, 0, attempt, headers.get("Range"), reason, fast=True,
                                 reused=reused)
                untrusted = tls_verification_error(exc)
                if untrusted is not None:
                    raise RegistryUnreachable(
                        f"GET {redact_url(str(target))}: TLS certificate not trusted ({untrusted}); "
                        "pass an ssl_context that trusts the registry's CA"
                    ) from None
                await budget.spend("GET", url, reason, None, None)
                break  # start over from the original URL
            except ValueError:
                if stream is not None:
                    await _close(stream)
                return await _fallback(transport, url, headers, scopes, budget, cache_redirect)
            except BaseException:  # a cancellation: the connection is in an unknown state
                if stream is not None:
                    await _close(stream)
                raise
            status = response.status_code
            rh = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers])
            keep_alive = _keep_alive(response, rh)
            location = rh.get("Location")
            if status in (301, 302, 303, 307, 308) and location:
                nxt = target.join(location)
                if _origin(nxt) == origin:
                    _settle(transport, origin, stream, keep_alive, rh, rest)
                else:
                    await _close(stream)
                transport.record(request, t0, status, 0, attempt, headers.get("Range"), None, fast=True,
                                 reused=reused)
                check_cleartext(nxt, transport.insecure, str(target))
                target = nxt
                req_headers.pop("Referer", None)
                redirected = True
                continue
            length = rh.get("Content-Length", "")
            plain = length.isdigit() and "chunked" not in rh.get("Transfer-Encoding", "").lower()
            if status in (200, 206):
                if cache_redirect and redirected:
                    transport.redirects[url] = str(target)
                return RawExchange(transport, stream, request, status, rh, rest, int(length) if plain else None, t0,
                                   attempt, headers.get("Range"), deadline, redirected, None if plain else conn,
                                   origin=origin, reused=reused, keep_alive=keep_alive)
            _settle(transport, origin, stream, keep_alive, rh, rest)
            error = None if status < 400 else f"HTTP {status}"
            transport.record(request, t0, status, 0, attempt, headers.get("Range"), error, fast=True, reused=reused)
            if str(target) != url and cache_redirect and status in (401, 403, 404, 410):
                transport.redirects.pop(url, None)
            if is_retryable_status(status):
                await budget.spend("GET", url, f"HTTP {status}", status, None)
                break
            return await _fallback(transport, url, headers, scopes, budget, cache_redirect)
        else:
            return await _fallback(transport, url, headers, scopes, budget, cache_redirect)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


async def _fallback(
    transport: Transport, url: str, headers: dict[str, str], scopes: tuple[str, ...] | None, budget: RetryBudget,
    cache_redirect: bool,
) -> Exchange:
    """The full path: challenges, error statuses and odd framings are handled there."""
    return await transport.send("GET", url, headers=headers, ok=(200, 206), stream=True, scopes=scopes,
                                follow_redirects=True, cache_redirect=cache_redirect, budget=budget)
