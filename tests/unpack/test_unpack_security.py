"""Malicious layers: nothing is ever written outside the destination, and each case gets a clear outcome.

Every test applies a hand-crafted tar into ``<sentinel>/dest`` while ``<sentinel>/outside`` holds a victim
file and directory, then scans the whole sentinel tree: everything outside ``dest`` must be exactly as
before (paths, modes, owners, contents, link targets).
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
from unpack_helpers import E, scan, write_layer

from soci_lab.errors import ArchiveError, UnsafeArchiveEntry, VerificationFailed
from soci_lab.unpack import ApplyOptions, DevicePolicy, apply_layer
from soci_lab.unpack.tarapply import clean_name

WORKERS = [0]


@pytest.fixture(autouse=True, params=[0, 2], ids=["serial", "file-workers"])
def file_workers(request: pytest.FixtureRequest) -> int:
    """Every case runs with the main thread alone and with two file workers."""
    WORKERS[0] = request.param
    return request.param


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    root = tmp_path / "sentinel"
    (root / "dest").mkdir(parents=True)
    out = root / "outside"
    out.mkdir()
    (out / "victim").write_bytes(b"precious")
    os.chmod(out / "victim", 0o600)
    (out / "dir").mkdir()
    os.chmod(out / "dir", 0o750)
    return root


def run(sentinel: Path, entries: list[E], **opts: object) -> Path:
    """Apply ``entries`` into sentinel/dest; assert nothing outside changed (also when it raised)."""
    before = scan(sentinel, skip=sentinel / "dest")
    blob = sentinel.parent / "layer.tar.gz"
    digest, diff_id = write_layer(blob, entries)
    try:
        apply_layer(
            blob,
            sentinel / "dest",
            expected_digest=digest,
            expected_diff_id=diff_id,
            options=ApplyOptions(**{"file_workers": WORKERS[0], **opts}),  # type: ignore[arg-type]
        )
    finally:
        after = scan(sentinel, skip=sentinel / "dest")
        assert after == before, "something outside the destination changed"
    return sentinel / "dest"


def test_dotdot_escape_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="outside the destination"):
        run(sentinel, [E("ok"), E("../outside/victim", data=b"pwned")])


def test_dotdot_escape_after_inner_component_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="outside the destination"):
        run(sentinel, [E("a/", type=tarfile.DIRTYPE), E("a/../../outside/new", data=b"x")])


def test_inner_dotdot_is_cleaned(sentinel: Path) -> None:
    dest = run(sentinel, [E("a/../b", data=b"b")])
    assert (dest / "b").read_bytes() == b"b"
    assert not (dest / "a").exists()


def test_absolute_names_land_inside(sentinel: Path) -> None:
    victim = sentinel / "outside" / "victim"
    dest = run(sentinel, [E(str(victim), data=b"pwned"), E("/etc/passwd", data=b"x")])
    assert (dest / str(victim).lstrip("/")).read_bytes() == b"pwned"
    assert (dest / "etc/passwd").read_bytes() == b"x"


def test_absolute_dotdot_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry):
        run(sentinel, [E("/../../outside/victim", data=b"pwned")])


def test_relative_symlink_leaving_root_is_followed_scoped(sentinel: Path) -> None:
    # link -> ../../outside : resolved inside dest it clamps at dest, so link/pwned is dest/outside/pwned
    dest = run(sentinel, [E("link", tarfile.SYMTYPE, linkname="../../outside"), E("link/pwned", data=b"x")])
    assert os.readlink(dest / "link") == "../../outside"
    assert (dest / "outside" / "pwned").read_bytes() == b"x"


def test_absolute_symlink_parent_is_followed_scoped(sentinel: Path) -> None:
    outside = sentinel / "outside"
    dest = run(sentinel, [E("link", tarfile.SYMTYPE, linkname=str(outside)), E("link/victim", data=b"pwned")])
    assert (dest / str(outside).lstrip("/") / "victim").read_bytes() == b"pwned"


def test_symlink_then_file_of_the_same_name_replaces_the_link(sentinel: Path) -> None:
    victim = sentinel / "outside" / "victim"
    dest = run(sentinel, [E("f", tarfile.SYMTYPE, linkname=str(victim)), E("f", data=b"mine", mode=0o4755)])
    assert not (dest / "f").is_symlink()
    assert (dest / "f").read_bytes() == b"mine"


def test_symlink_then_directory_of_the_same_name(sentinel: Path) -> None:
    out = sentinel / "outside" / "dir"
    dest = run(
        sentinel,
        [E("d", tarfile.SYMTYPE, linkname=str(out)), E("d", tarfile.DIRTYPE, mode=0o777), E("d/x", data=b"x")],
    )
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()
    assert (dest / "d" / "x").read_bytes() == b"x"


def test_directory_replaced_by_symlink_keeps_metadata_inside(sentinel: Path) -> None:
    # dir metadata is applied at the end: it must not reach the symlink's target outside
    out = sentinel / "outside" / "dir"
    dest = run(sentinel, [E("d", tarfile.DIRTYPE, mode=0o777, uid=4242), E("d", tarfile.SYMTYPE, linkname=str(out))])
    assert (dest / "d").is_symlink()


def test_symlink_entry_metadata_never_follows(sentinel: Path) -> None:
    victim = sentinel / "outside" / "victim"
    dest = run(sentinel, [E("s", tarfile.SYMTYPE, linkname=str(victim), mode=0o777, uid=1234, gid=1234, mtime=5)])
    st = os.lstat(dest / "s")
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 1234)
    assert st.st_mtime == 5


def test_hardlink_to_outside_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="outside the destination"):
        run(sentinel, [E("h", tarfile.LNKTYPE, linkname="../outside/victim")])


def test_absolute_hardlink_target_is_resolved_inside(sentinel: Path) -> None:
    victim = sentinel / "outside" / "victim"
    with pytest.raises(UnsafeArchiveEntry, match="does not exist"):
        run(sentinel, [E("h", tarfile.LNKTYPE, linkname=str(victim))])


def test_hardlink_through_symlink_stays_inside(sentinel: Path) -> None:
    outside = sentinel / "outside"
    with pytest.raises(UnsafeArchiveEntry, match="does not exist"):
        run(sentinel, [E("l", tarfile.SYMTYPE, linkname=str(outside)), E("h", tarfile.LNKTYPE, linkname="l/victim")])


def test_hardlink_to_symlink_links_the_symlink(sentinel: Path) -> None:
    victim = sentinel / "outside" / "victim"
    dest = run(sentinel, [E("s", tarfile.SYMTYPE, linkname=str(victim)), E("h", tarfile.LNKTYPE, linkname="s")])
    assert os.readlink(dest / "h") == str(victim)
    assert os.lstat(dest / "h").st_ino == os.lstat(dest / "s").st_ino


def test_file_over_hardlink_does_not_write_through(sentinel: Path) -> None:
    dest = run(sentinel, [E("a", data=b"original"), E("h", tarfile.LNKTYPE, linkname="a"), E("h", data=b"new")])
    assert (dest / "a").read_bytes() == b"original"
    assert (dest / "h").read_bytes() == b"new"


def test_hardlink_to_directory_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="directory"):
        run(sentinel, [E("d", tarfile.DIRTYPE), E("h", tarfile.LNKTYPE, linkname="d")])


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_devices_refused_when_not_permitted(sentinel: Path, kind: bytes) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="device"):
        run(sentinel, [E("dev", kind, devmajor=1, devminor=3)], devices=DevicePolicy.REFUSE)


def test_devices_skipped_when_asked(sentinel: Path) -> None:
    dest = run(sentinel, [E("null", tarfile.CHRTYPE, devmajor=1, devminor=3)], devices=DevicePolicy.SKIP)
    assert not (dest / "null").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_devices_created_when_allowed(sentinel: Path) -> None:
    dest = run(sentinel, [E("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)])
    st = os.lstat(dest / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_absurd_size_is_refused_before_reading(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="claims"):
        run(sentinel, [E("big", data=b"x", size=1 << 50)])


def test_size_larger_than_data_is_a_truncated_archive(sentinel: Path) -> None:
    with pytest.raises(ArchiveError, match="truncated"):
        run(sentinel, [E("big", data=b"x" * 100, size=1 << 20)])


def test_absurd_pax_header_is_refused(sentinel: Path) -> None:
    ti = tarfile.TarInfo("x")
    hdr = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    # turn it into a pax header claiming 1 GiB of records
    hdr[156:157] = tarfile.XHDTYPE
    hdr[124:136] = b"%011o\0" % (1 << 30)
    hdr[148:156] = b"        "
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    blob = sentinel.parent / "pax.tar"
    blob.write_bytes(bytes(hdr) + b"\0" * 1024)
    with pytest.raises(UnsafeArchiveEntry, match="absurd"):
        apply_layer(blob, sentinel / "dest")


def test_duplicate_entries_last_one_wins(sentinel: Path) -> None:
    dest = run(
        sentinel,
        [
            E("a", data=b"1"),
            E("a", data=b"22"),
            E("d/", tarfile.DIRTYPE),
            E("d/child", data=b"c"),
            E("d", data=b"now a file"),
            E("e", data=b"file first"),
            E("e/", tarfile.DIRTYPE),
        ],
    )
    assert (dest / "a").read_bytes() == b"22"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "e").is_dir()


def test_parent_that_is_a_file_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="not a directory"):
        run(sentinel, [E("f", data=b"x"), E("f/child", data=b"y")])


def test_symlink_loop_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="symbolic links"):
        run(
            sentinel,
            [E("a", tarfile.SYMTYPE, linkname="b"), E("b", tarfile.SYMTYPE, linkname="a"), E("a/x", data=b"x")],
        )


def test_whiteout_escapes_are_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry):
        run(sentinel, [E("../outside/.wh.victim")])
    with pytest.raises(UnsafeArchiveEntry, match="names nothing"):
        run(sentinel, [E("d/.wh...", data=b"")])


def test_nul_in_pax_path_is_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="NUL"):
        run(sentinel, [E("x", data=b"1", pax={"path": "a\x00/../../outside/victim"})])


def test_archive_overlay_xattrs_are_dropped(sentinel: Path) -> None:
    dest = run(
        sentinel,
        [
            E(
                "d",
                tarfile.DIRTYPE,
                pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.keep": "v"},
            )
        ],
    )
    names = os.listxattr(dest / "d")
    assert "trusted.overlay.redirect" not in names
    assert "user.keep" in names


def test_sparse_entries_are_refused(sentinel: Path) -> None:
    with pytest.raises(UnsafeArchiveEntry, match="sparse"):
        run(sentinel, [E("s", data=b"abc", pax={"GNU.sparse.map": "0,3", "GNU.sparse.realsize": "3"})])


def test_digest_mismatch_fails(sentinel: Path) -> None:
    blob = sentinel.parent / "l.tar.gz"
    digest, diff_id = write_layer(blob, [E("a", data=b"x")])
    with pytest.raises(VerificationFailed, match="diffID"):
        apply_layer(blob, sentinel / "dest", expected_digest=digest, expected_diff_id="sha256:" + "0" * 64)
    (sentinel / "dest2").mkdir()
    with pytest.raises(VerificationFailed, match="compressed digest"):
        apply_layer(blob, sentinel / "dest2", expected_digest="sha256:" + "1" * 64, expected_diff_id=diff_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("./a/b", "a/b"), ("/abs", "abs"), ("a//b/./c", "a/b/c"), (".", ""), ("./", ""), ("a/..", "")],
)
def test_clean_name(name: str, expected: str) -> None:
    assert clean_name(name) == expected


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "/..", "x\x00y"])
def test_clean_name_refuses(name: str) -> None:
    with pytest.raises(UnsafeArchiveEntry):
        clean_name(name)
