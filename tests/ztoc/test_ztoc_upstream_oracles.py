"""soci_lab against the implementations upstream itself uses.

* TOC vs Go's ``archive/tar``: ``go_tar_oracle/main.go`` (standard library only, built offline) reads a
  layer through a byte-position counter as upstream's ``metadataFromTarReader`` does and prints each entry's
  TOC fields and the uncompressed archive size; compared with :class:`soci_lab.ztoc.toc.TarScanner` on
  generated trees, GNU tar archives in every format and odd endings. Skipped without ``go``.
* whole zTOC bytes against an independent builder that reads only the layer: ``test_ztoc_go_oracle.py``.
* gzip zinfo blob vs upstream's C ``gzip_zinfo.c`` (``c_zinfo_oracle``; opt-in: ``SOCI_LAB_UPSTREAM_ZINFO_C``
  names upstream's ``ztoc/compression`` directory; its code is compiled in at test time, never kept here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, Entry, gzip_members, trees, write_tar

from soci_lab.errors import SociLabError
from soci_lab.ztoc import Ztoc, build_ztoc

ORACLE_SRC = Path(__file__).parent / "go_tar_oracle"
needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="needs a Go toolchain (Debian golang-go)")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("go") / "oracle"
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "cache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "0"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=ORACLE_SRC, env=env, check=True, capture_output=True)
    return out


def go_toc(oracle: Path, blob: bytes, gz: bool = False) -> dict:
    args = [str(oracle)] + (["-gzip"] if gz else [])
    res = subprocess.run(args, input=blob, capture_output=True, check=True, env={"TZ": "UTC"})
    return json.loads(res.stdout)


def ours(blob: bytes, compression: str) -> dict:
    try:
        z = build_ztoc(blob, compression=compression, span_size=SPAN)
    except SociLabError as exc:
        return {"error": str(exc)}
    return {
        "uas": z.uncompressed_archive_size,
        "entries": [
            {"name": e.name, "type": e.type, "offset": e.uncompressed_offset, "size": e.uncompressed_size,
             "linkname": e.linkname, "mode": e.mode, "uid": e.uid, "gid": e.gid, "uname": e.uname,
             "gname": e.gname, "mod_time": e.mod_time, "devmajor": e.devmajor, "devminor": e.devminor,
             "pax": e.pax_headers}
            for e in z.toc
        ],
    }


def assert_same(go: dict, py: dict) -> None:
    if "error" in go or "error" in py:
        assert ("error" in go) == ("error" in py), (go.get("error"), py.get("error"))
        return
    assert py["uas"] == go["uas"]
    assert len(py["entries"]) == len(go["entries"])
    for a, b in zip(py["entries"], go["entries"], strict=True):
        assert a == b


@needs_go
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=trees(max_entries=10), fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
       ending=st.sampled_from(["full", "none", "one", "extra"]), cuts=st.lists(st.integers(0, 10**6), max_size=2))
def test_toc_matches_go_archive_tar(oracle: Path, entries: list[Entry], fmt: int, ending: str, cuts) -> None:
    raw = write_tar(entries, fmt)
    end = len(raw) - len(raw.rstrip(b"\0"))  # zero bytes at the end (end blocks + record padding)
    body = raw[: len(raw) - end] if end else raw
    body += bytes(-len(body) % 512)
    tail = {"full": raw[len(body):], "none": b"", "one": bytes(512), "extra": bytes(1024 + 512 * 7)}[ending]
    tar_bytes = body + tail
    assert_same(go_toc(oracle, tar_bytes), ours(tar_bytes, "uncompressed"))
    gz = gzip_members(tar_bytes, cuts, 6)  # Go's gzip reader is multistream, like ours
    assert_same(go_toc(oracle, gz, gz=True), ours(gz, "gzip"))


@needs_go
@pytest.mark.skipif(shutil.which("tar") is None, reason="no GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "posix", "ustar", "v7"])
def test_gnu_tar_archives_match_go(oracle: Path, tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "root"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "file.txt").write_bytes(b"hello\n" * 1000)
    (root / "empty").write_bytes(b"")
    (root / "dir" / "sub" / "big.bin").write_bytes(os.urandom(3 * SPAN + 17))
    (root / "link").symlink_to("dir/file.txt")
    os.link(root / "dir" / "file.txt", root / "hard")
    long = "l" * (95 if fmt in ("ustar", "v7") else 180)
    (root / long).write_bytes(b"long name")
    os.utime(root / "empty", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    if fmt != "v7":  # v7 has no fifo type
        os.mkfifo(root / "fifo")
    out = tmp_path / "l.tar"
    res = subprocess.run(["tar", f"--format={fmt}", "-C", str(root), "-cf", str(out), "."], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"tar --format={fmt} failed: {res.stderr[:200]!r}")
    blob = out.read_bytes()
    go = go_toc(oracle, blob)
    py = ours(blob, "uncompressed")
    assert "error" not in go, go
    assert_same(go, py)


@needs_go
def test_odd_headers_match_go(oracle: Path) -> None:
    """Base-256 numbers, a PAX header with odd records, a GNU long link, trailing garbage after EOF."""
    import io

    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("big-uid")
        ti.uid, ti.gid, ti.mtime = 2**40, 2**33, 2**38  # year > 9999: Go's MarshalText fails → ""
        tf.addfile(ti, io.BytesIO(b""))
        ln = tarfile.TarInfo("s")
        ln.type, ln.linkname = tarfile.SYMTYPE, "t" * 300
        tf.addfile(ln)
    raw = bio.getvalue()
    assert_same(go_toc(oracle, raw), ours(raw, "uncompressed"))
    z = Ztoc.from_bytes(build_ztoc(raw, compression="uncompressed", span_size=SPAN).to_bytes())
    assert z.toc[0].uid == 2**40 & 0xFFFFFFFF and z.toc[0].gid == 2**33 & 0xFFFFFFFF  # uint32(...) as upstream
    assert z.toc[0].mod_time == "" and z.toc[0].mod_time_ns() == -62135596800 * 10**9
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("p")
        ti.pax_headers = {"uname": "", "comment": "a b=c\nd", "mtime": "-1.5", "SCHILY.xattr.user.é": "v"}
        tf.addfile(ti, io.BytesIO(b""))
    raw = bio.getvalue()
    assert_same(go_toc(oracle, raw), ours(raw, "uncompressed"))
    body = write_tar([Entry("a", "reg", data=b"x")])
    garbage = body.rstrip(b"\0") + bytes(-len(body.rstrip(b"\0")) % 512) + bytes(512) + b"junk" + bytes(508)
    assert_same(go_toc(oracle, garbage), ours(garbage, "uncompressed"))


# --- gzip checkpoints against upstream's C zinfo ---------------------------------------------------


@pytest.fixture(scope="module")
def c_zinfo_oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compile ``c_zinfo_oracle/main.c`` with upstream's ``gzip_zinfo.c``/``.h`` from the directory named by
    ``SOCI_LAB_UPSTREAM_ZINFO_C`` (a checkout's ``ztoc/compression``); skipped when unset."""
    src = os.environ.get("SOCI_LAB_UPSTREAM_ZINFO_C")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not src or cc is None:
        pytest.skip("set SOCI_LAB_UPSTREAM_ZINFO_C to upstream's ztoc/compression directory (needs cc and zlib)")
    out = tmp_path_factory.mktemp("czinfo") / "oracle"
    subprocess.run([cc, "-O2", "-I", src, "-o", str(out), str(Path(__file__).parent / "c_zinfo_oracle" / "main.c"),
                    str(Path(src) / "gzip_zinfo.c"), "-lz"], check=True, capture_output=True)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=trees(), level=st.sampled_from([0, 1, 6, 9]), span=st.sampled_from([16384, SPAN, 200_000]),
       pad=st.sampled_from([0, 10240, 3 * SPAN]), cuts=st.lists(st.integers(0, 10**6), max_size=2),
       junk=st.booleans())
