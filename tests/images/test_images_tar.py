"""The deterministic layer tar, read back by Python's tarfile and by GNU tar (neither written here)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from imgtools import T0, bound_unix_socket

from soci_lab.errors import LayerSourceError
from soci_lab.images import write_tree_tar
from soci_lab.images.tarwriter import pax_time, tar_info


def tar_bytes(root: Path, **kw: object) -> tuple[bytes, object]:
    out = io.BytesIO()
    stats = write_tree_tar(root, out.write, **kw)  # type: ignore[arg-type]
    return out.getvalue(), stats


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def test_diff_id_is_sha256_of_the_tar_and_entries_are_in_gnu_sort_order(rich_tree):
    data, stats = tar_bytes(rich_tree)
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stats.size == len(data) and len(data) % 512 == 0
    assert data[-1024:] == bytes(1024)
    names = [m.name for m in members(data)]
    # same order as GNU tar's own --sort=name over the same tree
    gnu = subprocess.run(
        ["tar", "--sort=name", "-C", str(rich_tree), "-cf", "-", "."], capture_output=True, check=True
    ).stdout
    gnu_names = [m.name.removeprefix("./") for m in members(gnu) if m.name != "."]
    assert names == gnu_names
    assert "files/random.bin" in names and all(not n.startswith(("./", "/")) for n in names)


def test_headers_carry_types_modes_owners_devices_links_and_xattrs(rich_tree):
    data, stats = tar_bytes(rich_tree)
    by = {m.name: m for m in members(data)}
    assert by["dirs/sticky"].isdir() and by["dirs/sticky"].mode == 0o1777
    assert by["dirs/setgid"].mode == 0o2755 and by["files/setuid"].mode == 0o4755
    assert (by["dirs/private"].uid, by["dirs/private"].gid) == (1000, 1000)
    big = by["files/bigids"]
    assert (big.uid, big.gid) == (3_000_000, 4_000_000)
    assert big.pax_headers["uid"] == "3000000"  # beyond ustar's 7 octal digits → PAX
    assert by["files/setuid"].uname == "" and by["files/setuid"].gname == ""
    null = by["special/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3)
    assert by["special/loop0"].isblk() and by["special/fifo"].isfifo()
    assert by["links/long-target"].linkname == "t" * 180
    # hard links: the first name in tar order holds the data, later names point at it
    assert by["dirs/plain/link-elsewhere"].isreg() and by["dirs/plain/link-elsewhere"].size == 150
    assert by["files/aa-link"].islnk() and by["files/aa-link"].linkname == "dirs/plain/link-elsewhere"
    assert by["files/zz-original"].islnk() and stats.hardlinks == 3
    text = by["files/text"].pax_headers
    assert text["SCHILY.xattr.user.comment"] == "plain text"
    assert text["SCHILY.xattr.user.binary"].encode("utf-8", "surrogateescape") == bytes([0, 255, 128, 10, 0])
    assert by["links/relative"].pax_headers["SCHILY.xattr.trusted.sym"] == "on a symlink"
    # names: long paths and non-UTF-8 bytes survive
    assert any(len(n) > 255 for n in by)
    assert "names/" + os.fsdecode(b"latin1-\xe9t\xe9") in by
    # whiteout names are plain entries
    assert by["wh/.wh.gone"].isreg() and by["wh/.wh..wh..opq"].isreg()


def test_mtimes_are_exact_to_the_nanosecond_and_nothing_else_is_timed(rich_tree):
    data, _ = tar_bytes(rich_tree)
    by = {m.name: m for m in members(data)}
    assert by["files/text"].pax_headers["mtime"] == pax_time(T0) == "1600000000.123456789"
    assert by["files/text"].mtime == pytest.approx(T0 / 1e9)
    assert "mtime" not in by["files/whole-second"].pax_headers  # whole seconds need no PAX
    assert by["files/old"].pax_headers["mtime"] == "-315619200.5"
    for m in by.values():
        assert not {"atime", "ctime"} & set(m.pax_headers)
    # ustar's own mtime field keeps the whole seconds for readers that ignore PAX
    raw = bytes(data)
    off = raw.index(b"files/text\x00")
    header = raw[off : off + 512]
    assert int(header[136:148].strip(b"\x00 "), 8) == T0 // 10**9


def test_pax_time_spelling():
    assert pax_time(0) == "0"
    assert pax_time(1_500_000_000) == "1.5"
    assert pax_time(-1_500_000_000) == "-1.5"
    assert pax_time(-2_000_000_000) == "-2"
    assert pax_time(1) == "0.000000001"


def test_gnu_tar_extracts_the_same_tree(rich_tree, tmp_path):
    from treecmp import assert_same_tree

    data, _ = tar_bytes(rich_tree)
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "--numeric-owner", "-xpf", "-", "-C", str(out)],
        input=data,
        check=True,
        capture_output=True,
    )
    # GNU tar sets directory mtimes after their contents, as an unpacker should
    assert_same_tree(rich_tree, out)


def test_a_socket_is_skipped_and_reported(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "a").write_text("a")
    heard: list[tuple[str, str]] = []
    with bound_unix_socket(root / "b.sock"):
        data, stats = tar_bytes(root, on_skip=lambda n, why: heard.append((n, why)))
    assert [m.name for m in members(data)] == ["a"]
    assert stats.skipped == ["b.sock"] and heard[0][0] == "b.sock" and "socket" in heard[0][1]


def test_missing_or_non_directory_source_is_one_clear_error(tmp_path):
    with pytest.raises(LayerSourceError, match="does not exist"):
        tar_bytes(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LayerSourceError, match="not a directory"):
        tar_bytes(tmp_path / "file")


def test_sizes_beyond_ustar_go_to_pax(tmp_path):
    """A 9 GiB (sparse) file: only its header is made here, streaming 9 GiB would take too long."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(9 << 30)
    ti = tar_info("big", str(big), os.lstat(big))
    assert ti is not None
    header = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r:") as tf:
        # tarfile reads the PAX size and then expects that much data: read the header only
        member = tf.next()
    assert member is not None and member.size == 9 << 30 and member.pax_headers["size"] == str(9 << 30)
