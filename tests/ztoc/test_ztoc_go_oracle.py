"""zTOC bytes against an independent builder that sees only the layer bytes (``go_ztoc_oracle``).

The oracle (``go_ztoc_oracle/``, built offline with Debian's ``golang-go``, ``g++``, ``zlib1g-dev`` and
``libflatbuffers-dev``; ``scripts/setup.sh`` installs them) computes every field itself: the TOC with Go's
``archive/tar`` and ``compress/gzip`` (what upstream's ``metadataFromTarReader`` reads with), the gzip
checkpoints with its own zran loop over system zlib (``points.c``), span digests with Go's ``crypto/sha256``,
fixed tar spans and the nested ``TarZinfo``, and lays the FlatBuffer out with Debian's C++ FlatBuffers
builder in the call order of upstream's ``ztocToFlatbuffer``. Nothing soci_lab computed is passed to it.

What it is not: upstream's own Go code. Debian packages neither soci-snapshotter nor the Go FlatBuffers
runtime, no Go module proxy is reachable, and the project commits no other project's code; so the call
order and the checkpoint rule are transcribed from upstream (docs/formats.md), and the C++ builder stands in
for the Go one (same algorithm: back to front, defaults left out, vtables shared; the one behavioural
difference — Go's vtable sharing ignores the table's object size — cannot show on these tables, none of
which starts with alignment padding). Upstream's own C zinfo builder is compared in
``test_ztoc_upstream_oracles.py`` when its sources are given (``SOCI_LAB_UPSTREAM_ZINFO_C``).

In CI (``CI`` set) a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ztoc_trees import SPAN, Entry, gzip_bytes, gzip_members, layers, trees, write_tar

from soci_lab.errors import SociLabError
from soci_lab.ztoc import Ztoc, build_ztoc

ORACLE_SRC = Path(__file__).parent / "go_ztoc_oracle"
_NEEDS = {"go": "golang-go", "g++": "g++"}
_HEADERS = {"/usr/include/zlib.h": "zlib1g-dev", "/usr/include/flatbuffers/flatbuffers.h": "libflatbuffers-dev"}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [pkg for tool, pkg in _NEEDS.items() if shutil.which(tool) is None]
    missing += [pkg for path, pkg in _HEADERS.items() if not Path(path).exists()]
    if missing:
        msg = f"go_ztoc_oracle needs Debian packages {', '.join(missing)} (scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    out = tmp_path_factory.mktemp("goztoc") / "oracle"
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "cache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "1"}
    res = subprocess.run(["go", "build", "-o", str(out), "."], cwd=ORACLE_SRC, env=env, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    return out


def oracle_ztoc(oracle: Path, tmp: Path, blob: bytes, algo: str, span: int = SPAN) -> bytes | None:
    """The oracle's zTOC, or None when it refuses the layer."""
    path = tmp / "layer"
    path.write_bytes(blob)
    res = subprocess.run([str(oracle), "-span", str(span), "-algo", algo, str(path)], capture_output=True,
                         env={"TZ": "UTC", "PATH": os.environ.get("PATH", "")})
    return res.stdout if res.returncode == 0 else None


def assert_identical(oracle: Path, tmp: Path, blob: bytes, algo: str, span: int = SPAN) -> Ztoc | None:
    """Both refuse the layer, or both write the same bytes (and every file reads back)."""
    theirs = oracle_ztoc(oracle, tmp, blob, algo, span)
    try:
        z = build_ztoc(blob, compression=algo, span_size=span)
    except SociLabError:
        assert theirs is None, "the oracle indexes a layer soci_lab refuses"
        return None
    assert theirs is not None, "soci_lab indexes a layer the oracle refuses"
    ours = z.to_bytes()
    assert len(ours) == len(theirs)
    assert ours == theirs
    return Ztoc.from_bytes(ours)


def _all_members(blob: bytes) -> bytes:
    out, rest = [], blob
    while rest:
        d = zlib.decompressobj(47)
        out.append(d.decompress(rest))
        rest = d.unused_data
    return b"".join(out)


def _check_files(z: Ztoc, blob: bytes, algo: str) -> None:
    raw = _all_members(blob) if algo == "gzip" else blob
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        want = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}
    got = {e.name: z.read_file(e, lambda a, b: blob[a:b]) for e in z.toc if e.type == "reg"}
    for name, data in want.items():
        assert got.get(name.rstrip("/")) == data or got.get(name) == data


# --- generated layers ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(layer=layers(), pad=st.sampled_from([0, 0, 10240, 3 * SPAN]), junk=st.booleans(),
       span=st.sampled_from([SPAN, 16384, 200_000]))
def test_generated_layers_are_byte_identical(oracle: Path, tmp_path: Path, layer, pad: int, junk: bool,
                                             span: int) -> None:
    """gzip levels 0/1/6/9, several members (an empty first one included), uncompressed; record padding
    after the tar; a junk member after it; hardlinks, devices, fifos, xattrs, long and UTF-8 names."""
    kind, blob, raw, _entries = layer
    if kind == "zstd":  # upstream does not index zstd layers
        return
    algo = "uncompressed" if kind == "uncompressed" else "gzip"
    if pad or junk:
        level = 6 if algo == "uncompressed" else int(kind[-1])
        if algo == "gzip":
            blob = gzip_bytes(raw + bytes(pad), level) + (gzip_bytes(os.urandom(2 * SPAN), 1) if junk else b"")
        else:
            blob = raw + bytes(pad)
    z = assert_identical(oracle, tmp_path, blob, algo, span)
    if z is not None and not junk:
        _check_files(z, blob, algo)


