"""Span caches: bounded, LRU-evicting byte stores keyed by span id, in memory or in a directory.

The span manager keeps two of them per layer (or shares one across layers with distinct keys): one for
*verified* compressed span bytes (what the background fetcher stores) and one for uncompressed span bytes
(what reads are served from). Every method is synchronous and thread-safe: the directory cache does file
I/O, so the span manager calls it from a worker thread; the memory cache is cheap enough to call anywhere.

``put`` returns the keys it evicted to make room (possibly the key just put, when one entry is larger than
the whole bound), so the caller can move those spans' states down (see :mod:`soci_lab.lazy.span`).

The directory cache checks every read against the SHA-256 it computed when the bytes were put: a file
changed on disk behind our back reads as a miss (and is dropped), never as wrong bytes. That is what keeps
"bytes that were not verified are never served" true for a cache that outlives the process's memory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import InvalidInput


@runtime_checkable
class SpanCache(Protocol):
    """A bounded byte store; ``max_bytes <= 0`` means unbounded."""

    @property
    def max_bytes(self) -> int: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...

    def discard(self, key: str) -> None: ...

    @property
    def size(self) -> int: ...

    def close(self) -> None: ...


class MemoryCache:
    """An in-memory LRU byte cache bounded in total bytes (``max_bytes <= 0``: unbounded)."""

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def peek(self, key: str) -> bytes | None:
        """Same as :meth:`get` (no I/O): callers on an event loop may use it without a thread hop."""
        return self.get(key)

    def put(self, key: str, data: bytes) -> list[str]:
        data = bytes(data)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = data
            self._size += len(data)
            return self._evict_locked()

    def _evict_locked(self) -> list[str]:
        evicted: list[str] = []
        if self.max_bytes <= 0:
            return evicted
        while self._size > self.max_bytes and self._items:
            key, data = self._items.popitem(last=False)
            self._size -= len(data)
            evicted.append(key)
            self.evictions += 1
        return evicted

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def discard(self, key: str) -> None:
        with self._lock:
            data = self._items.pop(key, None)
            if data is not None:
                self._size -= len(data)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


class DirectoryCache:
    """An LRU byte cache of files in ``root`` (``<root>/<key>``, written via ``<root>/wip/`` and renamed).

    Its index (key → size, SHA-256) lives in memory: the directory is this process's scratch space, as
    upstream's ``spancache/<mkdtemp>/``. With ``root=None`` a fresh temporary directory is created and
    removed on :meth:`close`.
    """

    def __init__(self, root: str | Path | None = None, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="soci-lab-spancache-")) if root is None else Path(root)
        self._wip = self.root / "wip"
        self._wip.mkdir(parents=True, exist_ok=True)
        self._index: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.evictions = 0
        self.corrupt_reads = 0

    def _path(self, key: str) -> Path:
        if not key or "/" in key or key in (".", "..", "wip"):
            raise InvalidInput(f"invalid span cache key {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes | None:
        for _attempt in range(2):
            with self._lock:
                meta = self._index.get(key)
                if meta is None:
                    return None
                self._index.move_to_end(key)
            try:
                data = self._path(key).read_bytes()
            except OSError:
                data = None
            if data is not None and len(data) == meta[0] and hashlib.sha256(data).digest() == meta[1]:
                return data
            with self._lock:
                if self._index.get(key) is not meta:
                    continue  # replaced by a concurrent put while we read: read the new file
                del self._index[key]
                self._size -= meta[0]
                self.corrupt_reads += 1
                self._path(key).unlink(missing_ok=True)
            return None
        return None

    def put(self, key: str, data: bytes) -> list[str]:
        path = self._path(key)
        digest = hashlib.sha256(data).digest()
        fd, tmp = tempfile.mkstemp(dir=self._wip)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            old = self._index.pop(key, None)
            if old is not None:
                self._size -= old[0]
            self._index[key] = (len(data), digest)
            self._size += len(data)
            evicted: list[str] = []
            if self.max_bytes > 0:
                while self._size > self.max_bytes and self._index:
                    k, (n, _) = self._index.popitem(last=False)
                    self._size -= n
                    evicted.append(k)
                    self.evictions += 1
        for k in evicted:
            self._path(k).unlink(missing_ok=True)
        return evicted

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._index

    def discard(self, key: str) -> None:
        with self._lock:
            meta = self._index.pop(key, None)
            if meta is not None:
                self._size -= meta[0]
        if meta is not None:
            self._path(key).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._index)

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        with self._lock:
            self._index.clear()
            self._size = 0
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)


class TieredCache:
    """A directory cache with a small in-memory LRU of hot entries in front of it.

    The directory is the store of record: its bound and evictions are the cache's (``put`` reports the
    directory's evictions and drops those keys from memory too). The memory tier only saves re-reading and
    re-hashing a span file for every FUSE read of 128 KiB: an entry read from disk is verified once, then
    served from memory until the hot tier evicts it (its bytes stay on disk). :meth:`peek` answers from
    memory only, so callers on an event loop can skip the thread hop for hot spans.
    """

    def __init__(self, directory: DirectoryCache, hot_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.hot = MemoryCache(hot_bytes)

    @property
    def max_bytes(self) -> int:
        return self.directory.max_bytes

    def peek(self, key: str) -> bytes | None:
        if key not in self.directory:
            self.hot.discard(key)
            return None
        return self.hot.get(key)

    def get(self, key: str) -> bytes | None:
        data = self.peek(key)
        if data is not None:
            return data
        data = self.directory.get(key)
        if data is not None:
            self.hot.put(key, data)
        return data

    def put(self, key: str, data: bytes) -> list[str]:
        evicted = self.directory.put(key, data)
        for k in evicted:
            self.hot.discard(k)
        if key not in evicted:
            self.hot.put(key, data)
        return evicted

    def __contains__(self, key: object) -> bool:
        return key in self.directory

    def discard(self, key: str) -> None:
        self.hot.discard(key)
        self.directory.discard(key)

    def keys(self) -> list[str]:
        return self.directory.keys()

    @property
    def size(self) -> int:
        return self.directory.size

    @property
    def root(self) -> Path:
        return self.directory.root

    def close(self) -> None:
        self.hot.close()
        self.directory.close()


def make_cache(kind: str, max_bytes: int = 0, root: str | Path | None = None) -> SpanCache:
    """``kind`` is ``"memory"``, ``"directory"`` (upstream ``filesystem_cache_type``; ``""`` = directory) or
    ``"tiered"`` (directory with a hot in-memory tier)."""
    if kind == "memory":
        return MemoryCache(max_bytes)
    if kind in ("", "directory", "dir"):
        return DirectoryCache(root, max_bytes)
    if kind == "tiered":
        return TieredCache(DirectoryCache(root, max_bytes))
    raise InvalidInput(f"unknown span cache type {kind!r}: expected 'memory' or 'directory'")
