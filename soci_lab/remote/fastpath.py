"""The fast path: large blob GETs over urllib3's pooled blocking connections, driven from worker threads.

Why: httpx passes every body byte through h11's receive buffer, several copies and a trip through the event
loop per read, which costs about half the download rate on loopback. For bodies of ``FAST_MIN_BYTES`` and
more (:mod:`soci_lab.fastpath`: whole layers, big ranges, the parallel puller's chunks, big span reads) the
transport sends the GET with urllib3 (a well-kept blocking client with keep-alive pools) on a worker thread,
and reads the body there: into memory its first MiB with the head, then up to 8 MiB per thread hop
(:meth:`FastExchange.aiter_raw`), or pumped straight into a verified blob sink on three threads without
passing through the event loop at all (:meth:`FastExchange.pump_into`, :mod:`.pump`).
Worker threads work the same under asyncio and trio.

It covers the success case: a 200/206, possibly after redirects (followed here one hop at a time, each hop
through :func:`~.cleartext.check_cleartext`, the registry's credentials sent only to its own origin, the
final URL cached when asked). Retryable statuses and connection errors spend the caller's
:class:`~.transport.RetryBudget`, as on the httpx path; anything else — a challenge, an error status — is
left to :meth:`.Transport.send`, which re-sends the request and handles it, so auth and errors behave
exactly as everywhere else.

Connections: urllib3 keeps idle keep-alive connections per origin and checks each one before reuse (a
connection the server closed, or that has unread bytes, is replaced). A connection goes back to the pool
only when its body was read to its exact end and nothing went wrong; otherwise it is closed. A pooled
connection that fails before any byte of an answer (the server closed it just then) is replaced and the
request sent once more without spending the budget: a GET is idempotent and nothing of the answer was seen.

Cancellation: while the request waits for its answer, a cancelled caller leaves the thread to finish on
its own (its answer, if any, is closed); while a body is read, cancelling shuts the socket down
(``HTTPResponse.shutdown``), which wakes the thread at once, and waits for it, so nothing is written after
the caller has gone. Each exchange is an ``http_request`` event like any other, with ``fast=True`` and
``reused`` (whether it went over a pooled connection).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from ..errors import RegistryUnreachable, TruncatedBody
from ..fastpath import FAST_MIN_BYTES  # noqa: F401  (re-exported: remote.ranges and tests read it here)
from .cleartext import check_cleartext
from .fastpool import FastPool, Stale, open_blocking
from .pump import SplitSink, pump_body
from .retry import is_retryable_status, redact_url
from .transport import USER_AGENT, cannot_heal, tls_verification_error

if TYPE_CHECKING:
    from .transport import Exchange, RetryBudget, Transport

T = TypeVar("T")

#: Body bytes read with the head when the body goes to an async sink: the sink sees its first bytes after
#: one hop (a slow server's body reaches it as it comes), and the exchange exists — a cancellation is
#: recorded in its event — once this much has arrived.
FIRST = 1 << 20
#: Body bytes taken per thread hop after that: a range of up to ``FIRST + READ`` costs two hops (each hop,
#: a wake-up of the event loop, costs more than the memory a larger piece holds).
READ = 8 << 20
MAX_REDIRECTS = 10
#: What a request's worker thread brings back: the response, whether it went over a pooled connection, the
#: first body bytes (``prefetch``) and a read failure met after some of them.
_Opened = tuple[urllib3.BaseHTTPResponse, bool, list[bytes], list[BaseException]]
#: Body bytes never read ahead of with a buffered ``read``: http.client's reader may fill its buffer (8 KiB)
#: past the ``n`` asked, and bytes past the body's end would vanish with it instead of marking the connection
#: unusable (urllib3 drops a pooled connection whose socket holds unread bytes). The body's last ``MARGIN``
#: bytes are read with ``read1``, which never reads more than asked.
MARGIN = 64 << 10


async def _open(pool: FastPool, url: str, headers: dict[str, str], prefetch: int) -> _Opened:
    """:func:`~.fastpool.open_blocking` on a worker thread and, for a 200/206, up to ``prefetch`` body bytes in
    the same hop (a body bound for memory then costs one hop per MiB, not one more for its start). A cancelled
    caller leaves the thread behind (nothing is written by it) and whatever answer it gets is closed."""
    lock = threading.Lock()
    state = {"abandoned": False}

    def run() -> _Opened:
        response, reused = open_blocking(pool, url, headers)
        first: list[bytes] = []
        failed: list[BaseException] = []
        if prefetch and response.status in (200, 206):
            length = response.headers.get("Content-Length", "")
            want = min(prefetch, int(length)) if length.isdigit() else prefetch
            try:
                first = _fill(response, want, failed)
            except (Urllib3Error, OSError) as exc:  # met again, and reported, by the exchange's first read
                failed.append(exc)
        with lock:
            abandoned = state["abandoned"]
        if abandoned:
            _discard(response)
        return response, reused, first, failed

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with lock:
            state["abandoned"] = True
        raise


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close the response and its connection (its body was not read to the end: the wire is out of step)."""
    try:
        response.close()
    finally:
        response.release_conn()


