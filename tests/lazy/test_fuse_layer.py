"""A real layer mounted with FUSE (serving process + pyfuse3), compared with what tarfile says it holds.

Needs root and /dev/fuse. Every mount is undone by ``mount_layer``'s ``finally``; the session fixture in
conftest.py fails the run if any soci FUSE mount is left behind.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from soci_lab.config import Config
from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions, is_mounted, mount_layer
from soci_lab.ztoc import Ztoc

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"),
]

SPAN = 64 << 10


def _spec(path: Path) -> LazyLayerSpec:
    return LazyLayerSpec.from_layer_file(path, span_size=SPAN)


def _quiet(**kw) -> ServeOptions:
    """No background fetching: every fetch is caused by a read."""
    return ServeOptions(background=False, **kw)


def test_mounted_layer_matches_tarfile(layer_files, tmp_path):
    path, raw = layer_files
    cfg = Config()
    cfg.overlay_opaque_type = "all"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    tf = tarfile.open(fileobj=io.BytesIO(raw))  # noqa: SIM115 - in memory
    members = {m.name.rstrip("/"): m for m in tf.getmembers()}
    with mount_layer(_spec(path), mnt, _quiet(config=cfg)):
        listed = set()
        for root, dirs, files in os.walk(mnt):
            rel = os.path.relpath(root, mnt)
            for n in dirs + files:
                listed.add(os.path.normpath(os.path.join(rel, n)))
        expected = (
            {n for n in members if ".wh." not in os.path.basename(n)}
            | {
                "usr",
                "usr/bin",
                "usr/lib",
                "usr/share",
                "usr/share/doc",
                "dev",
                "run",
                "var",
                "var/removed",
                ".soci-snapshotter",
                f".soci-snapshotter/{_spec(path).digest}.json",
            }
            | {f"usr/share/doc/pkg{i}" for i in range(7)}
            | {"usr/share/" + "long" * 40}
        )
        assert listed == expected
        for name, m in members.items():
            if ".wh." in os.path.basename(name):
                continue
            st = os.lstat(mnt / name)
            assert st.st_uid == m.uid and st.st_gid == m.gid, name
            assert int(st.st_mtime) == int(m.mtime), name
            if m.isfile():
                assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == m.mode, name
                assert st.st_size == m.size
                assert (mnt / name).read_bytes() == tf.extractfile(m).read(), name
            elif m.isdir():
                assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == m.mode
            elif m.issym():
                assert os.readlink(mnt / name) == m.linkname
            elif m.islnk():
                target = os.lstat(mnt / m.linkname)
                assert st.st_ino == target.st_ino and st.st_nlink == target.st_nlink == 2
            elif m.ischr() or m.isblk():
                assert (stat.S_ISCHR if m.ischr() else stat.S_ISBLK)(st.st_mode)
                assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (m.devmajor, m.devminor)
            elif m.isfifo():
                assert stat.S_ISFIFO(st.st_mode)
            want_x = {
                k[len("SCHILY.xattr.") :]: v.encode() for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")
            }
            if not m.issym():
                got_x = {n: os.getxattr(mnt / name, n) for n in os.listxattr(mnt / name)}
                if name != "opq":
                    assert got_x == want_x, name
        # whiteout: a 0:0 character device named after the removed entry, owned by root
        wh = os.lstat(mnt / "var/removed")
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and (wh.st_uid, wh.st_gid) == (0, 0)
        # opaque directory: both xattrs with opaque type "all"
        assert os.getxattr(mnt / "opq", "trusted.overlay.opaque") == b"y"
        assert os.getxattr(mnt / "opq", "user.overlay.opaque") == b"y"
        assert sorted(os.listdir(mnt / "opq")) == ["kept"]
        vfs = os.statvfs(mnt)
        assert vfs.f_bsize > 0 and vfs.f_namemax == 255
        state = json.loads((mnt / ".soci-snapshotter" / f"{_spec(path).digest}.json").read_text())
        assert state["fetchedPercent"] == 100.0 or state["fetchedSize"] > 0
        assert state["digest"] == _spec(path).digest and "error" not in state
        with pytest.raises(OSError) as exc:
            open(mnt / "etc/new", "w")  # noqa: SIM115
        assert exc.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert not is_mounted(mnt)


def test_reading_one_small_file_fetches_only_its_spans(layer_files, tmp_path):
    path, _raw = layer_files
    spec = _spec(path)
    z = Ztoc.from_bytes(spec.ztoc)
    entry = next(e for e in z.toc if e.name == "etc/secret")
    want = set(
        range(
            z.span_of(entry.tar_header_offset), z.span_of(entry.uncompressed_offset + entry.uncompressed_size - 1) + 1
        )
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mount_layer(spec, mnt, _quiet()) as m:
        assert (mnt / "etc/secret").read_bytes() == b"s3cr3t\n"
        state = m.state()
        work = Path(m._tmp)
        assert work.is_dir()
    assert not work.exists()  # the server's temporary directory goes with the mount; its events stay
    ev = m.events()
    fetches = ev[ev.kind == "span_fetch"]
    assert set(fetches.span.astype(int)) == want
    assert len(fetches) == len(want)  # one fetch per span, verification reads reused the cache
    comp = sum(z.compressed_range(s)[1] - z.compressed_range(s)[0] for s in want)
    assert int(fetches.bytes.sum()) == comp
    assert comp < z.compressed_archive_size / 10
    assert 0 < state["fetchedSize"] < z.uncompressed_archive_size / 5


def test_corrupted_span_reads_eio_never_wrong_bytes(layer_files, tmp_path):
    path, raw = layer_files
    spec = _spec(path)
    z = Ztoc.from_bytes(spec.ztoc)
    big = next(e for e in z.toc if e.name == "usr/lib/big.bin")
    bad_span = z.span_of(big.uncompressed_offset + big.uncompressed_size // 3)
    blob = bytearray(path.read_bytes())
    lo, hi = z.compressed_range(bad_span)
    blob[(lo + hi) // 2] ^= 0x40
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(blob))
    spec.blob_path = str(bad)  # same zTOC (made from the good blob), corrupted bytes on the "wire"
    cfg = Config()
    cfg.blob.max_span_verification_retries = 1
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    tf = tarfile.open(fileobj=io.BytesIO(raw))  # noqa: SIM115 - in memory
    with mount_layer(spec, mnt, _quiet(config=cfg)) as m:
        assert (mnt / "etc/os-release").read_bytes() == tf.extractfile("etc/os-release").read()
        with pytest.raises(OSError) as exc:
            (mnt / "usr/lib/big.bin").read_bytes()
        assert exc.value.errno == errno.EIO
        # the bytes before the bad span are served, and are right
        with open(mnt / "usr/lib/big.bin", "rb") as f:
            head = f.read(4096)
        assert head == tf.extractfile("usr/lib/big.bin").read(4096)
        assert "span digests do not match" in m.state()["error"] or "span" in m.state()["error"]
    ev = m.events()
    bad_verifies = ev[(ev.kind == "span_verify") & (~ev.ok)]
    assert set(bad_verifies.span.astype(int)) == {bad_span}
    assert len(bad_verifies) >= 2  # 1 retry configured: two attempts per read of the bad span


def test_killed_server_leaves_no_mount(layer_files, tmp_path):
    path, _raw = layer_files
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mount_layer(_spec(path), mnt, _quiet()) as m:
        assert (mnt / "etc/os-release").exists()
        os.kill(m.process.pid, signal.SIGKILL)
        m.process.wait(10)
        with pytest.raises(OSError) as exc:
            os.listdir(mnt / "usr/share/doc")  # never looked up: must ask the (dead) server
        assert exc.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        assert is_mounted(mnt)
    assert not is_mounted(mnt)
    assert m.process.poll() is not None


def test_overlay_of_two_lazy_layers_applies_whiteouts(tmp_path):
    """Two FUSE layers stacked by overlayfs: the upper's whiteout and opaque dir hide the lower's entries."""
    from tests.lazy.conftest import _add

    def layer(name: str, fill) -> Path:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            fill(tf)
        p = tmp_path / f"{name}.tar.gz"
        p.write_bytes(gzip.compress(buf.getvalue()))
        return p

    low = layer(
        "low",
        lambda tf: [
            _add(tf, "a/gone.txt", b"old\n", mode=0o644),
            _add(tf, "a/stays.txt", b"stays\n", mode=0o644),
            _add(tf, "o/hidden.txt", b"hidden\n", mode=0o644),
        ],
    )
    up = layer(
        "up",
        lambda tf: [
            _add(tf, "a/.wh.gone.txt", b"", mode=0o644),
            _add(tf, "o/.wh..wh..opq", b"", mode=0o644),
            _add(tf, "o/new.txt", b"new\n", mode=0o644),
        ],
    )
    mlow, mup, root = tmp_path / "mlow", tmp_path / "mup", tmp_path / "root"
    for d in (mlow, mup, root):
        d.mkdir()
    with mount_layer(_spec(low), mlow, _quiet()), mount_layer(_spec(up), mup, _quiet()):
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={mup}:{mlow}", str(root)], check=True)
        try:
            assert sorted(os.listdir(root / "a")) == ["stays.txt"]
            assert sorted(os.listdir(root / "o")) == ["new.txt"]
            assert (root / "a/stays.txt").read_text() == "stays\n"
        finally:
            subprocess.run(["umount", str(root)], check=True)
    assert not is_mounted(root) and not is_mounted(mlow) and not is_mounted(mup)


def test_mount_time_is_small(layer_files, tmp_path):
    path, _raw = layer_files
    spec = _spec(path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    t0 = time.monotonic()
    with mount_layer(spec, mnt, _quiet()) as m:
        ready = time.monotonic() - t0
        assert m.ready_s is not None and ready < 10


def test_prefetch_runs_before_ready_and_background_fetch_completes_the_layer(layer_files, tmp_path):
    from soci_lab.lazy.prefetch import lazy_policy

    path, _raw = layer_files
    spec = _spec(path)
    z = Ztoc.from_bytes(spec.ztoc)
    cfg = Config()
    cfg.background_fetch.silence_period_msec = 200
    policy = lazy_policy(cfg, {}, {"hermes.cloudpilot.ai/prefetch-profile": "startup-local-v1"})
    opts = ServeOptions(config=cfg, policy=policy, prefetch_ranges=[(0, 2, 0), (5, 6, 1)], fetch_period=0.01)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mount_layer(spec, mnt, opts) as m:
        first = m.state()
        deadline = time.monotonic() + 30
        while m.state()["fetchedPercent"] < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        last = m.state()
    ev = m.events()
    mount_t = float(ev[ev.kind == "mount"].t_end.iloc[0])
    pre = ev[ev.kind == "prefetch"]
    assert sorted(pre.span.astype(int)) == [0, 1, 2]  # the profile drops priority > 0 spans
    assert (pre.t_end <= mount_t).all()  # prefetch finished before the layer was mounted
    assert first["fetchedSize"] >= sum(z.uncompressed_range(i)[1] - z.uncompressed_range(i)[0] for i in range(3))
    assert last["fetchedPercent"] == 100.0  # the background fetcher walked the rest
    bg = ev[ev.kind == "span_fetch"]
    assert (bg.groupby("span").size() == 1).all()  # and fetched every span exactly once
    assert len(bg) == z.span_count


@pytest.mark.parametrize("cache_dir", [False, True])
def test_eviction_under_cache_pressure_serves_right_bytes(layer_files, tmp_path, cache_dir):
    """Caches far smaller than the layer: spans are evicted and fetched again, and every byte is right."""
    path, raw = layer_files
    spec = _spec(path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = _quiet(
        cache_dir=str(tmp_path / "cache") if cache_dir else None,
        uncompressed_cache_bytes=3 * SPAN,
        compressed_cache_bytes=2 * SPAN,
        hot_cache_bytes=SPAN,
        readahead_spans=0,
    )
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        truth = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile() and ".wh." not in m.name}
    with mount_layer(spec, mnt, opts) as m:
        for _round in range(2):
            for name, want in truth.items():
                with open(mnt / name, "rb", buffering=0) as f:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    got = f.read()
                assert got == want, name
    z = Ztoc.from_bytes(spec.ztoc)
    ev = m.events()
    fetches = ev[ev.kind == "span_fetch"]
    assert len(fetches) > z.span_count  # evicted spans really were fetched again
    assert (ev[ev.kind.isin(["span_verify", "span_decompress", "file_read"])].ok).all()


def test_async_prefetch_spans_are_fetched_after_the_mount_without_a_profile(layer_files, tmp_path):
    from soci_lab.lazy.prefetch import lazy_policy

    path, _raw = layer_files
    spec = _spec(path)
    cfg = Config()
    cfg.prefetch.enable = True
    opts = ServeOptions(
        config=cfg, policy=lazy_policy(cfg, {}), prefetch_ranges=[(0, 1, 0), (4, 5, 1)], background=False
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mount_layer(spec, mnt, opts) as m:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and m.state()["fetchedSize"] < 4 * SPAN:
            time.sleep(0.05)
    ev = m.events()
    mount_t = float(ev[ev.kind == "mount"].t_end.iloc[0])
    pre = ev[ev.kind == "prefetch"]
    assert sorted(pre.span.astype(int)) == [0, 1, 4, 5]
    assert (pre[pre.span.astype(int) < 2].t_end <= mount_t).all()  # sync spans: before the mount
    assert (pre[pre.span.astype(int) >= 4].t_start >= mount_t).all()  # async spans: after it