@pytest.mark.parametrize("level", [1, 6, 9])
@pytest.mark.parametrize("block", ["128", "32"])
def test_pigz_layers_are_byte_identical(oracle: Path, tmp_path: Path, level: int, block: str) -> None:
    """pigz: independent deflate blocks joined by empty stored blocks (sync flushes), several threads."""
    if shutil.which("pigz") is None:
        pytest.skip("no pigz")
    entries = [Entry("d/", "dir"), Entry("d/rand", "reg", data=os.urandom(5 * SPAN + 7)),
               Entry("d/text", "reg", data=b"some text, repeated " * 20000), Entry("d/empty", "reg")]
    raw = write_tar(entries)
    blob = subprocess.run(["pigz", f"-{level}", "-b", block, "-p", "2", "-c"], input=raw, capture_output=True,
                          check=True).stdout
    z = assert_identical(oracle, tmp_path, blob, "gzip")
    assert z is not None
    _check_files(z, blob, "gzip")


def _raw_deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("flags", ["fname", "fextra", "fcomment", "all", "full_flush"])
def test_unusual_gzip_headers_are_byte_identical(oracle: Path, tmp_path: Path, flags: str) -> None:
    raw = write_tar([Entry("f", "reg", data=os.urandom(3 * SPAN)), Entry("g", "reg", data=b"g" * 5000)])
    flg, extra = 0, b""
    if flags in ("fextra", "all"):
        flg |= 4
        extra += (6).to_bytes(2, "little") + b"AB\x02\x00hi"
    if flags in ("fname", "all"):
        flg |= 8
        extra += "layer-é.tar".encode() + b"\0"
    if flags in ("fcomment", "all"):
        flg |= 16
        extra += b"a comment\0"
    header = b"\x1f\x8b\x08" + bytes([flg]) + b"\0\0\0\0\0\xff" + extra
    if flags == "full_flush":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(raw[: len(raw) // 2]) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(raw[len(raw) // 2:])
        body += c.flush()
    else:
        body = _raw_deflate(raw)
    blob = header + body + (zlib.crc32(raw)).to_bytes(4, "little") + (len(raw) & 0xFFFFFFFF).to_bytes(4, "little")
    z = assert_identical(oracle, tmp_path, blob, "gzip")
    assert z is not None
    _check_files(z, blob, "gzip")


@pytest.mark.skipif(shutil.which("tar") is None, reason="no GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "posix", "ustar"])
@pytest.mark.parametrize("algo", ["gzip", "uncompressed"])
def test_gnu_tar_layers_are_byte_identical(oracle: Path, tmp_path: Path, fmt: str, algo: str) -> None:
    """GNU tar archives: hardlinks, symlinks, devices, a fifo, xattrs (posix), long and UTF-8 names."""
    root = tmp_path / "root"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "file.txt").write_bytes(b"hello\n" * 1000)
    (root / "dir" / "sub" / "big.bin").write_bytes(os.urandom(3 * SPAN + 17))
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("dir/file.txt")
    os.link(root / "dir" / "file.txt", root / "hard")
    (root / ("l" * (95 if fmt == "ustar" else 180))).write_bytes(b"long name")
    (root / "ünïcødé-名前.txt").write_bytes(b"utf-8 name")
    os.mkfifo(root / "fifo")
    with contextlib.suppress(PermissionError):  # devices need root
        os.mknod(root / "null", 0o20666, os.makedev(1, 3))
        os.mknod(root / "blk", 0o60600, os.makedev(7, 0))
    with contextlib.suppress(OSError):  # user xattrs need a filesystem that has them
        os.setxattr(root / "dir" / "file.txt", "user.comment", "<&> é".encode())
    os.utime(root / "empty", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    out = tmp_path / "l.tar"
    args = ["tar", f"--format={fmt}", "-C", str(root), "-cf", str(out), "."]
    if fmt == "posix":
        args.insert(1, "--xattrs")
    res = subprocess.run(args, capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"tar --format={fmt} failed: {res.stderr[:200]!r}")
    raw = out.read_bytes()
    blob = gzip_bytes(raw, 6) if algo == "gzip" else raw
    z = assert_identical(oracle, tmp_path, blob, algo)
    assert z is not None and len(z.toc) >= 10
    _check_files(z, blob, algo)


def test_empty_first_member_and_padding_are_byte_identical(oracle: Path, tmp_path: Path) -> None:
    """The cases upstream once differed on: an empty first member, level 0 with 10,240-byte record
    padding, an extra member after the tar."""
    raw = write_tar([Entry("big", "reg", data=os.urandom(4 * SPAN + 300)), Entry("s", "reg", data=b"s")])
    for blob in (gzip_members(raw, [0], 6), gzip_bytes(raw + bytes(10240), 0), gzip_bytes(raw + bytes(3 * SPAN), 0),
                 gzip_bytes(raw, 6) + gzip_bytes(os.urandom(3 * SPAN), 6)):
        assert assert_identical(oracle, tmp_path, blob, "gzip") is not None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(entries=trees(max_entries=6), fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
       span=st.sampled_from([512, 1000, 4096, SPAN]))
def test_uncompressed_layers_are_byte_identical(oracle: Path, tmp_path: Path, entries, fmt: int, span: int) -> None:
    """Uncompressed tars with small and unaligned span sizes (many fixed spans, the nested TarZinfo)."""
    raw = write_tar(entries, fmt)
    z = assert_identical(oracle, tmp_path, raw, "uncompressed", span)
    assert z is not None
    _check_files(z, raw, "uncompressed")
