"""Span caches: LRU order, byte bounds, evictions reported, corrupted directory entries read as misses."""

from __future__ import annotations

import pytest

from soci_lab.errors import InvalidInput
from soci_lab.lazy.cache import DirectoryCache, MemoryCache, TieredCache, make_cache


@pytest.fixture(params=["memory", "directory", "tiered"])
def cache(request, tmp_path):
    c = {
        "memory": lambda: MemoryCache(30),
        "directory": lambda: DirectoryCache(tmp_path / "c", 30),
        "tiered": lambda: TieredCache(DirectoryCache(tmp_path / "t", 30), hot_bytes=10),
    }[request.param]()
    yield c
    c.close()


def test_lru_eviction_within_bound(cache):
    assert cache.put("a", b"a" * 10) == []
    assert cache.put("b", b"b" * 10) == []
    assert cache.get("a") == b"a" * 10  # a is now the most recent
    assert cache.put("c", b"c" * 10) == []
    assert cache.put("d", b"d" * 10) == ["b"]  # least recently used goes first
    assert "b" not in cache and cache.get("b") is None
    assert cache.size == 30
    assert cache.put("big", b"x" * 31) == ["a", "c", "d", "big"]  # larger than the bound: not kept
    assert cache.size == 0 and cache.get("big") is None


def test_replacing_a_key_keeps_one_copy(cache):
    cache.put("a", b"1" * 10)
    cache.put("a", b"2" * 12)
    assert cache.size == 12 and cache.get("a") == b"2" * 12


def test_corrupted_file_reads_as_a_miss(tmp_path):
    d = DirectoryCache(tmp_path / "c")
    d.put("7", b"verified bytes")
    (tmp_path / "c" / "7").write_bytes(b"verified bytez")
    assert d.get("7") is None and "7" not in d and d.corrupt_reads == 1
    d.put("8", b"abc")
    (tmp_path / "c" / "8").unlink()
    assert d.get("8") is None and "8" not in d


def test_tiered_cache_serves_hot_entries_from_memory_and_verifies_cold_ones(tmp_path):
    d = DirectoryCache(tmp_path / "c", 100)
    t = TieredCache(d, hot_bytes=10)
    t.put("1", b"1" * 10)
    t.put("2", b"2" * 10)  # pushes "1" out of the hot tier only
    assert t.peek("1") is None and "1" in t
    (tmp_path / "c" / "1").write_bytes(b"X" * 10)  # corrupt the cold copy on disk
    assert t.get("1") is None and "1" not in t  # never served
    assert t.peek("2") == b"2" * 10  # hot: no disk read
    t.discard("2")
    assert t.peek("2") is None and t.get("2") is None


def test_directory_cache_rejects_path_like_keys(tmp_path):
    d = DirectoryCache(tmp_path / "c")
    for bad in ("../x", "a/b", "", "wip", ".."):
        with pytest.raises(InvalidInput):
            d.put(bad, b"x")
    with pytest.raises(InvalidInput):
        make_cache("tape")
    owned = DirectoryCache(None)
    root = owned.root
    owned.put("1", b"x")
    owned.close()
    assert not root.exists()  # a temporary cache directory is removed on close