def test_gzip_zinfo_equals_upstream_c(c_zinfo_oracle: Path, tmp_path_factory, entries, level, span, pad, cuts,
                                      junk) -> None:
    """The zinfo blob is byte-identical to upstream's C builder's: one or several members (an empty first
    one included), record padding after the tar, a junk member after it."""
    import io

    from soci_lab.ztoc.gzip_zinfo import scan_gzip

    blob = gzip_members(write_tar(entries) + bytes(pad), cuts, level)
    if junk:
        blob += gzip_members(os.urandom(2 * SPAN), [], 1)
    path = tmp_path_factory.mktemp("l") / "l.gz"
    path.write_bytes(blob)
    upstream = subprocess.run([str(c_zinfo_oracle), str(path), str(span)], capture_output=True, check=True).stdout
    assert scan_gzip(io.BytesIO(blob), span).zinfo.to_bytes() == upstream
    assert build_ztoc(blob, span_size=span).checkpoints == upstream


def test_empty_first_member_matches_upstream_c(c_zinfo_oracle: Path, tmp_path: Path) -> None:
    """An empty first member: zran's ``totout == 0`` rule gives two checkpoints at ``out = 0``, here too."""
    raw = write_tar([Entry("f", "reg", data=os.urandom(3 * SPAN))])
    blob = gzip_members(raw, [0], 6)
    path = tmp_path / "l.gz"
    path.write_bytes(blob)
    upstream = subprocess.run([str(c_zinfo_oracle), str(path), str(SPAN)], capture_output=True, check=True).stdout
    z = build_ztoc(blob, span_size=SPAN)
    assert z.checkpoints == upstream
    assert z.zinfo.checkpoints[0].out == z.zinfo.checkpoints[1].out == 0