async def run_cancellable(fn: Callable[[], T], on_cancel: Callable[[], None] | None) -> T:
    """``fn()`` on a worker thread; on cancellation, ``on_cancel()`` then wait (shielded) for the thread to end.

    Waiting matters: the thread may be writing into a file its caller is about to remove. A cancellation that
    comes before a worker thread took ``fn`` up (anyio then never calls it) waits for nothing: ``fn`` is marked
    abandoned and will not start — waiting for it would hang forever.
    """
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []
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
        raise
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _piece(response: urllib3.BaseHTTPResponse, n: int) -> bytes:
    """One read of up to ``n`` body bytes for the pump (worker thread) that never takes a byte past the body's
    end.

    Within the body, one ``read``: http.client's buffered reader fills one ``bytes`` of ``n`` straight from the
    socket (one copy, no joining of receives; a failure inside it loses its bytes, which the pump never
    delivered, so the resumption asks for them again); for the last :data:`MARGIN` bytes (and bodies of
    unknown length) one ``read1``, what one receive brings."""
    left = getattr(response, "length_remaining", None)
    if left is None or left <= MARGIN:
        return response.read1(n, decode_content=False)
    return response.read(min(n, left - MARGIN), decode_content=False)


def _fill(response: urllib3.BaseHTTPResponse, n: int, failed: list[BaseException]) -> list[bytes]:
    """Up to ``n`` body bytes as the pieces single receives bring (``read1``: never past the body's end, and
    no copy to join them: the caller takes the pieces), as many as arrive before the end, a failure or ``n``
    (worker thread). Pieces read before a failure are returned and the failure put in ``failed`` for the next
    call, so none is lost. A failure already in ``failed`` (put there by ``_open``) is raised first."""
    if failed:
        raise failed.pop()
    pieces: list[bytes] = []
    got = 0
    try:
        while got < n:
            piece = response.read1(n - got, decode_content=False)
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    except (Urllib3Error, OSError) as exc:
        if not pieces:
            raise
        failed.append(exc)
    return pieces


def _reader(response: urllib3.BaseHTTPResponse) -> Callable[[int], bytes]:
    """``read(n)`` of the body for the pump: ``n`` bytes (fewer only at the body's end), filled by http.client's
    buffered reader straight from the socket into one ``bytes`` (one copy, as one receive's piece would be,
    but a whole piece: a quarter of the queue hand-offs); a stall raises the built-in ``TimeoutError``."""

    def read(n: int) -> bytes:
        try:
            return _piece(response, n)
        except ReadTimeoutError as exc:
            raise TimeoutError(str(exc)) from exc

    return read


