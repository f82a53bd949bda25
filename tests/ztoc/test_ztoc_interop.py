"""Interop spot-checks: layers written by the gzip and pigz CLIs, and zTOC bytes checked with flatc."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from ztoc_trees import SPAN, Entry, write_tar

from soci_lab.events import EventRecorder
from soci_lab.ztoc import GzipZinfo, Ztoc, build_ztoc

FBS = Path(__file__).resolve().parents[2] / "soci_lab" / "ztoc" / "fbs"


@pytest.fixture(scope="module")
def tar_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rnd = random.Random(3)
    entries = [Entry(f"d{i}/f{i}", "reg", data=rnd.randbytes(rnd.randint(0, 3 * SPAN))) for i in range(12)]
    entries += [Entry("d0", "dir"), Entry("l", "sym", link="d0/f0"), Entry("h", "hard", link="d1/f1")]
    entries.append(Entry("text", "reg", data=b"some compressible text\n" * 20000))
    p = tmp_path_factory.mktemp("interop") / "layer.tar"
    p.write_bytes(write_tar(entries))
    return p


def check_layer(z: Ztoc, blob: bytes, raw: bytes) -> None:
    fetch = lambda a, b: blob[a:b]  # noqa: E731
    rnd = random.Random(len(blob))
    for _ in range(50):
        off = rnd.randint(0, z.uncompressed_archive_size)
        ln = rnd.choice([1, 4096, 100_000])
        assert z.read(off, ln, fetch) == raw[off : min(off + ln, z.uncompressed_archive_size)]
    for sp in z.spans():
        z.verify_span(sp.id, blob[sp.start_comp : sp.end_comp])


@pytest.mark.skipif(shutil.which("gzip") is None, reason="no gzip CLI")
def test_gzip_cli_with_fname_header(tar_file: Path, tmp_path: Path) -> None:
    """``gzip file`` stores the name: a 19-byte header for "layer.tar"; checkpoint 0 follows it."""
    src = tmp_path / "layer.tar"
    shutil.copy(tar_file, src)
    subprocess.run(["gzip", "-6", str(src)], check=True)
    gz = tmp_path / "layer.tar.gz"
    blob = gz.read_bytes()
    assert blob[3] & 0x08  # FNAME
    z = build_ztoc(gz, span_size=SPAN)  # from a path
    cp0 = GzipZinfo.from_bytes(z.checkpoints).checkpoints[0]
    assert (cp0.in_, cp0.out, cp0.bits) == (10 + len("layer.tar") + 1, 0, 0)
    assert z.compressed_range(0)[0] == 20
    check_layer(Ztoc.from_bytes(z.to_bytes()), blob, tar_file.read_bytes())


@pytest.mark.skipif(shutil.which("pigz") is None, reason="no pigz CLI")
@pytest.mark.parametrize("args", [["-6"], ["-1", "-i", "-b", "32"], ["-9", "-p", "2"]])
def test_pigz_layers(tar_file: Path, tmp_path: Path, args: list[str]) -> None:
    blob = subprocess.run(["pigz", "-c", *args, str(tar_file)], check=True, capture_output=True).stdout
    raw = tar_file.read_bytes()
    with open(tmp_path / "l.gz", "wb") as f:  # from a stream
        f.write(blob)
    with open(tmp_path / "l.gz", "rb") as f:
        z = build_ztoc(f, span_size=SPAN)
    check_layer(z, blob, raw)


@pytest.mark.skipif(shutil.which("pigz") is None, reason="no pigz CLI")
def test_pigz_multi_member(tar_file: Path) -> None:
    """Concatenated pigz members (as mgzip/pigz pipelines produce) are followed across member boundaries."""
    raw = tar_file.read_bytes()
    cuts = [0, len(raw) // 5, len(raw) // 2, len(raw) - 700, len(raw)]
    blob = b"".join(
        subprocess.run(["pigz", "-c", "-6"], input=raw[a:b], check=True, capture_output=True).stdout
        for a, b in itertools.pairwise(cuts)
    )
    z = build_ztoc(blob, span_size=SPAN)
    check_layer(z, blob, raw)
    assert z.span_count > 3


def test_build_emits_event(tar_file: Path) -> None:
    rec = EventRecorder(strategy="lazy")
    z = build_ztoc(tar_file, span_size=SPAN, recorder=rec, layer_digest="sha256:" + "0" * 64)
    assert z.compression_algorithm == "uncompressed"
    (ev,) = rec.events
    assert ev.kind == "ztoc_build" and ev.ok and ev.layer == "sha256:" + "0" * 64
    assert ev.bytes == tar_file.stat().st_size and ev.attrs["spans"] == z.span_count


@pytest.mark.skipif(shutil.which("flatc") is None, reason="no flatc (Debian flatbuffers-compiler)")
def test_flatc_reads_our_ztoc(tar_file: Path, tmp_path: Path) -> None:
    """flatc decodes our bytes with the checked-in schema; defaults are omitted as Go's builder does."""
    import gzip

    blob = gzip.compress(tar_file.read_bytes())
    z = build_ztoc(blob, span_size=SPAN)
    (tmp_path / "z.bin").write_bytes(z.to_bytes())
    subprocess.run(
        ["flatc", "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path), str(FBS / "ztoc.fbs"), "--",
         str(tmp_path / "z.bin")],
        check=True,
        capture_output=True,
    )
    d = json.loads((tmp_path / "z.json").read_text())
    assert d["version"] == "0.9" and d["build_tool_identifier"] == "AWS SOCI CLI v0.2"
    assert d["compressed_archive_size"] == len(blob)
    ci = d["compression_info"]
    assert "compression_algorithm" not in ci  # gzip is the default: omitted
    assert ci["max_span_id"] == z.max_span_id and ci["span_digests"] == z.span_digests
    assert bytes(ci["checkpoints"]) == bytes(z.checkpoints)
    md = d["toc"]["metadata"]
    assert [m["name"] for m in md] == [e.name for e in z.toc]
    assert all("uid" not in m for m in md if m["name"] == "l")  # uid 0 omitted
    assert [m["uncompressed_offset"] for m in md] == [e.uncompressed_offset for e in z.toc]


