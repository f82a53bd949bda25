"""The shaping proxy: a reverse proxy in front of any registry, with bandwidth, latency and faults.

Every request is forwarded to ``upstream`` (all methods; headers but the hop-by-hop ones; request and
response bodies streamed, never buffered whole). Bodies are shaped like a full-duplex link:

- ``bandwidth``: one ``TokenBucket`` per direction for the whole proxy (downloads share one, uploads the
  other), shared fairly by every flow (FIFO turns of equal-sized chunks), so N parallel downloads each
  get about 1/N of the rate;
- ``per_connection``: a cap for each body stream. HTTP/1.1 carries one exchange at a time on a
  connection, so a per-request bucket caps each connection;
- ``latency``: added once per request, after the upstream's response headers arrive and before the
  proxy's response starts (the response direction; the request goes out at once);
- ``faults``: a ``FaultSpec`` (or its string); see ``faults.py`` for what each kind does and how the
  seeded plan keeps runs reproducible.

``Location`` headers and ``WWW-Authenticate`` realms that point at the upstream are rewritten to point
at the proxy, so uploads and token requests also go through it; redirects to other hosts (a registry's
blob storage) are passed on unchanged, so those downloads bypass the proxy. Counters live in ``ShapingProxy.stats``
and every injected fault is logged in ``ShapingProxy.fault_log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..units import parse_duration, parse_rate
from .background import BackgroundServer
from .faults import BODY_FAULTS, STATUS_FAULTS, FaultDecision, FaultPlan, FaultSpec
from .registry_errors import error_body
from .shaping import TokenBucket, chunk_size_for, consume_all

#: headers that belong to one hop (RFC 9110 §7.6.1) and are not forwarded
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)
_UNSHAPED_CHUNK = 256 * 1024
_STATUS_CODES = {500: "UNKNOWN", 503: "UNAVAILABLE", 429: "TOOMANYREQUESTS"}


@dataclass(frozen=True)
class InjectedFault:
    """One fault the proxy injected: which request (0-based arrival order), what, and where."""

    index: int
    method: str
    path: str
    kind: str
    at_byte: int | None = None


@dataclass
class ProxyStats:
    """Counters of one proxy (updated on its loop; safe to read from any thread)."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    upstream_errors: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "upstream_errors": self.upstream_errors,
            "faults": dict(self.faults),
            "faults_injected": self.faults_injected,
        }


class ShapingProxy(BackgroundServer):
    """A shaping, fault-injecting reverse proxy in front of ``upstream`` (``http://host:port``).

    ``bandwidth`` / ``per_connection``: bytes/s or rate strings (``"100Mbit"``); ``latency``: seconds or
    ``"20ms"``; ``faults``: a ``FaultSpec`` or a spec string. Use as a context manager (sync or async).
    """

    kind = "proxy"

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 0,
        bandwidth: str | float | None = None,
        latency: str | float | None = None,
        per_connection: str | float | None = None,
        faults: FaultSpec | str | None = None,
    ) -> None:
        super().__init__(host, port)
        self.upstream = upstream.rstrip("/")
        self.bandwidth = parse_rate(bandwidth) if bandwidth is not None else None
        self.per_connection = parse_rate(per_connection) if per_connection is not None else None
        self.latency = parse_duration(latency) if latency is not None else 0.0
        self.faults = faults if isinstance(faults, FaultSpec) else FaultSpec.parse(faults)
        self.stats = ProxyStats()
        self.fault_log: list[InjectedFault] = []
        self._plan = FaultPlan(self.faults)
        self._bucket: TokenBucket | None = None
        self._up_bucket: TokenBucket | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- app ----------------------------------------------------------------------------------------

    async def make_app(self) -> web.Application:
        self._bucket = TokenBucket(self.bandwidth) if self.bandwidth else None
        self._up_bucket = TokenBucket(self.bandwidth) if self.bandwidth else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
        )
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    # --- one request --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        decision = self._plan.next() if self.faults.total > 0 else FaultDecision(self.stats.requests - 1, None, 0.0)
        if decision.kind in STATUS_FAULTS:
            return await self._status_fault(request, decision)
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "expect"
        )
        data = self._request_body(request) if request.body_exists else None
        try:
            upstream = await self._session.request(
                request.method, self.upstream + request.raw_path, headers=headers, data=data, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError) as exc:
            self.stats.upstream_errors += 1
            return web.Response(
                status=502,
                body=error_body("UNKNOWN", f"shaping proxy: upstream {self.upstream} failed: {exc}"),
                headers={"Content-Type": "application/json"},
            )
        async with upstream:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._relay(request, upstream, decision)

    async def _request_body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The request body, streamed upstream through the upload-direction buckets."""
        conn_bucket = TokenBucket(self.per_connection) if self.per_connection else None
        step = chunk_size_for(self._up_bucket, conn_bucket, default=_UNSHAPED_CHUNK)
        while chunk := await request.content.read(step):
            await consume_all(len(chunk), self._up_bucket, conn_bucket)
            self.stats.bytes_received += len(chunk)
            yield chunk

    async def _status_fault(self, request: web.Request, decision: FaultDecision) -> web.Response:
        assert decision.kind is not None
        status = STATUS_FAULTS[decision.kind]
        self._record(request, decision, None)
        if self.latency:
            await asyncio.sleep(self.latency)
        headers = {"Content-Type": "application/json"}
        if self.faults.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = f"{self.faults.retry_after:g}"
        body = error_body(_STATUS_CODES[status], f"injected by the shaping proxy (request {decision.index})")
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    def _rewrite(self, name: str, value: str) -> str:
        lname = name.lower()
        if lname == "location" and value.startswith(self.upstream):
            return self.url + value[len(self.upstream) :]
        if lname == "www-authenticate":
            return value.replace(f'realm="{self.upstream}', f'realm="{self.url}')
        return value

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, decision: FaultDecision
    ) -> web.StreamResponse:
        headers = CIMultiDict(
            (k, self._rewrite(k, v))
            for k, v in upstream.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        )
        length = upstream.content_length
        has_body = request.method != "HEAD" and upstream.status not in (204, 304) and upstream.status >= 200
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        if not has_body:
            await resp.write_eof()
            return resp
        fault = decision.kind
        if fault not in BODY_FAULTS or upstream.status not in (200, 206) or length is None or length < 2:
            fault = None  # nothing to break in this response (the decision is still consumed)
        try:
            await self._stream_body(request, resp, upstream, decision, fault, length)
        except ConnectionError:
            pass  # the client went away mid-body
        except aiohttp.ClientError:  # the upstream broke mid-body: pass the breakage on to the client
            self.stats.upstream_errors += 1
            if request.transport is not None:
                request.transport.close()
        return resp

    async def _stream_body(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        decision: FaultDecision,
        fault: str | None,
        length: int | None,
    ) -> None:
        """Copy the upstream body to the client through the buckets, injecting ``fault`` on the way."""
        cut = decision.cut(length) if fault and length else -1
        conn_bucket = TokenBucket(self.per_connection) if self.per_connection else None
        step = chunk_size_for(self._bucket, conn_bucket, default=_UNSHAPED_CHUNK)
        sent = 0
        async for chunk in upstream.content.iter_chunked(step):
            if fault is not None and sent <= cut < sent + len(chunk):
                head, tail = chunk[: cut - sent], chunk[cut - sent :]
                if fault == "corrupt":
                    flipped = bytearray(tail)
                    flipped[0] ^= 0xFF
                    chunk = head + bytes(flipped)
                elif fault == "stall":
                    await self._send(resp, head, conn_bucket)
                    self._record(request, decision, cut)
                    await asyncio.sleep(self.faults.stall_duration)
                    await self._send(resp, tail, conn_bucket)
                    sent += len(chunk)
                    fault = None
                    continue
                else:  # reset / truncate: send up to the cut, then end the connection
                    await self._send(resp, head, conn_bucket)
                    self._record(request, decision, cut)
                    await self._break_connection(request, abort=fault == "reset")
                    return
                self._record(request, decision, cut)
                fault = None
            await self._send(resp, chunk, conn_bucket)
            sent += len(chunk)
        await resp.write_eof()

    async def _send(self, resp: web.StreamResponse, data: bytes, conn_bucket: TokenBucket | None) -> None:
        if not data:
            return
        await consume_all(len(data), self._bucket, conn_bucket)
        await resp.write(data)
        self.stats.bytes_sent += len(data)

    async def _break_connection(self, request: web.Request, abort: bool) -> None:
        """Truncate (flush, then close cleanly with FIN) or reset (RST) the client connection."""
        transport = request.transport
        if transport is None:
            return
        for _ in range(200):  # let what was written reach the socket first (at most ~1 s)
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        if abort:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    def _record(self, request: web.Request, decision: FaultDecision, at_byte: int | None) -> None:
        assert decision.kind is not None
        self.stats.faults[decision.kind] = self.stats.faults.get(decision.kind, 0) + 1
        self.fault_log.append(InjectedFault(decision.index, request.method, request.path, decision.kind, at_byte))