class FastExchange:
    """A 200/206 answer of the fast path, its body read on worker threads."""

    def __init__(
        self,
        transport: Transport,
        response: urllib3.BaseHTTPResponse,
        request: httpx.Request,
        headers: Mapping[str, str],
        t0: float,
        attempt: int,
        range_: str | None,
        deadline: float,
        redirected: bool,
        reused: bool,
        first: list[bytes] | None = None,
        failed: list[BaseException] | None = None,
    ) -> None:
        self.transport = transport
        self.response = response
        self.request = request
        self.status = response.status
        self.headers = headers
        length = headers.get("Content-Length", "")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        #: the announced body length (None: chunked, or ended by the close)
        self.length = int(length) if length.isdigit() and not chunked else None
        self.t0 = t0
        self.attempt = attempt
        self.range = range_
        self.deadline = deadline
        self.redirected = redirected
        #: the request went over a pooled connection (an event attribute)
        self.reused = reused
        self.nbytes = 0
        self._ended = False  # the body was read to its end
        #: a read failed after delivering bytes: raised by the next read
        self._failed: list[BaseException] = failed if failed is not None else []
        #: body bytes read with the head (see ``_open``), delivered first
        self._first = first or []
        self._closed = False

    @property
    def url(self) -> str:
        return str(self.request.url)

    async def _read(self, n: int) -> list[bytes]:
        """Up to ``n`` body bytes in pieces (none at the end); :class:`TruncatedBody` on stalls, breaks, early
        ends."""
        if time.monotonic() > self.deadline:
            await self._broke("the whole-request timeout passed while the body was streaming")
        try:
            data = await run_cancellable(lambda: _fill(self.response, n, self._failed), on_cancel=self._shutdown)
        except ReadTimeoutError:
            await self._broke(f"ReadTimeout: no data for {self.transport.read_timeout:g} s")
        except (Urllib3Error, OSError) as exc:
            await self._broke(_reason(exc))
        if not data:
            self._ended = True
        return data

    def _shutdown(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, OSError):  # released or closed: nothing blocks on it
            self.response.shutdown()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (up to ``READ`` bytes per piece); a break, a stall or an early end raises
        :class:`TruncatedBody`."""
        first, self._first = self._first, []
        for chunk in first:
            self.nbytes += len(chunk)
            self._ended = self.nbytes == self.length  # (a caller may stop at the last byte it wants)
            yield chunk
        while True:
            want = READ if self.length is None else min(READ, self.length - self.nbytes)
            if want <= 0:
                self._ended = True
                return
            chunks = await self._read(want)
            if not chunks:
                if self.length is not None and self.nbytes < self.length:
                    await self._broke(f"connection closed {self.length - self.nbytes} bytes before the "
                                      "announced end")
                return
            for chunk in chunks:
                self.nbytes += len(chunk)
                self._ended = self.nbytes == self.length
                yield chunk

    @property
    def can_pump(self) -> bool:
        """True for a ``Content-Length`` body not yet read: :meth:`pump_into` can take it."""
        return self.length is not None and self.nbytes == 0 and not self._first and not self._failed

    async def pump_into(self, sink: SplitSink, *, skip: int, limit: int) -> int:
        """Deliver body bytes ``skip .. skip+limit-1`` to ``sink`` on worker threads; the count delivered.

        Every delivered byte is hashed and stored before this returns or raises, so after a
        :class:`TruncatedBody` (whose ``delivered`` attribute holds the count) the caller resumes from there.
        """
        assert self.can_pump and self.length is not None
        length = self.length
        result = await run_cancellable(lambda: pump_body(
            _reader(self.response), sink, body_left=length, skip=skip, limit=limit,
            read_timeout=self.transport.read_timeout, deadline=self.deadline), on_cancel=self._shutdown)
        self.nbytes += result.received
        self._ended = self.nbytes == length
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

    async def aclose(self, error: str | None = None) -> None:
        """Give the connection back to the pool when the body was read to its end and nothing went wrong, else
        close it; record the event (once)."""
        if self._closed:
            return
        self._closed = True
        if error is None and self._ended:
            self.response.release_conn()
        else:
            _discard(self.response)
        self.transport.record(self.request, self.t0, self.status, self.nbytes, self.attempt, self.range, error,
                              redirected=self.redirected, fast=True, reused=self.reused)

    async def __aenter__(self) -> FastExchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose(error=None if exc[0] is None else type(exc[1]).__name__)


def _whole(response: urllib3.BaseHTTPResponse) -> bool:
    """Read a small unread body (a redirect's, an error's) so the connection can be reused; False if it is not
    small or not whole (then the connection is closed)."""
    length = response.headers.get("Content-Length", "")
    if not length.isdigit() or int(length) > 64 << 10:
        return False
    try:
        response.read(decode_content=False)
    except (Urllib3Error, OSError):
        return False
    return True


def _settle(response: urllib3.BaseHTTPResponse) -> None:
    """After an answer whose body is not wanted: pool the connection when that body is small and whole."""
    if _whole(response):
        response.release_conn()
    else:
        _discard(response)


async def send_fast(
    transport: Transport,
    url: str,
    *,
    headers: dict[str, str],
    scopes: tuple[str, ...] | None,
    budget: RetryBudget,
    cache_redirect: bool,
    prefetch: int = 0,
) -> FastExchange | Exchange:
    """GET ``url``; a :class:`FastExchange` for a 200/206 answer, else whatever ``Transport.send`` gives.

    ``prefetch``: body bytes to read with the head (for a body bound for memory, not for a pump)."""
    range_ = headers.get("Range")
    while True:
        target = httpx.URL(url)
        req_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
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
            if target.scheme not in ("http", "https") or not target.host:
                return await _fallback(transport, url, headers, scopes, budget, cache_redirect)
            fresh = False
            response: urllib3.BaseHTTPResponse | None = None
            while True:  # at most twice: a pooled connection found dead in use, then a new one
                t0 = transport.now()
                try:
                    response, reused, first, failed = await _open(transport.fast_pool, str(target), req_headers,
                                                                  prefetch)
                except Stale as exc:
                    transport.record(request, t0, None, 0, attempt, range_, f"stale pooled connection ({exc})",
                                     fast=True, reused=True)
                    if not fresh:
                        # the server closed this pooled connection while it sat idle, and likely its siblings
                        # too: drop them and ask once more on a new connection, without spending the budget
                        transport.fast_pool.drop_idle()
                        fresh = True
                        continue
                    await budget.spend("GET", url, f"stale pooled connection ({exc})", None, None)
                except (Urllib3Error, OSError) as exc:
                    reason = _reason(exc)
                    transport.record(request, t0, None, 0, attempt, range_, reason, fast=True, reused=False)
                    untrusted = tls_verification_error(exc)
                    if untrusted is not None:
                        raise RegistryUnreachable(
                            f"GET {redact_url(str(target))}: TLS certificate not trusted ({untrusted}); "
                            "pass an ssl_context that trusts the registry's CA"
                        ) from None
                    hopeless = cannot_heal(exc, target.host, target.port)
                    if hopeless is not None:
                        raise RegistryUnreachable(f"GET {redact_url(url)}: {hopeless}") from None
                    await budget.spend("GET", url, reason, None, None)
                break
            if response is None:
                break  # start over from the original URL
            status = response.status
            rh = response.headers  # (urllib3's parsed head, case-insensitive: not parsed again)
            location = rh.get("Location")
            if status in (301, 302, 303, 307, 308) and location:
                await anyio.to_thread.run_sync(_settle, response)
                transport.record(request, t0, status, 0, attempt, range_, None, fast=True, reused=reused)
                nxt = target.join(location)
                check_cleartext(nxt, transport.insecure, str(target))
                target = nxt
                req_headers.pop("Referer", None)
                redirected = True
                continue
            if status in (200, 206):
                if cache_redirect and redirected:
                    transport.redirects[url] = str(target)
                return FastExchange(transport, response, request, rh, t0, attempt, range_, deadline, redirected,
                                    reused, first, failed)
            await anyio.to_thread.run_sync(_settle, response)
            error = None if status < 400 else f"HTTP {status}"
            transport.record(request, t0, status, 0, attempt, range_, error, fast=True, reused=reused)
            if str(target) != url and cache_redirect and status in (401, 403, 404, 410):
                transport.redirects.pop(url, None)
            if is_retryable_status(status):
                await budget.spend("GET", url, f"HTTP {status}", status, None)
                break
            return await _fallback(transport, url, headers, scopes, budget, cache_redirect)
        else:
            return await _fallback(transport, url, headers, scopes, budget, cache_redirect)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _fallback(
    transport: Transport, url: str, headers: dict[str, str], scopes: tuple[str, ...] | None, budget: RetryBudget,
    cache_redirect: bool,
) -> Exchange:
    """The httpx path: challenges, error statuses and odd framings are handled there."""
    return await transport.send("GET", url, headers=headers, ok=(200, 206), stream=True, scopes=scopes,
                                follow_redirects=True, cache_redirect=cache_redirect, budget=budget)
