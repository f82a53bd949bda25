"""Keep-alive connections of the fast GET path (urllib3's pools): reuse, stale connections, cut bodies,
cancellation, bad servers.

Two kinds of real servers: the embedded registry and Debian's distribution (``registry`` fixture), reached
through :class:`CountingRelay`, a TCP relay that counts the connections the client opens and can close them
all as a server's idle timeout would; and :class:`ScriptedServer`, a raw socket server whose answers a test
writes byte by byte, for what a registry cannot be made to send (``Connection: close``, a body longer than
its ``Content-Length``, garbage after the body, a body cut short while the connection stays open).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import anyio
import pytest
import urllib3.connectionpool
from conftest import FAST
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_helpers import random_bytes, unique_repo

import soci_lab.remote.fastpath as fastpath
import soci_lab.remote.ranges as ranges
from soci_lab.config import HTTPConfig
from soci_lab.events import EventRecorder
from soci_lab.remote import RegistryClient
from soci_lab.remote.ranges import get_content_with_range
from soci_lab.remote.transport import RetryBudget, Transport

# --- servers -------------------------------------------------------------------------------------------------


def _listen(on_accept: Callable[[socket.socket], None]) -> tuple[socket.socket, str]:
    """A listener on a free loopback port whose connections go to ``on_accept`` (from a daemon thread)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            on_accept(sock)

    threading.Thread(target=loop, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


class CountingRelay:
    """A TCP relay to ``upstream`` (``host:port``) on a free loopback port; counts accepted connections."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.connections = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.listener, self.url = _listen(self._accepted)

    def _accepted(self, client: socket.socket) -> None:
        up = socket.create_connection(self.upstream)
        with self._lock:
            self.connections += 1
            self._pairs.append((client, up))
        for a, b in ((client, up), (up, client)):
            threading.Thread(target=_copy, args=(a, b), daemon=True).start()

    def close_connections(self) -> None:
        """Close every relayed connection, as a server closing idle keep-alive connections would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()
        self.close_connections()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 20):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@dataclass
class Request:
    conn: int  # which connection (0, 1, …) in accept order
    index: int  # which request on that connection
    head: bytes

    @property
    def range(self) -> tuple[int, int]:
        m = re.search(rb"(?im)^range: bytes=(\d+)-(\d+)\r$", self.head)
        assert m is not None, self.head
        return int(m.group(1)), int(m.group(2))


#: Answers one request: writes to the socket; returns False to close the connection afterwards.
Script = Callable[[socket.socket, Request], bool]


@dataclass
class ScriptedServer:
    """Raw HTTP/1.1 on loopback: reads request heads, lets ``script`` answer each; keeps connections open."""

    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed: list[int] = field(default_factory=list)  # connections whose client hung up or that the script closed

    def __post_init__(self) -> None:
        self.listener, self.url = _listen(self._accepted)

    def _accepted(self, sock: socket.socket) -> None:
        n = self.connections
        self.connections += 1
        threading.Thread(target=self._serve, args=(sock, n), daemon=True).start()

    def _serve(self, sock: socket.socket, n: int) -> None:
        buf = b""
        index = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                req = Request(n, index, head + b"\r\n")
                self.requests.append(req)
                index += 1
                if not self.script(sock, req):
                    return
        except OSError:
            return
        finally:
            self.closed.append(n)
            sock.close()

    def close(self) -> None:
        self.listener.close()


BLOB = random_bytes(3 << 20, seed=7)


def partial_answer(body: bytes, lower: int, upper: int, extra_headers: str = "") -> bytes:
    part = body[lower : upper + 1]
    head = (
        f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(part)}\r\n"
        f"Content-Range: bytes {lower}-{upper}/{len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode() + part


def keep_alive_script(sock: socket.socket, req: Request) -> bool:
    sock.sendall(partial_answer(BLOB, *req.range))
    return True


@contextlib.contextmanager
def scripted(script: Script) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def lean_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ranged read takes the fast path, whatever its size."""
    monkeypatch.setattr(ranges, "FAST_MIN_BYTES", 0)


def http_events(rec: EventRecorder) -> list:
    return [e for e in rec.events if e.kind == "http_request"]


async def read(transport: Transport, url: str, lower: int, upper: int) -> bytes:
    return await get_content_with_range(transport, url, lower, upper, scopes=None)


@contextlib.asynccontextmanager
async def blob_behind_relay(
    registry: Any, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, Any, CountingRelay]]:
    """``BLOB`` pushed straight to ``registry`` under a new repository, and a :class:`CountingRelay` in front of
    the registry: ``(repo, digest, relay)``; the relay is closed after the block."""
    async with RegistryClient(registry.url, ssl_context=ssl_context) as direct:
        repo = unique_repo()
        desc = await direct.push_blob(repo, BLOB)
    relay = CountingRelay(registry.url.split("://", 1)[1])
    try:
        yield repo, desc.digest, relay
    finally:
        relay.close()


# --- reuse against the real registries -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_sequential_ranged_gets_share_one_connection(registry, lean_everything):
    async with blob_behind_relay(registry) as (repo, digest, relay):
        rec = EventRecorder()
        async with RegistryClient(relay.url, events=rec) as rc:
            got = []
            for lower in range(0, len(BLOB), 300_000):
                upper = min(lower + 299_999, len(BLOB) - 1)
                got.append(await rc.get_content_with_range(rc.blob_url(repo, digest), lower, upper))
            assert b"".join(got) == BLOB
            events = http_events(rec)
            assert relay.connections == 1
            assert [e.attrs["reused"] for e in events] == [False] + [True] * (len(got) - 1)
            assert all(e.attrs.get("fast") and e.ok for e in events)


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_is_replaced(registry, lean_everything):
    async with blob_behind_relay(registry) as (repo, digest, relay):
        rec = EventRecorder()
        async with RegistryClient(relay.url, events=rec, config=FAST) as rc:
            url = rc.blob_url(repo, digest)
            assert await rc.get_content_with_range(url, 0, 999_999) == BLOB[:1_000_000]
            relay.close_connections()
            await anyio.sleep(0.05)  # the FIN reaches the client's idle socket
            assert await rc.get_content_with_range(url, 1_000_000, 1_999_999) == BLOB[1_000_000:2_000_000]
            assert relay.connections == 2
            assert [e.error for e in http_events(rec)] == [None, None]  # found dead before use: no failed exchange


@pytest.mark.anyio
async def test_a_pooled_connection_that_dies_in_use_is_retried_without_spending_the_budget(
    registry, lean_everything, monkeypatch
):
    """The server closes the connection just after the pool's check: the request fails before any answer."""
    async with blob_behind_relay(registry) as (repo, digest, relay):
        rec = EventRecorder()
        # the pool's check before reuse sees nothing yet
        monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)
        async with RegistryClient(relay.url, events=rec, config=HTTPConfig(max_retries=0)) as rc:
            url = rc.blob_url(repo, digest)
            await rc.get_content_with_range(url, 0, 99)
            relay.close_connections()
            await anyio.sleep(0.05)
            budget = RetryBudget(rc.transport.policy)
            parts: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                parts.append(chunk)

            n = await ranges.fetch_into(
                rc.transport, url, sink, lower=100, upper=len(BLOB) - 1, scopes=None, budget=budget
            )
            assert n == len(BLOB) - 100 and b"".join(parts) == BLOB[100:]
            assert budget.used == 0
            events = http_events(rec)
            assert len(events) == 3
            assert events[1].attrs["reused"] and events[1].error.startswith("stale pooled connection")
            assert not events[2].attrs["reused"] and events[2].ok and events[2].bytes == len(BLOB) - 100
            assert relay.connections == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(1, 1_500_000)), min_size=1, max_size=6))
def test_random_sequences_of_ranges_give_the_blob_bytes_on_one_connection(embedded_registry, ranges_asked):
    async def main() -> None:
        async with blob_behind_relay(embedded_registry) as (repo, digest, relay):
            async with RegistryClient(relay.url) as rc:
                url = rc.blob_url(repo, digest)
                for lower, length in ranges_asked:
                    upper = min(lower + length, len(BLOB)) - 1
                    assert await rc.get_content_with_range(url, lower, upper) == BLOB[lower : upper + 1]
            assert relay.connections == 1

    with mock.patch.object(ranges, "FAST_MIN_BYTES", 0):
        anyio.run(main)


