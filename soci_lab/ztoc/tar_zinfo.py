"""Uncompressed tar layers: ``TarZinfo`` — fixed-size spans, "compressed" offsets equal uncompressed ones.

The checkpoints blob is a nested FlatBuffer (``fbs/zinfo.fbs``: ``table TarZinfo { version:int32;
span_size:int64; size:int64; }``, version 2). Span ``i`` is ``[i·span_size, min((i+1)·span_size, size))``;
``max_span_id = size // span_size − (1 if size % span_size == 0 else 0)`` (upstream ``tar_zinfo.go``). For an
empty file upstream's formula gives −1 (no span); soci_lab keeps one empty span so that every layer has a
span 0 (a real tar is never empty: it ends with two zero blocks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import flatbuffers

from ..errors import ExceedMaxSpan, FormatError
from ._fb import FbBuffer

TAR_ZINFO_VERSION = 2
_CHUNK = 1 << 20


class TarZinfo:
    """Span geometry of an uncompressed tar layer."""

    algorithm = "uncompressed"

    def __init__(self, span_size: int, size: int, version: int = TAR_ZINFO_VERSION) -> None:
        if span_size <= 0:
            raise FormatError(f"tar zinfo span size must be positive, not {span_size}")
        if size < 0:
            raise FormatError(f"tar zinfo size must not be negative, not {size}")
        self.span_size = span_size
        self.size = size
        self.version = version

    @property
    def compressed_size(self) -> int:
        """Same as the uncompressed size."""
        return self.size

    @property
    def uncompressed_size(self) -> int:
        """The tar file's size."""
        return self.size

    @property
    def max_span_id(self) -> int:
        """Upstream's formula; an empty file keeps a single empty span (0)."""
        if self.size == 0:
            return 0
        return self.size // self.span_size - (1 if self.size % self.span_size == 0 else 0)

    @property
    def span_count(self) -> int:
        """Number of spans."""
        return self.max_span_id + 1

    def _check(self, i: int) -> None:
        if not 0 <= i <= self.max_span_id:
            raise ExceedMaxSpan(f"span {i} does not exist (max span id {self.max_span_id})")

    def start_compressed_offset(self, i: int) -> int:
        """``span_size · i``."""
        self._check(i)
        return self.span_size * i

    def end_compressed_offset(self, i: int) -> int:
        """``min(span_size · (i+1), size)``."""
        self._check(i)
        return min(self.span_size * (i + 1), self.size)

    start_uncompressed_offset = start_compressed_offset
    end_uncompressed_offset = end_compressed_offset

    def span_of(self, offset: int) -> int:
        """``offset // span_size`` (clamped to the last span)."""
        return max(0, min(offset // self.span_size, self.max_span_id))

    def validate(self) -> None:
        """Nothing to check beyond construction."""

    def verify_header(self, data: bytes) -> None:
        """No-op (upstream's TarZinfo.VerifyHeader does nothing)."""

    def extract(self, span_id: int, data: bytes | memoryview, offset: int, length: int) -> bytes:
        """Slice of the span's bytes (``data`` starts at the span's start)."""
        skip = offset - self.start_compressed_offset(span_id)
        if skip < 0 or skip + length > len(data):
            raise FormatError(f"range {offset}+{length} is not inside the given span {span_id} data")
        return bytes(data[skip : skip + length])

    def decompress_span(self, span_id: int, data: bytes | memoryview) -> bytes:
        """The span's bytes are its own content."""
        return bytes(data)

    def to_bytes(self) -> bytes:
        """The nested TarZinfo flatbuffer, fields added in upstream's order (version, span_size, size).

        The order decides the layout: the int32 first leaves 4 bytes of padding before the int64s, so the
        blob is 48 bytes, as upstream writes it (size first would give 40)."""
        b = flatbuffers.Builder(64)
        b.StartObject(3)
        b.PrependInt32Slot(0, self.version, 0)
        b.PrependInt64Slot(1, self.span_size, 0)
        b.PrependInt64Slot(2, self.size, 0)
        b.Finish(b.EndObject())
        return bytes(b.Output())

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview) -> TarZinfo:
        """Parse the nested TarZinfo flatbuffer."""
        t = FbBuffer(blob, "tar zinfo").root()
        return cls(t.scalar(1, "q"), t.scalar(2, "q"), t.scalar(0, "i"))


@dataclass
class TarScan:
    """Result of :func:`scan_tar`."""

    zinfo: TarZinfo
    span_digests: list[str]
    size: int


def scan_tar(src: BinaryIO, span_size: int, sink: Callable[[memoryview], None] | None = None) -> TarScan:
    """Read an uncompressed tar once: fixed-span digests and size; ``sink`` receives the bytes."""
    if span_size <= 0:
        raise FormatError(f"span size must be positive, not {span_size}")
    digests: list[str] = []
    h = hashlib.sha256()
    in_span = 0
    size = 0
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    while True:
        n = src.readinto(mv) if hasattr(src, "readinto") else _read_into(src, mv)
        if not n:
            break
        chunk = mv[:n]
        if sink is not None:
            sink(chunk)
        pos = 0
        while pos < n:
            take = min(n - pos, span_size - in_span)
            h.update(chunk[pos : pos + take])
            in_span += take
            pos += take
            if in_span == span_size:
                digests.append("sha256:" + h.hexdigest())
                h = hashlib.sha256()
                in_span = 0
        size += n
    if in_span or not digests:
        digests.append("sha256:" + h.hexdigest())
    return TarScan(TarZinfo(span_size, size), digests, size)


def _read_into(src: BinaryIO, mv: memoryview) -> int:
    b = src.read(len(mv))
    mv[: len(b)] = b
    return len(b)
