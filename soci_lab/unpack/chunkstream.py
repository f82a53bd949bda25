"""A byte stream made of large decompressed chunks, read without copying file data.

The decompressing thread hands over chunks of a few MiB; :class:`ChunkStream` lets the tar side read the
small header blocks as ``bytes`` (``read``/``tell``, all that :mod:`tarfile`'s header parser needs) and
move file contents straight from the chunk buffers to a file descriptor with ``os.write`` of memoryview
slices (:meth:`ChunkStream.copy_to`): no Python work per byte, one ``write`` per file in the common case.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import ArchiveError, UnsafeArchiveEntry

#: Largest header material (pax records, GNU long names) read in one go; more is an absurd archive.
MAX_HEADER_READ = 16 << 20


class ChunkStream:
    """Sequential reader over chunks returned by ``next_chunk`` (``None`` = end of stream)."""

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next = next_chunk
        self._buf = memoryview(b"")
        self._pos = 0
        self._base = 0  # absolute offset of _buf[0]
        self._eof = False

    def _fill(self) -> bool:
        """Move to the next non-empty chunk; False at end of stream."""
        while not self._eof:
            chunk = self._next()
            if chunk is None:
                self._eof = True
                break
            if chunk:
                self._base += len(self._buf)
                self._buf = memoryview(chunk)
                self._pos = 0
                return True
        return False

    def tell(self) -> int:
        return self._base + self._pos

    def peek(self, n: int) -> bytes | None:
        """The next ``n`` bytes without consuming them, if the current chunk holds them all (else ``None``:
        the caller then reads them with :meth:`read`, which crosses chunks)."""
        if self._pos >= len(self._buf) and not self._fill():
            return None
        if self._pos + n > len(self._buf):
            return None
        return self._buf[self._pos : self._pos + n].tobytes()

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer only at end of stream). Used for headers, so ``n`` is bounded."""
        if n < 0 or n > MAX_HEADER_READ:
            raise UnsafeArchiveEntry(f"tar header material of {n} bytes at offset {self.tell()} is absurd")
        avail = len(self._buf) - self._pos
        if n <= avail:
            out = self._buf[self._pos : self._pos + n].tobytes()
            self._pos += n
            return out
        parts = [self._buf[self._pos :].tobytes()]
        self._pos = len(self._buf)
        need = n - avail
        while need and self._fill():
            k = min(need, len(self._buf))
            parts.append(self._buf[:k].tobytes())
            self._pos = k
            need -= k
        return b"".join(parts)

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next ``n`` bytes of the stream to ``fd``."""
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                raise ArchiveError(f"archive truncated: {n} bytes of file data missing at offset {self.tell()}")
            k = min(n, len(self._buf) - self._pos)
            written = os.write(fd, self._buf[self._pos : self._pos + k])
            self._pos += written
            n -= written

    def take(self, n: int) -> list[memoryview]:
        """The next ``n`` bytes as views into the chunks (no copy; the views keep their chunks alive)."""
        views: list[memoryview] = []
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                raise ArchiveError(f"archive truncated: {n} bytes of file data missing at offset {self.tell()}")
            k = min(n, len(self._buf) - self._pos)
            views.append(self._buf[self._pos : self._pos + k])
            self._pos += k
            n -= k
        return views

    def skip(self, n: int) -> None:
        """Discard the next ``n`` bytes."""
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                raise ArchiveError(f"archive truncated: {n} bytes missing at offset {self.tell()}")
            k = min(n, len(self._buf) - self._pos)
            self._pos += k
            n -= k

    def drain(self) -> int:
        """Consume the rest of the stream (the digest covers it); returns how many bytes that was."""
        start = self.tell()
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)
        return self.tell() - start


__all__ = ["MAX_HEADER_READ", "ChunkStream"]