@pytest.mark.skipif(shutil.which("flatc") is None, reason="no flatc (Debian flatbuffers-compiler)")
def test_we_read_flatc_written_ztoc(tmp_path: Path) -> None:
    """A zTOC written by another FlatBuffers implementation (flatc from JSON) parses, incl. uncompressed."""
    doc = {
        "version": "0.9",
        "build_tool_identifier": "flatc",
        "compressed_archive_size": 3072,
        "uncompressed_archive_size": 3072,
        "toc": {"metadata": [
            {"name": "b", "type": "reg", "uncompressed_offset": 1536, "uncompressed_size": 3, "mode": 420,
             "mod_time": "2024-01-02T03:04:05.5Z", "xattrs": [{"key": "SCHILY.xattr.user.z", "value": "1"}]},
            {"name": "a/", "type": "dir", "uncompressed_offset": 512, "mode": 493, "uid": 7,
             "mod_time": "2024-01-02T03:04:05Z"},
        ]},
        "compression_info": {"compression_algorithm": "Uncompressed", "max_span_id": 0,
                             "span_digests": ["sha256:" + "a" * 64], "checkpoints": []},
    }
    from soci_lab.ztoc import TarZinfo

    doc["compression_info"]["checkpoints"] = list(TarZinfo(4096, 3072).to_bytes())
    (tmp_path / "z.json").write_text(json.dumps(doc))
    subprocess.run(["flatc", "-b", "-o", str(tmp_path), str(FBS / "ztoc.fbs"), str(tmp_path / "z.json")],
                   check=True, capture_output=True)
    z = Ztoc.from_bytes((tmp_path / "z.bin").read_bytes())
    assert [e.name for e in z.toc] == ["a/", "b"]  # sorted by offset on read
    assert [e.tar_header_offset for e in z.toc] == [0, 512]  # b: a 1024-byte header (PAX + ustar)
    assert z.toc[1].xattrs() == {"user.z": "1"} and z.toc[0].uid == 7
    assert z.compression_algorithm == "uncompressed" and z.span_size == 4096
    assert z.toc[1].mod_time_ns() == 1704164645_500_000_000


def test_gzip_header_verification(tar_file: Path, tmp_path: Path) -> None:
    """The bytes before span 0 are exactly one gzip header (upstream's VerifyHeader), FNAME included."""
    src = tmp_path / "layer.tar"
    shutil.copy(tar_file, src)
    subprocess.run(["gzip", "-6", str(src)], check=True)
    blob = (tmp_path / "layer.tar.gz").read_bytes()
    z = build_ztoc(blob, span_size=SPAN)
    a, b = z.header_range()
    z.verify_header(blob[a:b])
    from soci_lab.errors import FormatError

    for bad in (blob[: b - 1], blob[: b + 1], b"\x1f\x8c" + blob[2:b], b"\x1f\x8b\x08\xe0" + blob[4:b]):
        with pytest.raises(FormatError):
            z.verify_header(bad)
    for data in (b"", blob):  # tar and zstd layers: nothing to check
        build_ztoc(tar_file, span_size=SPAN).verify_header(data)