# --- bad servers ------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_connection_close_answers_are_never_pooled(lean_everything):
    def script(sock: socket.socket, req: Request) -> bool:
        sock.sendall(partial_answer(BLOB, *req.range, "Connection: close\r\n"))
        return False

    rec = EventRecorder()
    with scripted(script) as server:
        t = Transport(server.url, config=FAST, events=rec)
        try:
            for lower in (0, 500_000, 1_000_000):
                assert await read(t, server.url + "/b", lower, lower + 99_999) == BLOB[lower : lower + 100_000]
        finally:
            await t.aclose()
    assert server.connections == 3
    assert [e.error for e in http_events(rec)] == [None] * 3
    assert [e.attrs["reused"] for e in http_events(rec)] == [False] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("late", [False, True], ids=["with-the-body", "after-the-body"])
async def test_bytes_beyond_the_content_length_make_the_connection_unusable(lean_everything, late):
    """A body longer than announced (or garbage after it): the client takes exactly the announced bytes and
    never sends another request on that connection."""

    def script(sock: socket.socket, req: Request) -> bool:
        answer = partial_answer(BLOB, *req.range)
        if late:
            sock.sendall(answer)
            time.sleep(0.05)
            sock.sendall(b"GARBAGE\r\n\r\n")
        else:
            sock.sendall(answer + b"0123456789 more body than announced")
        return True

    rec = EventRecorder()
    with scripted(script) as server:
        t = Transport(server.url, config=FAST, events=rec)
        try:
            for lower in (0, 1_000_000):
                assert await read(t, server.url + "/b", lower, lower + 99_999) == BLOB[lower : lower + 100_000]
                await anyio.sleep(0.15)
        finally:
            await t.aclose()
    assert server.connections == 2
    assert [(r.conn, r.index) for r in server.requests] == [(0, 0), (1, 0)]
    assert [e.error for e in http_events(rec)] == [None, None]


@pytest.mark.anyio
async def test_garbage_read_as_the_next_head_is_retried_on_a_new_connection(lean_everything):
    """The second request on a connection is answered with garbage (the stream was out of step): one free
    retry on a fresh connection, the bytes right, the budget untouched."""

    def script(sock: socket.socket, req: Request) -> bool:
        if req.index == 1:
            sock.sendall(b"\x00\x01garbage that is no status line\r\n\r\n")
            return False
        sock.sendall(partial_answer(BLOB, *req.range))
        return True

    rec = EventRecorder()
    with scripted(script) as server:
        t = Transport(server.url, config=HTTPConfig(max_retries=0), events=rec)
        try:
            assert await read(t, server.url + "/b", 0, 9) == BLOB[:10]
            assert await read(t, server.url + "/b", 10, 2_000_009) == BLOB[10:2_000_010]
        finally:
            await t.aclose()
    assert [(r.conn, r.index) for r in server.requests] == [(0, 0), (0, 1), (1, 0)]
    errors = [e.error for e in http_events(rec)]
    assert errors[0] is None and errors[1].startswith("stale pooled connection") and errors[2] is None


@pytest.mark.anyio
async def test_a_body_cut_short_is_never_reused_and_resumes_cleanly(lean_everything):
    """The first answer stops half-way and the server then stalls with the connection open: TruncatedBody
    after the read timeout, one retry from the first missing byte on a new connection."""
    stall = threading.Event()

    def script(sock: socket.socket, req: Request) -> bool:
        lower, upper = req.range
        if req.conn == 0 and req.index == 0:
            answer = partial_answer(BLOB, lower, upper)
            sock.sendall(answer[: len(answer) // 2])
            stall.wait(10)
            return False
        sock.sendall(partial_answer(BLOB, lower, upper))
        return True

    rec = EventRecorder()
    cfg = HTTPConfig(max_retries=1, min_wait_msec=1, max_wait_msec=5, response_header_timeout_msec=300)
    with scripted(script) as server:
        t = Transport(server.url, config=cfg, events=rec)
        try:
            budget = RetryBudget(t.policy)
            parts: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                parts.append(chunk)

            n = await ranges.fetch_into(
                t, server.url + "/b", sink, lower=0, upper=1_999_999, scopes=None, budget=budget
            )
            assert n == 2_000_000 and b"".join(parts) == BLOB[:2_000_000]
            assert budget.used == 1
        finally:
            stall.set()
            await t.aclose()
    first, second = server.requests
    assert first.conn == 0 and second.conn == 1
    assert 0 < second.range[0] < 2_000_000 and second.range[1] == 1_999_999
    events = http_events(rec)
    assert "ReadTimeout" in events[0].error and not events[1].attrs["reused"] and events[1].ok
    assert events[0].bytes + events[1].bytes == 2_000_000


@pytest.mark.anyio
async def test_a_200_read_only_in_part_is_not_reused(lean_everything):
    """A server ignoring ``Range`` sends the whole blob; the client keeps its slice and drops the connection."""

    def script(sock: socket.socket, req: Request) -> bool:
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BLOB)}\r\n\r\n".encode() + BLOB)
        return True

    with scripted(script) as server:
        t = Transport(server.url, config=FAST)
        try:
            assert await read(t, server.url + "/b", 5, 1_000_004) == BLOB[5:1_000_005]
            assert await read(t, server.url + "/b", 0, len(BLOB) - 1) == BLOB  # read to the end: kept
            assert await read(t, server.url + "/b", 0, 9) == BLOB[:10]
        finally:
            await t.aclose()
    assert server.connections == 2


