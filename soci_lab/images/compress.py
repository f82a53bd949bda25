"""Layer compressors that never write a timestamp: the same tar always compresses to the same bytes.

- ``gzip``: one deflate stream in a gzip member made by zlib (``wbits=31``), whose header has mtime 0,
  no file name and the OS byte of zlib's build (3, Unix): deterministic for a given zlib version.
- ``zstd``: many independent zstd frames, one per ``frame_size`` bytes of tar (4 MiB by default), each
  recording its content size. Independent frames are what lets a SOCI zTOC start decompressing at a
  frame boundary; a single-frame layer cannot be indexed.
- ``none``: the tar as it is.

A compressor is fed by ``write`` and ended by ``finish``; it passes compressed bytes to ``out``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

from ..errors import InvalidInput

DEFAULT_GZIP_LEVEL = 6
DEFAULT_ZSTD_LEVEL = 3
DEFAULT_FRAME_SIZE = 4 << 20
COMPRESSIONS = ("gzip", "zstd", "none")

Out = Callable[[bytes], object]


class Compressor(Protocol):
    """Receives uncompressed chunks, emits compressed ones to its output."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> None: ...


class GzipCompressor:
    """One gzip member, header without time or name."""

    def __init__(self, out: Out, level: int = DEFAULT_GZIP_LEVEL) -> None:
        if not 0 <= level <= 9:
            raise InvalidInput(f"gzip level must be 0..9, not {level}")
        self.out = out
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        chunk = self._z.compress(data)
        if chunk:
            self.out(chunk)

    def finish(self) -> None:
        self.out(self._z.flush(zlib.Z_FINISH))


class ZstdFramesCompressor:
    """A zstd stream of independent frames, one per ``frame_size`` uncompressed bytes.

    The push-driven twin of ``soci_lab.ztoc.compress_zstd_frames`` (which pulls from a file): same
    frame size, level, content-size and checksum flags, so the two give the same bytes for the same tar
    (a test holds them to it). The tar writer pushes its output, hence this form: no temporary tar file.
    """

    def __init__(self, out: Out, level: int = DEFAULT_ZSTD_LEVEL, frame_size: int = DEFAULT_FRAME_SIZE) -> None:
        import zstandard

        if frame_size <= 0:
            raise InvalidInput(f"zstd frame size must be positive, not {frame_size}")
        if not 1 <= level <= 22:
            raise InvalidInput(f"zstd level must be 1..22, not {level}")
        self.out = out
        self.frame_size = frame_size
        self._cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        self._buf = bytearray()
        self.frames = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data)
        while len(mv):
            room = self.frame_size - len(self._buf)
            if not self._buf and len(mv) >= self.frame_size:
                # a whole frame straight from the caller's buffer, no copy
                self._emit(mv[: self.frame_size])
                mv = mv[self.frame_size :]
                continue
            self._buf += mv[:room]
            mv = mv[room:]
            if len(self._buf) == self.frame_size:
                self._emit(self._buf)
                self._buf = bytearray()

    def _emit(self, chunk: bytes | bytearray | memoryview) -> None:
        self.out(self._cctx.compress(chunk))
        self.frames += 1

    def finish(self) -> None:
        if self._buf or not self.frames:
            self._emit(self._buf)
            self._buf = bytearray()


class Passthrough:
    """No compression."""

    def __init__(self, out: Out) -> None:
        self.out = out

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.out(bytes(data))

    def finish(self) -> None:
        pass


def check_compression(compression: str) -> str:
    """``gzip``, ``zstd`` or ``none`` (``uncompressed`` is accepted as ``none``)."""
    name = "none" if compression == "uncompressed" else compression
    if name not in COMPRESSIONS:
        raise InvalidInput(f"unknown layer compression {compression!r} (gzip, zstd or none)")
    return name


def make_compressor(
    compression: str,
    out: Out,
    *,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    frame_size: int = DEFAULT_FRAME_SIZE,
) -> Compressor:
    """The compressor for ``compression`` (``gzip``, ``zstd`` or ``none``) writing to ``out``."""
    name = check_compression(compression)
    if name == "gzip":
        return GzipCompressor(out, gzip_level)
    if name == "zstd":
        return ZstdFramesCompressor(out, zstd_level, frame_size)
    return Passthrough(out)
