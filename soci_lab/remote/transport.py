"""The HTTP core under every registry call: retries, authentication, redirect caching, events.

One :class:`Transport` serves one registry host. :meth:`Transport.send` sends a request until it gets an
answer worth returning: connection errors, 429 and 5xx (not 501) are retried with the jittered backoff
of :mod:`.retry`; a 401 is answered through the :class:`~.auth.Authenticator` (at most twice per call);
a status the caller did not expect becomes a :class:`~soci_lab.errors.RegistryError` subclass with one
line naming the request (query values redacted). Each exchange on the wire, retried or not, becomes one
``http_request`` event. Response bodies can be streamed; a body that breaks mid-way raises
:class:`~soci_lab.errors.TruncatedBody`, which callers that can resume (ranged reads, blob downloads)
catch and turn into a further attempt from the same :class:`RetryBudget`.

Timeouts come from ``[http]``: ``dial_timeout_msec`` (connect), ``response_header_timeout_msec`` (each
read, so a stalled body is noticed too) and ``request_timeout_msec`` (each attempt as a whole). A TLS
certificate that fails verification is reported at once, not retried. Large body GETs take the fast path
(:mod:`.fastpath`, urllib3 on worker threads), which shares this class's auth state, redirect cache, budget,
timeouts and events through its public attributes, and keeps its own idle connections in
:attr:`Transport.fast_pool`; :mod:`.ranges` chooses between the two by body size.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ..config import HTTPConfig
from ..errors import (
    AuthenticationError,
    NotFound,
    RangeNotSatisfiable,
    RegistryError,
    RegistryUnreachable,
    ResponseTooLarge,
    TooManyRetries,
    TruncatedBody,
)
from ..events import EventRecorder
from .auth import Authenticator, Credentials
from .cleartext import CleartextRefused, check_cleartext
from .fastpool import FastPool
from .retry import RetryPolicy, is_retryable_status, parse_retry_after, redact_url

USER_AGENT = "soci-lab/0.1 (soci-snapshotter re-creation)"

#: httpcore reads an HTTP/1.1 connection 64 KiB at a time; blob bodies then cost one trip through h11 and
#: the event loop per 64 KiB, which caps loopback downloads far below curl. Asking the socket for up to
#: 1 MiB per read lets a busy connection deliver ~256 KiB pieces (what the kernel has ready) for the same
#: per-read overhead. This is a class attribute of httpcore's async HTTP/1.1 connection, so it applies to
#: every async httpx client in the process; it is only ever raised, never lowered.
READ_SIZE = 1 << 20


def _raise_httpcore_read_size() -> None:
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:  # a future httpcore without that class: keep its default
        return
    if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
        AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE


_raise_httpcore_read_size()

#: Request bodies: bytes, or a factory giving a fresh (async) iterable per attempt so a retry can resend.
Body = bytes | Callable[[], AsyncIterable[bytes] | Iterable[bytes]] | None

_RETRYABLE_EXC = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
)


@dataclass
class RetryBudget:
    """The retries one logical operation may still spend, shared by its requests and body resumptions."""

    policy: RetryPolicy
    used: int = 0
    last_status: int | None = None
    last_reason: str = ""
    saw_response: bool = False

    async def spend(self, method: str, url: str, reason: str, status: int | None, retry_after: float | None) -> None:
        """Wait before the next attempt, or raise when the budget is spent."""
        self.last_reason, self.last_status = reason, status if status is not None else self.last_status
        self.saw_response = self.saw_response or status is not None
        if self.used >= self.policy.max_retries:
            attempts = self.used + 1
            if not self.saw_response:
                raise RegistryUnreachable(
                    f"{method} {redact_url(url)}: unreachable after {attempts} attempts (last: {reason})"
                )
            raise TooManyRetries(
                f"{method} {redact_url(url)}: gave up after {attempts} attempts (last: {reason})",
                status=self.last_status,
            )
        delay = self.policy.delay(self.used, retry_after)
        self.used += 1
        await anyio.sleep(delay)


def _error_code(body: bytes) -> tuple[str | None, str | None]:
    """The first ``errors[].code``/``message`` of a distribution error body, if it is one."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        return str(first.get("code")) or None, str(first.get("message") or "")[:200] or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return None, None


def status_error(method: str, url: str, status: int, body: bytes = b"", what: str | None = None) -> RegistryError:
    """The exception for an unexpected status: NotFound, RangeNotSatisfiable, AuthenticationError or RegistryError."""
    code, message = _error_code(body)
    text = f"{what or method + ' ' + redact_url(url)}: HTTP {status}"
    if code:
        text += f" {code}"
    if message:
        text += f" ({message})"
    if what:
        text += f" [{method} {redact_url(url)}]"
    cls: type[RegistryError]
    if status == 404:
        cls = NotFound
    elif status == 416:
        cls = RangeNotSatisfiable
    elif status in (401, 403):
        cls = AuthenticationError
    else:
        cls = RegistryError
    return cls(text, status=status, code=code)


class Exchange:
    """One answered request: the response, its body (read or streamed) and its ``http_request`` event."""

    def __init__(
        self,
        transport: Transport,
        response: httpx.Response,
        t0: float,
        attempt: int,
        range_: str | None,
        deadline: float | None = None,
    ) -> None:
        self.transport = transport
        self.deadline = deadline
        self.response = response
        self.t0 = t0
        self.attempt = attempt
        self.range = range_
        self.nbytes = 0
        self._closed = False
        self.content = b""

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def url(self) -> str:
        return str(self.response.url)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a break raises :class:`TruncatedBody` (after recording the event)."""
        try:
            async for chunk in self.response.aiter_raw():
                if self.deadline is not None and anyio.current_time() > self.deadline:
                    raise httpx.ReadTimeout("the whole-request timeout passed while the body was streaming")
                self.nbytes += len(chunk)
                yield chunk
        except _RETRYABLE_EXC as exc:
            reason = _describe(exc)
            await self.aclose(error=reason)
            raise TruncatedBody(
                f"{self.response.request.method} {redact_url(self.url)}: "
                f"body broke after {self.nbytes} bytes ({reason})",
                status=self.status,
            ) from None

    async def aread(self, limit: int | None = None) -> bytes:
        """The whole body; ``limit`` bounds it (``RegistryError`` beyond), so a lying server cannot blow memory."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.aiter_raw():
            total += len(chunk)
            if limit is not None and total > limit:
                await self.aclose(error="body too large")
                raise ResponseTooLarge(
                    f"{self.response.request.method} {redact_url(self.url)}: body exceeds the {limit}-byte limit",
                    status=self.status,
                )
            parts.append(chunk)
        self.content = b"".join(parts)
        return self.content

    async def aclose(self, error: str | None = None) -> None:
        """Close the response and record its event (once)."""
        if self._closed:
            return
        self._closed = True
        await self.response.aclose()
        self.transport.record(
            self.response.request, self.t0, self.status, self.nbytes, self.attempt, self.range, error,
            redirected=bool(self.response.history),
        )

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose(error=None if exc[0] is None else type(exc[1]).__name__)


