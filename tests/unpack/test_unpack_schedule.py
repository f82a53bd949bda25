"""Which layer gets an unpack slot (UnpackQueue), and applying a layer while it downloads."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from treecmp import assert_same_tree
from unpack_helpers import GZ, E, layer_image

from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.errors import ArchiveError, SizeMismatch, VerificationFailed
from soci_lab.events import EventRecorder
from soci_lab.unpack import LayerSpec, LocalFileSource, ParallelPuller
from soci_lab.unpack.decompress import IngestReader
from soci_lab.unpack.fetch import IngestProgress, download_layer
from soci_lab.unpack.schedule import QueuedLayer, UnpackQueue

# --- the queue as a state machine ---------------------------------------------------------------------


class QueueMachine(RuleBasedStateMachine):
    """Random enqueues, finished downloads and releases: the limits hold, no slot idles while a layer that
    could use it waits, and a ready layer is never passed over for a smaller one."""

    waiting = Bundle("waiting")
    holding = Bundle("holding")

    def __init__(self) -> None:
        super().__init__()
        self.q: UnpackQueue | None = None
        self.entries: list[QueuedLayer] = []

    def _queue(self) -> UnpackQueue:
        assert self.q is not None
        return self.q

    @rule(slots=st.integers(0, 4), stream=st.one_of(st.none(), st.integers(0, 3)))
    def start(self, slots: int, stream: int | None) -> None:
        if self.q is None:
            self.q = UnpackQueue(slots, stream)

    def _grants(self, action) -> list[QueuedLayer]:  # type: ignore[no-untyped-def]
        """Run ``action``; check that each layer it granted was the best candidate at that moment."""
        q = self._queue()
        before = [e for e in self.entries if not e.granted and not e.done]
        action()
        granted = [e for e in before if e.granted]
        still = [e for e in before if not e.granted and not e.done]
        for g in granted:
            if g.ready:
                assert all(not (w.ready and w.size > g.size) for w in still), "a larger ready layer was passed over"
            else:
                assert not any(w.ready for w in still), "a layer still downloading went before a ready one"
        return granted if q else []

    @rule(target=waiting, size=st.integers(0, 1000), streamable=st.booleans(), ready=st.booleans())
    def enqueue(self, size: int, streamable: bool, ready: bool) -> QueuedLayer:
        q = self._queue() if self.q is not None else None
        if q is None:
            self.q = q = UnpackQueue(2)
        box: list[QueuedLayer] = []
        self._grants(lambda: box.append(q.enqueue(size, streamable=streamable, ready=ready)))
        self.entries.append(box[0])
        return box[0]

    @rule(entry=waiting)
    def download_done(self, entry: QueuedLayer) -> None:
        if not entry.done and not entry.ready:
            self._grants(lambda: self._queue().mark_ready(entry))

    @rule(entry=consumes(waiting))
    def finish(self, entry: QueuedLayer) -> None:
        """The layer's task ends: it gives back its slot, or leaves the line (cancelled) if it had none."""
        self._grants(lambda: self._queue().leave(entry))

    @invariant()
    def limits_hold_and_no_slot_idles(self) -> None:
        if self.q is None:
            return
        q = self.q
        held = [e for e in self.entries if e.granted and not e.done]
        assert sorted(map(id, held)) == sorted(map(id, q.holding))
        if q.slots:
            assert len(held) <= q.slots
            assert sum(1 for e in held if e.streaming and not e.ready) <= q.stream_slots
        waiting = [e for e in self.entries if not e.granted and not e.done]
        free = not q.slots or len(held) < q.slots
        if free:
            assert not any(e.ready for e in waiting), "a ready layer waits while a slot is free"
            streaming = sum(1 for e in held if e.streaming and not e.ready)
            if not q.slots or streaming < q.stream_slots:
                assert not any(e.streamable for e in waiting), "a streamable layer waits while it could start"


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_one_slot_never_streams_and_the_largest_ready_layer_goes_first() -> None:
    q = UnpackQueue(1)
    small = q.enqueue(10, streamable=True)
    big = q.enqueue(100, streamable=True)
    assert not small.granted and not big.granted  # one slot: kept for a finished download
    q.mark_ready(small)
    assert small.granted and not small.streaming
    q.mark_ready(big)
    late = q.enqueue(50, ready=True)
    q.leave(small)
    assert big.granted and not late.granted  # the largest ready one
    q.leave(big)
    assert late.granted


def test_two_slots_stream_the_largest_and_keep_one_for_ready_layers() -> None:
    q = UnpackQueue(2)
    layers = [q.enqueue(size, streamable=True) for size in (300, 40, 5)]  # the puller's order: largest first
    assert [e.granted for e in layers] == [True, False, False]
    assert layers[0].streaming
    q.mark_ready(layers[2])
    assert layers[2].granted and not layers[2].streaming
    assert not layers[1].granted


async def _wait_turn(q: UnpackQueue, entry: QueuedLayer, got: list[bool]) -> None:
    async with q.turn(entry) as streaming:
        got.append(streaming)
        await anyio.sleep(0.01)


def test_turn_waits_for_its_grant_and_gives_the_slot_back() -> None:
    async def main() -> None:
        q = UnpackQueue(1, 0)
        first, second = q.enqueue(1, ready=True), q.enqueue(2, ready=True)
        got: list[bool] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_wait_turn, q, second, got)
            await anyio.sleep(0.02)
            assert got == []  # ``first`` holds the only slot
            q.leave(first)
        assert got == [False] and q.holding == []

    anyio.run(main)


# --- reading an ingest file while it grows --------------------------------------------------------------


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=12), st.integers(1, 4096))
@settings(max_examples=25, deadline=None)
def test_ingest_reader_follows_a_growing_file(pieces: list[int], read: int) -> None:
    data = os.urandom(sum(pieces))
    with tempfile.NamedTemporaryFile() as tmp:  # (not tmp_path: one file per hypothesis example)
        seen: list[bytes] = []

        def writer() -> None:
            pos = 0
            with open(tmp.name, "r+b", buffering=0) as f:
                for n in pieces:
                    time.sleep(0.001)
                    f.seek(pos)
                    f.write(data[pos : pos + n])
                    pos += n
                f.write(b"trailing bytes are never read")

        t = threading.Thread(target=writer)
        t.start()
        with open(tmp.name, "rb", buffering=0) as f:
            reader = IngestReader(f, threading.Event(), seen.append, len(data))
            out = b"".join(iter(lambda: reader.read(read), b""))
        t.join()
    assert out == data and b"".join(seen) == data


def test_ingest_reader_waiting_for_bytes_stops_when_told(tmp_path: Path) -> None:
    path = tmp_path / "ingest"
    path.write_bytes(b"abc")
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    with open(path, "rb", buffering=0) as f:
        reader = IngestReader(f, stop, None, 10)
        t0 = time.monotonic()
        assert reader.read(10) == b"abc"
        assert reader.read(10) == b""  # waited for the 7 missing bytes until stopped
    assert 0.08 <= time.monotonic() - t0 < 2


def test_one_request_download_grows_the_file_and_chunked_preallocates(tmp_path: Path) -> None:
    blob = os.urandom(300 << 10)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (tmp_path / "b").write_bytes(blob)
    spec = LayerSpec(digest, len(blob), "application/octet-stream")
    sizes: list[int] = []

    class Watching(LocalFileSource):
        async def _send(self, path, lower, upper, sink):  # type: ignore[no-untyped-def]
            async def watched(chunk: bytes) -> None:
                await sink(chunk)
                await sink.flush() if hasattr(sink, "flush") else None
                sizes.append(os.stat(tmp_path / "whole").st_size if (tmp_path / "whole").exists() else -1)

            return await super()._send(path, lower, upper, watched)

    async def main() -> tuple[IngestProgress, IngestProgress]:
        whole, chunked = IngestProgress(), IngestProgress()
        await download_layer(
            Watching({digest: tmp_path / "b"}, chunk=64 << 10), spec, tmp_path / "whole", progress=whole
        )
        await download_layer(
            LocalFileSource({digest: tmp_path / "b"}),
            spec,
            tmp_path / "chunked",
            chunk_size=100 << 10,
            ranges_ok=True,
            progress=chunked,
        )
        return whole, chunked

    whole, chunked = anyio.run(main)
    assert whole.created.is_set() and whole.sequential
    assert chunked.created.is_set() and not chunked.sequential
    assert sizes == sorted(sizes) and sizes[0] < len(blob)  # the size is what has arrived so far
    assert (tmp_path / "whole").read_bytes() == blob == (tmp_path / "chunked").read_bytes()


# --- the parallel puller applying a layer while it downloads ----------------------------------------------


@pytest.fixture
def slow_image(tmp_path: Path) -> tuple[list[LayerSpec], dict[str, Path], Path]:
    """A large layer (1.5 MiB of random file data over a few hundred files) and two small ones."""
    big = [E("data/", tarfile.DIRTYPE)] + [E(f"data/f{i}", data=os.urandom(5000)) for i in range(300)]
    small1 = [E("etc/", tarfile.DIRTYPE), E("etc/a", data=b"a" * 100)]
    small2 = [E("etc/", tarfile.DIRTYPE), E("etc/b", data=b"b" * 100), E("data/", tarfile.DIRTYPE)]
    return layer_image(tmp_path, [("s1", small1, GZ), ("big", big, GZ), ("s2", small2, GZ)])


TWO_UNPACKS = ParallelPullUnpackConfig(enable=True, max_concurrent_unpacks_per_image=2)


@pytest.mark.parametrize(("in_process", "backend"), [(True, "asyncio"), (False, "asyncio"), (True, "trio")])
def test_the_largest_layer_is_applied_while_it_downloads(
    tmp_path: Path, slow_image, in_process: bool, backend: str
) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = slow_image
    big = max(specs, key=lambda s: s.size)
    src = LocalFileSource(paths, chunk=32 << 10, delay_s=0.01)
    rec = EventRecorder(strategy="parallel")
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        async with ParallelPuller(
            tmp_path / "root", src, config=TWO_UNPACKS, recorder=rec, apply_in_process=not in_process
        ) as puller:
            await puller.pull("img", specs, mounts)

    anyio.run(main, backend=backend)
    for i, mp in enumerate(mounts):
        assert_same_tree(expected / str(i), mp, include_root=False)
    dec = {e.layer: e for e in rec.events if e.kind == "decompress"}
    dl = {e.layer: e for e in rec.events if e.kind == "blob_download"}
    assert dec[big.digest].attrs["streamed"] is True
    assert dec[big.digest].t_start < dl[big.digest].t_end  # it began before the last byte arrived
    assert not any(dec[s.digest].attrs["streamed"] for s in specs if s is not big)  # the other slot: ready ones
    assert all(e.ok for e in rec.events if e.kind == "verify")


def test_stream_slots_zero_waits_for_every_download(tmp_path: Path, slow_image) -> None:  # type: ignore[no-untyped-def]
    specs, paths, _ = slow_image
    rec = EventRecorder()
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        src = LocalFileSource(paths, chunk=32 << 10, delay_s=0.005)
        async with ParallelPuller(tmp_path / "root", src, config=TWO_UNPACKS, recorder=rec, stream_slots=0) as p:
            await p.pull("img", specs, mounts)

    anyio.run(main)
    dec = {e.layer: e for e in rec.events if e.kind == "decompress"}
    dl = {e.layer: e for e in rec.events if e.kind == "blob_download"}
    assert not any(e.attrs["streamed"] for e in dec.values())
    assert all(dec[d].t_start >= dl[d].t_end - 1e-6 for d in dec)


class _Failing(LocalFileSource):
    """Sends half of ``bad``'s blob, then fails (``error``) or sends corrupt bytes (``corrupt``)."""

    def __init__(self, blobs, bad: str, how: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(blobs, chunk=32 << 10, delay_s=0.01)
        self.bad, self.how = bad, how

    async def fetch(self, layer, sink):  # type: ignore[no-untyped-def]
        if layer.digest != self.bad:
            return await super().fetch(layer, sink)
        data = Path(self.blobs[layer.digest]).read_bytes()
        half = len(data) // 2
        for i in range(0, half, 32 << 10):
            await anyio.sleep(0.01)
            await sink(data[i : min(i + (32 << 10), half)])
        if self.how == "error":
            raise SizeMismatch("the server closed the connection half-way")
        flipped = bytes([data[half] ^ 0xFF]) + data[half + 1 :]
        await sink(flipped)
        return len(data)


@pytest.mark.parametrize("how", ["error", "corrupt"])
def test_a_bad_download_fails_the_streamed_apply_cleanly(tmp_path: Path, slow_image, how: str) -> None:  # type: ignore[no-untyped-def]
    specs, paths, _ = slow_image
    big = max(specs, key=lambda s: s.size)
    rec = EventRecorder()
    mounts = [tmp_path / "m" / str(i) for i in range(3)]
    # a flipped byte breaks the gzip stream (its CRC), or inflates into a broken tar header, or into bytes only
    # the digests catch: each a clean error of its own kind
    expected = SizeMismatch if how == "error" else (ArchiveError, VerificationFailed)

    async def main() -> None:
        src = _Failing(paths, big.digest, how)
        async with ParallelPuller(tmp_path / "root", src, config=TWO_UNPACKS, recorder=rec) as puller:
            with pytest.raises(expected):  # the one error, not a group
                await puller.pull("img", specs, mounts)
            res = puller.resources
            with anyio.fail_after(10):
                while res.downloads.in_use or res.unpacks.in_use:
                    await anyio.sleep(0.01)

    anyio.run(main)
    assert not mounts[1].exists()  # the big layer (index 1) never looks complete
    if how == "corrupt":  # it was being applied from the stream when the bad bytes came
        dec = [e for e in rec.events if e.kind == "decompress" and e.layer == big.digest]
        assert (
            dec
            and dec[0].attrs["streamed"] is True
            and not all(e.ok for e in rec.events if e.layer == big.digest and e.kind in ("decompress", "verify"))
        )