@pytest.mark.anyio
async def test_cancelling_mid_body_drops_the_connection(lean_everything):
    released = threading.Event()

    def script(sock: socket.socket, req: Request) -> bool:
        answer = partial_answer(BLOB, *req.range)
        if req.conn == 0:
            sock.sendall(answer[: len(answer) // 3])
            released.wait(10)
            return False
        sock.sendall(answer)
        return True

    with scripted(script) as server:
        t = Transport(server.url, config=FAST)
        try:
            with anyio.move_on_after(0.5) as scope:
                await read(t, server.url + "/b", 0, len(BLOB) - 1)
            assert scope.cancelled_caught
            assert await read(t, server.url + "/b", 0, 999) == BLOB[:1000]
        finally:
            released.set()
            await t.aclose()
    assert server.connections == 2
    assert [(r.conn, r.index) for r in server.requests] == [(0, 0), (1, 0)]


@pytest.mark.anyio
async def test_after_one_dead_pooled_connection_its_idle_siblings_are_not_tried(registry, lean_everything, monkeypatch):
    async with blob_behind_relay(registry) as (repo, digest, relay):
        rec = EventRecorder()
        monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)
        # the three reads below hold their connections until all three have answers, so that three connections
        # (not one reused) end up idle in the pool, as three concurrent reads of a busy client would
        together = threading.Barrier(3, timeout=10)
        real_open = fastpath.open_blocking
        calls = itertools.count()

        def open_together(*args, **kw):  # type: ignore[no-untyped-def]
            opened = real_open(*args, **kw)
            if next(calls) < 3:
                together.wait()
            return opened

        monkeypatch.setattr(fastpath, "open_blocking", open_together)
        async with RegistryClient(relay.url, events=rec, config=HTTPConfig(max_retries=0)) as rc:
            url = rc.blob_url(repo, digest)
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(rc.get_content_with_range, url, i * 100, i * 100 + 99)
            assert relay.connections == 3
            relay.close_connections()
            await anyio.sleep(0.05)
            assert await rc.get_content_with_range(url, 0, 1_999_999) == BLOB[:2_000_000]
            errors = [e.error for e in http_events(rec)[3:]]
            assert len(errors) == 2 and errors[0].startswith("stale pooled connection") and errors[1] is None
            assert relay.connections == 4


@pytest.mark.anyio
async def test_tls_connections_are_reused(tls_distribution, lean_everything):
    ctx = ssl.create_default_context(cafile=str(tls_distribution.ca_file))
    async with blob_behind_relay(tls_distribution, ctx) as (repo, digest, relay):
        rec = EventRecorder()
        async with RegistryClient(relay.url.replace("http://", "https://"), ssl_context=ctx, events=rec) as rc:
            url = rc.blob_url(repo, digest)
            for lower in range(0, len(BLOB), 1 << 20):
                upper = min(lower + (1 << 20), len(BLOB)) - 1
                assert await rc.get_content_with_range(url, lower, upper) == BLOB[lower : upper + 1]
        assert relay.connections == 1
        assert [e.attrs["reused"] for e in http_events(rec)] == [False, True, True]