def tls_verification_error(exc: BaseException) -> str | None:
    """The reason when ``exc`` (or what caused it) is a failed certificate check: not worth retrying."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur.verify_message or str(cur)
        cur = cur.__cause__ or cur.__context__
    return None


def cannot_heal(exc: BaseException, host: str, port: int | None = None) -> str | None:
    """Why retrying a failed connect is pointless, or None when a retry may help.

    A name that does not resolve, and a refused connection to a loopback host (nothing listens on that
    port of this machine), do not heal within a retry budget: the error is reported at once instead of
    after every retry's back-off. Resets, timeouts and refusals by remote hosts are still retried.
    """
    import socket

    from ..oci import is_loopback_host

    todo: list[BaseException] = [exc]
    seen = 0
    refused = resolved = False
    why = ""
    while todo and seen < 32:  # the causes, and the members of groups (trio: one error per address tried)
        cause = todo.pop()
        seen += 1
        if isinstance(cause, socket.gaierror):
            resolved, why = True, cause.strerror or str(cause)
        elif isinstance(cause, ConnectionRefusedError):
            refused = True
        elif isinstance(cause, OSError) and cause.errno is not None:
            return None  # another failure (unreachable network, reset…): worth a retry
        if isinstance(cause, BaseExceptionGroup):
            todo += list(cause.exceptions)
        todo += [c for c in (cause.__cause__, cause.__context__) if c is not None]
    if resolved:
        return f"cannot resolve host {host!r} ({why})"
    if refused and is_loopback_host(host):
        where = f"{host}:{port}" if port else host
        return f"connection refused: nothing listens on {where}"
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_tls_lock = threading.Lock()
_default_tls: ssl.SSLContext | None = None
_no_ca: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """The verifying TLS context of every client without an ``ssl_context`` of its own: httpx's default (the
    CA bundle of ``certifi``, hostname checked), built on the first https request of the process and shared
    from then on. Loading the CA bundle costs 15–90 ms of CPU; a client that only talks plain HTTP (a
    registry on loopback) never pays it."""
    global _default_tls
    with _tls_lock:
        if _default_tls is None:
            import certifi

            _default_tls = ssl.create_default_context(cafile=certifi.where())
        return _default_tls


def _no_ca_context() -> ssl.SSLContext:
    """A context that verifies certificates against no CA at all: what the plain-HTTP pool holds, because
    httpcore wants one. It never sends an https request (:class:`SchemeTransport` routes those elsewhere);
    if one ever got there, its handshake would fail instead of going unverified."""
    global _no_ca
    with _tls_lock:
        if _no_ca is None:
            _no_ca = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname: refuses all
        return _no_ca


class SchemeTransport(httpx.AsyncBaseTransport):
    """httpx's transport split by scheme, so a client builds a TLS context only when it speaks TLS.

    ``http://`` requests go through a connection pool made at once (with :func:`_no_ca_context`);
    ``https://`` ones through a pool made on the first https request, with ``ssl_context`` or else
    :func:`default_tls_context`. Certificates are verified exactly as with httpx's own default transport.
    """

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self._plain = httpx.AsyncHTTPTransport(verify=_no_ca_context(), limits=limits, trust_env=False)
        self._tls: httpx.AsyncHTTPTransport | None = None

    @property
    def tls_built(self) -> bool:
        """Whether the https pool (and so its TLS context) has been made."""
        return self._tls is not None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return await self._plain.handle_async_request(request)
        if self._tls is None:
            ctx = self.ssl_context if self.ssl_context is not None else default_tls_context()
            self._tls = httpx.AsyncHTTPTransport(verify=ctx, limits=self.limits, trust_env=False)
        return await self._tls.handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()


@dataclass
class _Counters:
    requests: int = 0
    bytes: int = 0
    by_status: dict[int | None, int] = field(default_factory=dict)


class Transport:
    """Retrying, authenticating, instrumented HTTP for one registry origin."""

    def __init__(
        self,
        base_url: str,
        *,
        creds: Credentials | None = None,
        creds_note: str | None = None,
        config: HTTPConfig | None = None,
        events: EventRecorder | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        fast_path: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        insecure: bool = False,
    ) -> None:
        self.config = config or HTTPConfig()
        #: TLS settings for https registries (None: :func:`default_tls_context`, built on the first https
        #: request; certificates always verified)
        self.ssl_context = ssl_context
        self.policy = RetryPolicy.from_config(self.config)
        #: ``[http] request_timeout_msec``: the whole exchange, headers and body, per attempt
        self.request_timeout = max(self.config.request_timeout_msec, 1) / 1000
        self.base = httpx.URL(base_url)
        self.events = events
        self.counters = _Counters()
        cfg = self.config
        timeout = httpx.Timeout(
            connect=cfg.dial_timeout_msec / 1000,
            read=max(cfg.response_header_timeout_msec, 1) / 1000,
            write=cfg.request_timeout_msec / 1000,
            pool=cfg.request_timeout_msec / 1000,
        )
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(
            timeout=timeout,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            transport=http_transport if http_transport is not None else SchemeTransport(limits, ssl_context),
            follow_redirects=False,
            trust_env=False,
            event_hooks={"request": [self._refuse_cleartext]},
        )
        #: plain HTTP to non-loopback hosts allowed, and credentials to a cleartext token realm (cleartext.py,
        #: auth.py): the user's ``--insecure``
        self.insecure = insecure
        host = self.base.netloc.decode()
        self.auth = Authenticator(host, creds, self._fetch_token, creds_note, insecure=insecure)
        #: original URL → final URL of redirected GETs (soci's CacheRedirects, used by parallel pull)
        self.redirects: dict[str, str] = {}
        #: ``[http] response_header_timeout_msec``: the longest wait for any read, head or body (seconds)
        self.read_timeout = max(cfg.response_header_timeout_msec, 1) / 1000
        #: large body GETs take the fast path (see fastpath.py); False sends everything through httpx
        self.fast_path = fast_path
        #: the fast path's keep-alive connections (urllib3 pools, made on first use)
        self.fast_pool = FastPool(ssl_context, cfg.dial_timeout_msec / 1000,
                                  min(self.read_timeout, self.request_timeout))

    async def aclose(self) -> None:
        self.fast_pool.close()
        await self.http.aclose()

    async def _refuse_cleartext(self, request: httpx.Request) -> None:
        """httpx request hook: every request, redirects included, passes :func:`check_cleartext`."""
        check_cleartext(request.url, self.insecure)

    def same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (self.base.scheme, self.base.host, self.base.port)

    def record(
        self,
        request: httpx.Request,
        t0: float,
        status: int | None,
        nbytes: int,
        attempt: int,
        range_: str | None,
        error: str | None,
        **attrs: Any,
    ) -> None:
        self.counters.requests += 1
        self.counters.bytes += nbytes
        self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
        if self.events is None:
            return
        url = request.url
        self.events.emit(
            "http_request",
            t0,
            path=url.path,
            nbytes=nbytes,
            ok=error is None and status is not None and status < 400,
            error=error,
            method=request.method,
            status=status,
            range=range_,
            retry=attempt,
            host=url.netloc.decode(),
            **attrs,
        )

    def now(self) -> float:
        """The clock events are stamped with."""
        return self.events.now() if self.events is not None else time.monotonic()

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        content: Body = None,
        scopes: tuple[str, ...] | None = (),
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        follow_redirects: bool = False,
        cache_redirect: bool = False,
        budget: RetryBudget | None = None,
        what: str | None = None,
        read_limit: int | None = None,
    ) -> Exchange:
        """Send until answered with a status in ``ok``; see the module docstring for what is retried.

        ``scopes=None`` sends no registry credentials (token endpoint, foreign hosts). With ``stream`` the
        body is left unread and the caller must ``aclose()`` the exchange (or use it as a context manager).
        """
        budget = budget or RetryBudget(self.policy)
        auth_rounds = 0
        tried_cache = False
        while True:
            req_headers = dict(headers or {})
            target = url
            if cache_redirect and not tried_cache and url in self.redirects:
                target = self.redirects[url]
                req_headers["Referer"] = url
            request = self.http.build_request(method, target, headers=req_headers, params=params,  # type: ignore[arg-type]
                                              content=_body(content))
            authz = None
            if scopes is not None and self.same_origin(request.url):
                authz = await self.auth.authorize(scopes)
                if authz:
                    request.headers["Authorization"] = authz
            range_ = req_headers.get("Range")
            attempt = budget.used
            t0 = self.now()
            deadline = anyio.current_time() + self.request_timeout
            try:
                with anyio.fail_after(self.request_timeout):
                    response = await self.http.send(request, stream=True, follow_redirects=follow_redirects)
            except TimeoutError:
                reason = f"no response within the {self.request_timeout:g} s request timeout"
                self.record(request, t0, None, 0, attempt, range_, reason)
                await budget.spend(method, url, reason, None, None)
                continue
            except _RETRYABLE_EXC as exc:
                reason = _describe(exc)
                self.record(request, t0, None, 0, attempt, range_, reason)
                untrusted = tls_verification_error(exc)
                if untrusted is not None:
                    raise RegistryUnreachable(
                        f"{method} {redact_url(url)}: TLS certificate not trusted ({untrusted}); "
                        "pass an ssl_context that trusts the registry's CA"
                    ) from None
                hopeless = cannot_heal(exc, request.url.host, request.url.port)
                if hopeless is not None:
                    raise RegistryUnreachable(f"{method} {redact_url(url)}: {hopeless}") from None
                await budget.spend(method, url, reason, None, None)
                continue
            except httpx.HTTPError as exc:
                self.record(request, t0, None, 0, attempt, range_, _describe(exc))
                raise RegistryError(f"{method} {redact_url(url)}: {_describe(exc)}") from None
            except CleartextRefused as exc:
                self.record(request, t0, None, 0, attempt, range_, str(exc))
                raise
            exchange = Exchange(self, response, t0, attempt, range_, deadline)
            status = response.status_code
            if target != url and status in (401, 403, 404, 410):
                # a cached storage URL went stale (expired signature): forget it and ask the registry again
                await exchange.aclose(error=f"HTTP {status} from cached redirect")
                self.redirects.pop(url, None)
                tried_cache = True
                continue
            if status == 401 and scopes is not None and self.same_origin(response.request.url):
                await _drain(exchange)
                if auth_rounds >= 2:
                    who = "the credentials" if self.auth.creds is not None else "anonymous access"
                    raise AuthenticationError(
                        f"{self.auth.host} refused {who} for {method} {redact_url(url)}{self.auth.cred_hint()}",
                        status=401,
                    )
                auth_rounds += 1
                await self.auth.challenge(response, scopes, authz)
                continue
            if status not in ok and is_retryable_status(status):
                retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
                await _drain(exchange)
                await budget.spend(method, url, f"HTTP {status}", status, retry_after)
                continue
            if status not in ok:
                body = b""
                with contextlib.suppress(RegistryError, TruncatedBody):
                    body = await exchange.aread(limit=64 << 10)
                await exchange.aclose(error=f"HTTP {status}")
                raise status_error(method, url, status, body, what)
            if cache_redirect and response.history and status in (200, 206):
                self.redirects[url] = str(response.url)
            if not stream:
                try:
                    await exchange.aread(limit=read_limit)
                except TruncatedBody as exc:
                    await budget.spend(method, url, str(exc), status, None)
                    continue
                await exchange.aclose()
            return exchange

    async def _fetch_token(self, realm: str, headers: dict[str, str], params: list[tuple[str, str]]) -> httpx.Response:
        exchange = await self.send("GET", realm, headers=headers, params=params, scopes=None,
                                   ok=(200, 400, 401, 403, 404), read_limit=1 << 20, what="token request")
        r = exchange.response
        return httpx.Response(r.status_code, headers=r.headers, content=exchange.content, request=r.request)


async def _drain(exchange: Exchange) -> None:
    """Read a small error body so the connection can be reused, then close and record the exchange."""
    with contextlib.suppress(RegistryError, TruncatedBody):
        await exchange.aread(limit=64 << 10)
    await exchange.aclose(error=f"HTTP {exchange.status}")


def _body(content: Body) -> Any:
    if content is None or isinstance(content, bytes | bytearray | memoryview):
        return content
    return content()
