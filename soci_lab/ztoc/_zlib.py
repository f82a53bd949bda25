"""A minimal, hand-written ctypes binding to the system libz, for block-level inflate control.

Why hand-written: Python's :mod:`zlib` module hides the two zlib features random access into a deflate
stream needs — ``inflate(..., Z_BLOCK)`` (stop at every deflate block boundary and report, in
``z_stream.data_type``, whether we are at a boundary, whether it was the last block and how many bits of
the current byte are still unused) and ``inflatePrime`` (push those leftover bits into a fresh inflater when
resuming at a non-byte-aligned block boundary). Shifting the bit stream in Python and feeding
``zlib.decompressobj(-15)`` does not work: stored blocks re-align to byte boundaries of the *original*
stream. There is no maintained PyPI binding that exposes both, so we bind the handful of C functions we
need (``inflateInit2_``, ``inflate``, ``inflatePrime``, ``inflateSetDictionary``, ``inflateReset2``,
``inflateEnd``) directly. ctypes releases the GIL around each foreign call, so inflating in worker threads
uses several cores.

The ``z_stream`` layout below is zlib's public ``struct z_stream_s`` (zlib.h), unchanged since zlib 1.0.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

from ..errors import FormatError

Z_OK = 0
Z_STREAM_END = 1
Z_NEED_DICT = 2
Z_DATA_ERROR = -3
Z_MEM_ERROR = -4
Z_BUF_ERROR = -5
Z_NO_FLUSH = 0
Z_BLOCK = 5

#: windowBits for "gzip or zlib header, detected automatically" (15 + 32).
WBITS_AUTO = 47
#: windowBits for a raw deflate stream (no header).
WBITS_RAW = -15


class ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (zlib.h ``struct z_stream_s``); ctypes computes the platform's padding."""

    _fields_ = (
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    )


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("z") or "libz.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - depends on the host
        raise FormatError(f"cannot load the zlib shared library ({name}): {exc}") from None
    zp = ctypes.POINTER(ZStream)
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.inflateInit2_.argtypes = (zp, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
    lib.inflateInit2_.restype = ctypes.c_int
    lib.inflate.argtypes = (zp, ctypes.c_int)
    lib.inflate.restype = ctypes.c_int
    lib.inflatePrime.argtypes = (zp, ctypes.c_int, ctypes.c_int)
    lib.inflatePrime.restype = ctypes.c_int
    lib.inflateSetDictionary.argtypes = (zp, ctypes.c_void_p, ctypes.c_uint)
    lib.inflateSetDictionary.restype = ctypes.c_int
    lib.inflateReset2.argtypes = (zp, ctypes.c_int)
    lib.inflateReset2.restype = ctypes.c_int
    lib.inflateEnd.argtypes = (zp,)
    lib.inflateEnd.restype = ctypes.c_int
    return lib


libz = _load()
_VERSION = libz.zlibVersion()


def addr(buf: ctypes.Array) -> int:
    """Address of a ctypes buffer (for ``next_in`` / ``next_out`` arithmetic)."""
    return ctypes.addressof(buf)


class Inflater:
    """One zlib inflate stream. Use as a context manager (or call :meth:`close`) so ``inflateEnd`` runs."""

    def __init__(self, wbits: int) -> None:
        self.strm = ZStream()
        self.ref = ctypes.byref(self.strm)
        ret = libz.inflateInit2_(self.ref, wbits, _VERSION, ctypes.sizeof(ZStream))
        if ret != Z_OK:
            raise FormatError(f"zlib inflateInit2 failed ({ret})")
        self._open = True

    def reset(self, wbits: int) -> None:
        """``inflateReset2``: start a new stream (e.g. the next gzip member) keeping the allocation."""
        ret = libz.inflateReset2(self.ref, wbits)
        if ret != Z_OK:
            raise FormatError(f"zlib inflateReset2 failed ({ret})")

    def prime(self, bits: int, value: int) -> None:
        """``inflatePrime``: insert ``bits`` bits of ``value`` ahead of the input."""
        ret = libz.inflatePrime(self.ref, bits, value)
        if ret != Z_OK:
            raise FormatError(f"zlib inflatePrime failed ({ret})")

    def set_dictionary(self, window: bytes) -> None:
        """``inflateSetDictionary`` (raw inflate: the 32 KiB preceding the resume point)."""
        ret = libz.inflateSetDictionary(self.ref, window, len(window))
        if ret != Z_OK:
            raise FormatError(f"zlib inflateSetDictionary failed ({ret})")

    def resume_at(self, bits: int, first_byte: int, window: bytes) -> int:
        """Position a raw inflater at a checkpoint: prime its ``bits`` leftover bits of ``first_byte`` (the
        byte the checkpoint starts in) and set the preceding window. Returns where input starts: 1 when
        that byte was consumed by the prime, else 0."""
        pos = 0
        if bits:
            self.prime(bits, first_byte >> (8 - bits))
            pos = 1
        self.set_dictionary(window)
        return pos

    def close(self) -> None:
        """``inflateEnd``; idempotent."""
        if self._open:
            libz.inflateEnd(self.ref)
            self._open = False

    def __enter__(self) -> Inflater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        with contextlib.suppress(Exception):
            self.close()

    def message(self) -> str:
        """zlib's error message for the last failure, if any."""
        msg = self.strm.msg
        return msg.decode("ascii", "replace") if msg else "corrupt deflate data"
