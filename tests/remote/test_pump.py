"""The body pump (reader → hash and store threads): order, skip and limit, breaks, sink errors, cancellation.

The pump is fed by a real kernel socket (a ``socketpair`` whose far end a thread writes in random pieces,
read as the fast path's urllib3 response is: ``read(n)`` blocking, ``TimeoutError`` on a stall), and end to
end by the real registries through the shaping proxy.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_helpers import push_image, unique_repo

from soci_lab.errors import SizeMismatch
from soci_lab.remote import RegistryClient
from soci_lab.remote.pump import BUFFER, pump_body


class ListSink:
    """Records what each half saw, and on which thread."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.hashed = bytearray()
        self.stored = bytearray()
        self.threads: set[str] = set()
        self.fail_after = fail_after

    def hash_part(self, data: memoryview) -> None:
        self.threads.add(threading.current_thread().name)
        self.hashed += data

    def store_part(self, data: memoryview) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_after is not None and len(self.stored) + len(data) > self.fail_after:
            raise OSError(28, "No space left on device")
        self.stored += data


def _reader(sock: socket.socket, prefix: bytes, timeout: float):  # type: ignore[no-untyped-def]
    """``read(n)`` over ``sock``: ``prefix`` first, then up to ``n`` bytes per call (``b""`` at EOF)."""
    pending = [prefix]
    sock.settimeout(timeout)

    def read(n: int) -> bytes:
        if pending[0]:
            out, pending[0] = pending[0][:n], pending[0][n:]
            return out
        return sock.recv(n)

    return read


def _serve(sock: socket.socket, data: bytes, pieces: list[int], pause: float = 0.0) -> threading.Thread:
    def run() -> None:
        pos = 0
        try:
            for i, n in enumerate(pieces):
                sock.sendall(data[pos:pos + n])
                pos += n
                if pause and i == 0:
                    time.sleep(pause)
            sock.sendall(data[pos:])
        except OSError:
            pass
        finally:
            sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 3 * BUFFER + 17),
    head_part=st.integers(0, 5000),
    skip_frac=st.floats(0, 1),
    limit_frac=st.floats(0, 1),
    cut_frac=st.one_of(st.none(), st.floats(0, 1)),
    pieces=st.lists(st.integers(1, 400_000), max_size=8),
)
def test_pump_delivers_exactly_the_asked_bytes_in_order(size, head_part, skip_frac, limit_frac, cut_frac, pieces):
    body = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    prefix = body[: min(head_part, size)]
    skip = int(skip_frac * size)
    limit = int(limit_frac * (size - skip))
    sent = size if cut_frac is None else int(cut_frac * size)  # the peer may hang up early
    a, b = socket.socketpair()
    _serve(b, body[len(prefix):sent], pieces)
    sink = ListSink()
    try:
        res = pump_body(_reader(a, prefix, 5), sink, body_left=size, skip=skip, limit=limit, read_timeout=5,
                        deadline=time.monotonic() + 30)
    finally:
        a.close()
    available = max(0, min(limit, max(sent, len(prefix)) - skip))
    assert res.error is None
    assert res.delivered == available
    assert bytes(sink.hashed) == bytes(sink.stored) == body[skip:skip + available]
    if available < limit:
        assert res.broke is not None and "before the announced end" in res.broke
    else:
        assert res.broke is None
    if available:
        assert {"soci-lab-pump-hash", "soci-lab-pump-store"} <= sink.threads


def test_a_stall_breaks_the_body_after_the_read_timeout():
    a, b = socket.socketpair()
    body = bytes(range(256)) * 4096  # 1 MiB
    _serve(b, body, [300_000], pause=3.0)
    sink = ListSink()
    t0 = time.monotonic()
    try:
        res = pump_body(_reader(a, b"", 0.3), sink, body_left=len(body), skip=0, limit=len(body), read_timeout=0.3,
                        deadline=time.monotonic() + 30)
    finally:
        a.close()
    assert time.monotonic() - t0 < 2.5
    assert res.broke == "ReadTimeout: no data for 0.3 s"
    assert 0 < res.delivered < len(body)
    assert bytes(sink.stored) == body[: res.delivered]  # what was handed out is all written


def test_a_sink_error_stops_the_pump_and_is_reported():
    a, b = socket.socketpair()
    body = b"x" * (4 * BUFFER)
    _serve(b, body, [])
    sink = ListSink(fail_after=BUFFER)
    try:
        res = pump_body(_reader(a, b"", 5), sink, body_left=len(body), skip=0, limit=len(body), read_timeout=5,
                        deadline=time.monotonic() + 30)
    finally:
        a.close()
    assert isinstance(res.error, OSError) and res.error.errno == 28
    assert len(sink.stored) <= BUFFER


@pytest.mark.anyio
async def test_cancelling_a_pumped_download_is_prompt_and_leaves_nothing(registry, tmp_path, body_path):
    """A stalled body on the fast path: cancelling the caller wakes the reading thread at once."""
    from soci_lab.netlab import ShapingProxy

    async with RegistryClient(registry.url) as direct:
        repo = unique_repo()
        img = await push_image(direct, repo, layer_sizes=(3_000_000,))
    desc, _ = img.layers[0]
    out = tmp_path / "out"
    out.mkdir()
    with ShapingProxy(registry.url, faults="seed=1,stall=1.0:30s") as proxy:
        async with RegistryClient(proxy.url) as rc:
            t0 = time.monotonic()
            with anyio.move_on_after(1.0) as scope:
                await rc.fetch_blob(repo, desc, path=out / "blob")
            elapsed = time.monotonic() - t0
    assert scope.cancelled_caught
    assert elapsed < 3.0
    assert list(out.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("soci-lab-pump")]


@pytest.mark.anyio
async def test_a_body_longer_than_the_descriptor_is_refused(registry, tmp_path, body_path):
    async with RegistryClient(registry.url) as rc:
        repo = unique_repo()
        img = await push_image(rc, repo, layer_sizes=(2_000_000,))
        desc, _ = img.layers[0]
        with pytest.raises(SizeMismatch):
            await rc.fetch_blob(repo, str(desc.digest), desc.size - 10, path=tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []
