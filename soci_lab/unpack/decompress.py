"""Decompressed chunks of a layer blob: gzip, zstd or plain tar, in-process or through an external tool.

Every producer is a generator of ``bytes`` chunks (a few MiB each) read from the ingest file, meant to run
in its own worker thread: zlib, zstandard and hashlib release the GIL on large buffers, so this thread
really runs beside the one creating files. Each producer passes every *compressed* block it reads to
``on_input`` (the compressed-digest hasher) before decompressing it.

Which decompressor: the media type says gzip / zstd / none, and the stream's magic bytes decide when the
media type does not (containerd's ``DecompressStream`` sniffs too). ``decompress_streams`` from the config
(``{"gzip": DecompressStream(path="/usr/bin/unpigz", args=["-d", "-c"])}``) replaces the in-process
decompressor by an external program run without a shell, fed by a thread that reads (and hashes) the
ingest file. Unlike containerd, ``unpigz`` on ``PATH`` is *not* picked up implicitly: a run is only
reproducible if its config says what decompressed it, and it is slower here: pigz inflates on one thread
and adds the pipe copies and its own CRC thread, so in-process ISA-L takes about half its wall time and
less than half its CPU (figures: ``benchmarks/README.md``). ISA-L (``isal``) is a dependency of the
project, so the in-process path is always the fast one; where many cores are idle, the zTOC span-parallel
inflate (:mod:`.spanpar`) is the way to use them.

In-process gzip uses ``isal.isal_zlib`` (ISA-L, 2–3× faster inflate) when the ``isal`` package is
installed, else :mod:`zlib`. Multi-member gzip streams are handled.

Hook for zTOC-parallel decompression: :class:`SpanDecompressor` — anything that can produce the
decompressed bytes of a gzip layer in order (e.g. by inflating spans from zTOC checkpoints on several
threads) can be passed to :func:`~.archive.apply_layer` and is used instead of the serial inflater.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import zstandard

from ..errors import ConfigError, DecompressionError

if TYPE_CHECKING:
    from ..config import DecompressStream  # not at run time: apply workers import this module

try:  # optional, faster inflate
    from isal import isal_zlib as _inflate_mod  # type: ignore[import-not-found]

    INFLATE_IMPL = "isal"
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_mod = zlib  # type: ignore[assignment,misc]
    INFLATE_IMPL = "zlib"

#: compressed bytes read per step.
READ_SIZE = 1 << 20
#: most decompressed bytes produced per chunk (bounds memory on highly compressible data).
MAX_CHUNK = 8 << 20
#: first and longest wait for more bytes of an ingest file that is still being downloaded.
FOLLOW_WAIT_S = (0.0005, 0.02)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

InputHook = Callable[[bytes], None]


class SpanDecompressor(Protocol):
    """Produces a gzip layer's decompressed bytes in order, e.g. in parallel across zTOC spans."""

    def chunks(self, ingest: Path, stop: threading.Event) -> Iterator[bytes]:
        """Decompressed chunks of ``ingest`` from offset 0 to the end, in order."""
        ...


def compression_of(media_type: str | None, head: bytes) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` from the media type, else from the first bytes."""
    mt = (media_type or "").lower()
    if mt.endswith(("+gzip", ".gzip", "tar.gz")):
        return "gzip"
    if mt.endswith(("+zstd", ".zstd")):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class IngestReader:
    """Reads an ingest file and shows every block to ``on_input`` (the compressed-digest hasher).

    With ``follow`` the file may still be downloading (written front to back, so its size is what has
    arrived, see :mod:`.fetch`): a read that meets the end waits for more until ``follow`` bytes were read.
    A download that fails is the caller's to notice: it stops this reader (``stop``) or its process.
    """

    def __init__(self, f: BinaryIO, stop: threading.Event, on_input: InputHook | None, follow: int | None) -> None:
        self._f = f
        self._stop = stop
        self._on_input = on_input
        self._follow = follow
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = READ_SIZE if n is None or n < 0 else n
        wait = FOLLOW_WAIT_S[0]
        while not self._stop.is_set():
            want = n if self._follow is None else min(n, self._follow - self.pos)
            if want <= 0:
                return b""
            block = self._f.read(want)
            if block:
                self.pos += len(block)
                if self._on_input is not None:
                    self._on_input(block)
                return block
            if self._follow is None:
                return b""
            time.sleep(wait)  # the download has not written this far yet
            wait = min(wait * 2, FOLLOW_WAIT_S[1])
        return b""


def _read_blocks(
    path: Path, stop: threading.Event, on_input: InputHook | None, follow: int | None = None
) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        reader = IngestReader(f, stop, on_input, follow)
        while True:
            block = reader.read(READ_SIZE)
            if not block:
                return
            yield block


def gzip_chunks(
    path: Path, stop: threading.Event, on_input: InputHook | None = None, follow: int | None = None
) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip file; zero padding after the last member is ignored."""
    d = _inflate_mod.decompressobj(31)
    seen = False
    try:
        for block in _read_blocks(path, stop, on_input, follow):
            data = block
            while data:
                if d.eof:  # ``data`` follows a finished member
                    if not data.strip(b"\x00"):
                        break
                    d = _inflate_mod.decompressobj(31)
                seen = True
                out = d.decompress(data, MAX_CHUNK)
                if out:
                    yield out
                if d.eof:
                    data = d.unused_data
                    continue
                data = d.unconsumed_tail
                while not data and len(out) == MAX_CHUNK:  # output may still be pending
                    out = d.decompress(b"", MAX_CHUNK)
                    if out:
                        yield out
                    data = d.unconsumed_tail
        if stop.is_set():
            return
        if not seen:
            raise DecompressionError(f"{path.name}: empty gzip stream")
        if not d.eof:
            raise DecompressionError(f"{path.name}: gzip stream truncated")
    except (zlib.error, getattr(_inflate_mod, "error", zlib.error)) as exc:
        raise DecompressionError(f"{path.name}: corrupt gzip data: {exc}") from None


def zstd_chunks(
    path: Path, stop: threading.Event, on_input: InputHook | None = None, follow: int | None = None
) -> Iterator[bytes]:
    """Decompress a (possibly multi-frame) zstd file in bounded chunks."""
    with open(path, "rb", buffering=0) as f:
        src = IngestReader(f, stop, on_input, follow)
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=READ_SIZE, read_across_frames=True)  # type: ignore[arg-type]
        try:
            while True:
                out = reader.read(MAX_CHUNK)
                if not out:
                    return
                yield out
        except zstandard.ZstdError as exc:
            raise DecompressionError(f"{path.name}: corrupt zstd data: {exc}") from None


def raw_chunks(
    path: Path, stop: threading.Event, on_input: InputHook | None = None, follow: int | None = None
) -> Iterator[bytes]:
    """An uncompressed tar, in large blocks."""
    yield from _read_blocks(path, stop, on_input, follow)


def external_chunks(
    stream: DecompressStream,
    path: Path,
    stop: threading.Event,
    on_input: InputHook | None = None,
    follow: int | None = None,
) -> Iterator[bytes]:
    """Run ``stream.path stream.args…`` (no shell) with the ingest file on stdin; yield its stdout."""
    exe = stream.path
    if not os.path.isabs(exe) or not os.access(exe, os.X_OK):
        raise ConfigError(f"decompress stream {exe!r} must be an absolute path to an executable")
    proc = subprocess.Popen([exe, *stream.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feed_error: list[BaseException] = []

    def feed() -> None:
        try:
            for block in _read_blocks(path, stop, on_input, follow):
                proc.stdin.write(block)  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        except BaseException as exc:  # reported by the reader
            feed_error.append(exc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]

    feeder = threading.Thread(target=feed, name="soci-unpack-feed", daemon=True)
    feeder.start()
    fd = proc.stdout.fileno()
    try:
        while True:
            if stop.is_set():
                return
            out = os.read(fd, MAX_CHUNK)
            if not out:
                break
            yield out
        feeder.join()
        err = proc.stderr.read()
        code = proc.wait()
        if feed_error:
            raise feed_error[0]
        if code != 0:
            msg = err.decode(errors="replace").strip().splitlines()
            raise DecompressionError(f"{os.path.basename(exe)} exited with {code}: {msg[-1] if msg else ''}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def producer_for(
    compression: str,
    path: Path,
    stop: threading.Event,
    on_input: InputHook | None,
    streams: dict[str, DecompressStream] | None = None,
    follow: int | None = None,
) -> Iterator[bytes]:
    """The chunk generator for ``compression`` (an external stream when configured for it); ``follow``:
    the file is still downloading and will have that many bytes (:class:`IngestReader`)."""
    ext = (streams or {}).get(compression)
    if ext is not None and compression != "none":
        return external_chunks(ext, path, stop, on_input, follow)
    if compression == "gzip":
        return gzip_chunks(path, stop, on_input, follow)
    if compression == "zstd":
        return zstd_chunks(path, stop, on_input, follow)
    return raw_chunks(path, stop, on_input, follow)


def find_tool(name: str) -> str | None:
    """Absolute path of a decompressor on PATH (for configs and benchmarks)."""
    return shutil.which(name)


__all__ = [
    "INFLATE_IMPL",
    "IngestReader",
    "SpanDecompressor",
    "compression_of",
    "external_chunks",
    "find_tool",
    "gzip_chunks",
    "producer_for",
    "raw_chunks",
    "zstd_chunks",
]
