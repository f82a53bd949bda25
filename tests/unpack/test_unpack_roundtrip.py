"""Round trip: a real tree tarred by GNU tar, applied by soci_lab, gives back the same tree.

Types, modes (setuid/setgid/sticky), numeric owners, mtimes to the nanosecond (directories and symlinks
too), contents, link targets, device numbers, xattrs (user.* and trusted.*) and hard-link groups are
compared with ``tests/treecmp.py``; whiteouts must come out converted for overlayfs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from treecmp import assert_same_tree

from soci_lab.config import DecompressStream
from soci_lab.unpack import ApplyOptions, OverlayOpaqueType, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tar") is None, reason="needs root and GNU tar")


def build_tree(src: Path) -> None:
    """A copy of some of the stdlib plus every special kind of entry a layer can hold."""
    lib = Path(os.path.dirname(os.__file__))
    for sub in ("json", "email", "xml"):
        shutil.copytree(lib / sub, src / "lib" / sub, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "etc").mkdir()
    (src / "etc/owned").write_text("owned by 1234:5678\n")
    os.chown(src / "etc/owned", 1234, 5678)
    os.chmod(src / "etc/owned", 0o640)
    (src / "bin").mkdir()
    (src / "bin/suid").write_bytes(b"\x7fELF fake")
    os.chown(src / "bin/suid", 0, 0)
    os.chmod(src / "bin/suid", 0o4755)
    (src / "bin/sgid-owned").write_bytes(b"x")
    os.chown(src / "bin/sgid-owned", 0, 50)
    os.chmod(src / "bin/sgid-owned", 0o2711)
    os.link(src / "bin/suid", src / "bin/suid-hardlink")
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    (src / "shared").mkdir()
    os.chown(src / "shared", 100, 100)
    os.chmod(src / "shared", 0o2775)
    (src / "empty").write_bytes(b"")
    (src / "big.bin").write_bytes(os.urandom(3 << 20) + b"tail")
    (src / ("long-" + "n" * 150)).write_text("long name")
    (src / "ünïcødé ☃ name").write_text("unicode")
    deep = src.joinpath(*[f"d{i}" for i in range(30)])
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("deep")
    os.symlink("../etc/owned", src / "bin/rel-link")
    os.symlink("/etc/passwd", src / "abs-link")
    os.symlink("does/not/exist", src / "dangling")
    os.lchown(src / "dangling", 7, 8)
    os.mkfifo(src / "fifo", 0o620)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.setxattr(src / "etc/owned", "user.comment", b"hello")
    os.setxattr(src / "etc/owned", "trusted.note", b"\x00\x01binary\xff")
    os.setxattr(src / "shared", "user.dir", b"d")
    # times last, deepest first, so creating children does not move them
    t = 1_500_000_000_123_456_789
    for dirpath, dirnames, filenames in os.walk(src, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(t, t), follow_symlinks=False)
            t += 1_000_000_007
    os.utime(src, ns=(t, t))


def gnu_tar(src: Path, out: Path, compress: str) -> None:
    tar = subprocess.run(
        ["tar", "--create", "--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(src), "."],
        check=True,
        capture_output=True,
    ).stdout
    if compress == "gzip":
        tar = subprocess.run(["gzip", "-1", "-c"], input=tar, check=True, capture_output=True).stdout
    elif compress == "zstd":
        tar = subprocess.run(["zstd", "-1", "-c", "-q"], input=tar, check=True, capture_output=True).stdout
    out.write_bytes(tar)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("roundtrip") / "src"
    src.mkdir()
    build_tree(src)
    return src


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "file-workers"])
@pytest.mark.parametrize("compress", ["gzip", "zstd", "none", "external-gzip", "external-unpigz", "external-zstd"])
def test_gnu_tar_round_trip(tree: Path, tmp_path: Path, compress: str, workers: int) -> None:
    tool = compress.removeprefix("external-")
    if tool != "none" and shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    codec = {"unpigz": "gzip", "gzip": "gzip", "zstd": "zstd", "none": "none"}[tool]
    blob = tmp_path / "layer"
    gnu_tar(tree, blob, codec)
    dest = tmp_path / "dest"
    dest.mkdir()
    streams = {codec: DecompressStream(path=shutil.which(tool) or "", args=["-d", "-c"])}
    result = apply_layer(
        blob,
        dest,
        compute_digests=True,
        decompress_streams=streams if compress.startswith("external-") else None,
        options=ApplyOptions(file_workers=workers),
    )
    assert result.compression == codec
    assert_same_tree(tree, dest)
    # the root directory's own metadata comes from the "./" entry
    assert os.stat(dest).st_mtime_ns == os.stat(tree).st_mtime_ns
    assert result.stats.hardlinks == 1 and result.stats.devices == 2 and result.stats.fifos == 1


def test_whiteouts_are_converted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/lib/opaque-dir").mkdir(parents=True)
    (src / "usr/lib/opaque-dir/.wh..wh..opq").write_bytes(b"")
    (src / "usr/lib/opaque-dir/kept").write_text("new content")
    (src / "usr/.wh.removed-file").write_bytes(b"")
    (src / ".wh..wh.plnk").mkdir()  # aufs bookkeeping: skipped
    os.chown(src / "usr/.wh.removed-file", 33, 44)
    blob = tmp_path / "layer.tar.gz"
    gnu_tar(src, blob, "gzip")
    for opaque, names in (
        (OverlayOpaqueType.TRUSTED, {"trusted.overlay.opaque"}),
        (OverlayOpaqueType.USER, {"user.overlay.opaque"}),
        (OverlayOpaqueType.ALL, {"trusted.overlay.opaque", "user.overlay.opaque"}),
    ):
        dest = tmp_path / f"dest-{opaque.name}"
        dest.mkdir()
        stats = apply_layer(blob, dest, options=ApplyOptions(opaque=opaque)).stats
        wh = os.lstat(dest / "usr/removed-file")
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
        assert (wh.st_uid, wh.st_gid) == (33, 44)
        assert not (dest / "usr/.wh.removed-file").exists()
        assert not (dest / "usr/lib/opaque-dir/.wh..wh..opq").exists()
        assert (dest / "usr/lib/opaque-dir/kept").read_text() == "new content"
        got = {n for n in os.listxattr(dest / "usr/lib/opaque-dir") if n.endswith("overlay.opaque")}
        assert got == names
        for n in names:
            assert os.getxattr(dest / "usr/lib/opaque-dir", n) == b"y"
        assert not (dest / ".wh..wh.plnk").exists() and not (dest / "plnk").exists()
        assert (stats.whiteouts, stats.opaques) == (1, 1)


def test_whiteouts_kept_as_files_without_conversion(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ".wh.x").write_bytes(b"")
    blob = tmp_path / "layer.tar"
    gnu_tar(src, blob, "none")
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_layer(blob, dest, options=ApplyOptions(convert_whiteouts=False))
    assert (dest / ".wh.x").is_file()


def test_python_version_has_stdlib_to_copy() -> None:
    assert (Path(os.path.dirname(os.__file__)) / "json").is_dir(), sys.version


def test_options_from_config() -> None:
    from soci_lab.config import Config

    cfg = Config()
    assert ApplyOptions.from_config(cfg).opaque is OverlayOpaqueType.TRUSTED
    cfg.overlay_opaque_type = "user"
    opts = ApplyOptions.from_config(cfg, file_workers=2)
    assert (opts.opaque, opts.file_workers) == (OverlayOpaqueType.USER, 2)
    with pytest.raises(ValueError):
        OverlayOpaqueType.parse("bogus")


def test_decompress_and_apply_events_carry_their_threads_cpu(tmp_path: Path) -> None:
    """``cpu_s`` on the ``decompress`` and ``apply`` events is the CPU of the thread that did that work (the
    calibration needs it: an apply thread's wall time includes its waits for chunks). Each thread's, not
    the process's: with both threads busy at once the process's CPU would exceed either event's duration."""
    from unpack_helpers import E, write_layer

    from soci_lab.events import EventRecorder

    entries = [E(f"d{i % 20}/f{i}", data=bytes([i % 251]) * (i % 900)) for i in range(3000)]
    entries.append(E("big", data=os.urandom(1 << 16) * 400))  # 25 MiB: both threads busy for a while
    blob = tmp_path / "layer.tar.gz"
    digest, diff_id = write_layer(blob, entries)
    (tmp_path / "d").mkdir()
    rec = EventRecorder(strategy="parallel")
    apply_layer(blob, tmp_path / "d", expected_digest=digest, expected_diff_id=diff_id, recorder=rec)
    ev = rec.to_frame().set_index("kind")
    for kind in ("decompress", "apply"):
        cpu = ev.loc[kind, "cpu_s"]
        duration = ev.loc[kind, "t_end"] - ev.loc[kind, "t_start"]
        assert 0 < cpu <= duration + 0.02, (kind, cpu, duration)
