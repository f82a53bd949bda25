"""build_image and `soci-lab image build`: determinism, compressions, config, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard
from imgtools import CLI_CODE, bound_unix_socket, make_rich_tree, soci_lab

from soci_lab.errors import LayerSourceError, UnreadableFile
from soci_lab.images import RuntimeConfig, build_image
from soci_lab.oci import ImageConfig, Manifest, OCILayout, Platform


def _digests(result) -> tuple[str, list[str], list[str]]:
    return (
        str(result.digest),
        [str(la.descriptor.digest) for la in result.layers],
        [str(la.diff_id) for la in result.layers],
    )


def _two_layers(tmp_path: Path) -> list[Path]:
    lower = make_rich_tree(tmp_path / "lower")
    upper = tmp_path / "upper"
    (upper / "files").mkdir(parents=True)
    (upper / "files" / "new").write_bytes(os.urandom(0) + b"upper layer\n" * 1000)
    (upper / "files" / ".wh.text").write_bytes(b"")
    os.utime(upper / "files" / "new", ns=(10**18, 10**18))
    os.utime(upper / "files" / ".wh.text", ns=(10**18, 10**18))
    os.utime(upper / "files", ns=(10**18, 10**18))
    return [lower, upper]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_same_tree_same_digests_even_after_atime_and_rewrites(tmp_path, compression):
    layers = _two_layers(tmp_path)
    first = build_image(layers, f"oci:{tmp_path / 'a'}:t", compression=compression)
    # touch atimes (reading every file), rewrite a file with the same bytes and restore its mtime
    for dirpath, _dirs, files in os.walk(layers[0]):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                p.read_bytes()
    text = layers[0] / "files" / "text"
    st = text.stat()
    text.write_bytes(text.read_bytes())
    os.utime(text, ns=(st.st_atime_ns + 12345, st.st_mtime_ns))
    os.utime(text.parent, ns=(text.parent.stat().st_atime_ns + 1, text.parent.stat().st_mtime_ns))
    second = build_image(layers, f"oci:{tmp_path / 'b'}:t", compression=compression, jobs=1)
    assert _digests(first) == _digests(second)
    # and the same tree made again somewhere else (other inode numbers, other parent path)
    elsewhere = tmp_path / "elsewhere"
    again = [make_rich_tree(elsewhere / "lower"), elsewhere / "upper"]
    shutil.copytree(layers[1], again[1], symlinks=True)
    for p in (again[1] / "files" / "new", again[1] / "files" / ".wh.text", again[1] / "files"):
        os.utime(p, ns=(10**18, 10**18))
    third = build_image(again, f"oci:{tmp_path / 'c'}:t", compression=compression)
    assert _digests(third) == _digests(first)


def test_layout_holds_a_consistent_verified_image(tmp_path, rich_tree):
    runtime = RuntimeConfig(cmd=["/bin/sh"], env=["A=1"], working_dir="/files")
    res = build_image([rich_tree], f"oci:{tmp_path / 'lay'}:v1", runtime=runtime)
    lay = OCILayout(tmp_path / "lay", create=False)
    desc = lay.resolve("v1")
    assert desc.digest == res.digest
    manifest = Manifest.from_bytes(lay.read_blob(desc.digest))
    config = ImageConfig.from_bytes(lay.read_blob(manifest.config.digest))
    layer = manifest.layers[0]
    blob = lay.read_blob(layer.digest)
    assert layer.size == len(blob) and layer.media_type.endswith("tar+gzip")
    assert config.diff_ids[0] == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert (config.os, config.architecture) == (Platform.host().os, Platform.host().architecture)
    assert config.config == {"Cmd": ["/bin/sh"], "Env": ["A=1"], "WorkingDir": "/files"}
    assert config.doc["created"] == "1970-01-01T00:00:00Z"
    assert config.history == [{"created": "1970-01-01T00:00:00Z", "created_by": "soci-lab image build --layer rich"}]
    # gzip header: no mtime, no file name
    assert blob[:2] == b"\x1f\x8b" and blob[3] & 0x08 == 0 and blob[4:8] == bytes(4)
    assert not list((tmp_path / "lay" / ".ingest").iterdir())  # staging cleaned up


def test_source_date_epoch_sets_created(tmp_path, monkeypatch, rich_tree):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    res = build_image([rich_tree], f"oci:{tmp_path}:t")
    assert res.config.doc["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in res.config.history} == {"2023-11-14T22:13:20Z"}


def test_zstd_layers_are_many_independent_frames(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rnd = hashlib.shake_256(b"seed").digest(3 << 20)
    (src / "data").write_bytes(rnd)
    res = build_image([src], f"oci:{tmp_path / 'lay'}:t", compression="zstd", span_size=256 << 10)
    layer = res.layers[0]
    blob = OCILayout(tmp_path / "lay").read_blob(layer.descriptor.digest)
    frames, raw, off = 0, b"", 0
    while off < len(blob):
        params = zstandard.get_frame_parameters(blob[off:])
        assert params.content_size in (256 << 10, layer.uncompressed_size % (256 << 10))
        dobj = zstandard.ZstdDecompressor().decompressobj()
        raw += dobj.decompress(blob[off:])
        off = len(blob) - len(dobj.unused_data)
        frames += 1
    assert frames == -(-layer.uncompressed_size // (256 << 10))
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.descriptor.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"


def test_gzip_levels_change_bytes_not_content(tmp_path, rich_tree):
    fast = build_image([rich_tree], f"oci:{tmp_path / 'a'}:t", gzip_level=1).layers[0]
    best = build_image([rich_tree], f"oci:{tmp_path / 'b'}:t", gzip_level=9).layers[0]
    assert fast.diff_id == best.diff_id and fast.descriptor.digest != best.descriptor.digest
    blob = OCILayout(tmp_path / "b").read_blob(best.descriptor.digest)
    assert hashlib.sha256(zlib.decompress(blob, 31)).hexdigest() == best.diff_id.hex


def test_cli_prints_the_digest_or_one_json_object(tmp_path, rich_tree):
    out = soci_lab("image", "build", "--layer", str(rich_tree), f"oci:{tmp_path / 'lay'}:x")
    digest = out.stdout.strip()
    assert OCILayout(tmp_path / "lay").resolve("x").digest == digest
    out = soci_lab(
        "image", "build", "--json", "--compression", "zstd", "--span-size", "1MiB",
        "--layer", str(rich_tree), "--layer", str(rich_tree), f"oci:{tmp_path / 'lay'}:y",
    )  # fmt: skip
    doc = json.loads(out.stdout)
    assert set(doc) >= {"digest", "config_digest", "layers"}
    assert [la["media_type"] for la in doc["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    assert doc["layers"][0]["digest"] == doc["layers"][1]["digest"]
    assert all(set(la) >= {"digest", "diff_id", "size", "media_type"} for la in doc["layers"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compression", "lz4"], "invalid choice"),
        (["--gzip-level", "12"], "0..9"),
        (["--span-size", "lots"], "not a size"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path, args, needle):
    proc = soci_lab("image", "build", *args, "--layer", str(tmp_path), f"oci:{tmp_path / 'l'}:t", check=False)
    assert proc.returncode == 2 and needle in proc.stderr and not proc.stdout


@pytest.mark.parametrize("ref", ["Bad/UPPER:tag", "localhost:5000/repo:bad tag!", "oci:", "oci:/x:ba:d@sha256:zz"])
def test_cli_bad_ref_exits_2(tmp_path, ref):
    proc = soci_lab("image", "build", "--layer", str(tmp_path), ref, check=False)
    assert proc.returncode == 2 and "REF" in proc.stderr and not proc.stdout


def test_missing_layer_dir_is_one_line_exit_1_and_commits_nothing(tmp_path):
    lay = tmp_path / "lay"
    proc = soci_lab("image", "build", "--layer", str(tmp_path / "missing"), f"oci:{lay}:t", check=False)
    assert proc.returncode == 1 and not proc.stdout
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not lay.exists() or OCILayout(lay).tags() == []
    with pytest.raises(LayerSourceError):
        build_image([], f"oci:{lay}:t")


def test_socket_is_skipped_with_a_warning(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep").write_text("k")
    with bound_unix_socket(src / "control.sock"):
        proc = soci_lab("image", "build", "--json", "--layer", str(src), f"oci:{tmp_path / 'lay'}:t")
    assert "warning: skipped" in proc.stderr and "control.sock" in proc.stderr
    assert json.loads(proc.stdout)["layers"][0]["skipped"] == ["control.sock"]


def test_unreadable_file_fails_cleanly_and_tags_nothing(tmp_path):
    """Root reads everything, so the build runs as root without any capability (``setpriv``): then a
    mode-000 file cannot be read, and the build must say so in one line, exit 1, and tag nothing."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("fine")
    (src / "locked").write_text("secret")
    os.chmod(src / "locked", 0)
    lay = tmp_path / "lay"
    nocaps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c"]
    proc = subprocess.run(
        [*nocaps, CLI_CODE, "image", "build", "--layer", str(src), f"oci:{lay}:t"], capture_output=True, text=True
    )
    assert proc.returncode == 1 and not proc.stdout, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot read" in proc.stderr and "locked" in proc.stderr, proc.stderr
    assert OCILayout(lay).tags() == [] and not list(OCILayout(lay).blobs())
    script = (
        "import sys\nfrom soci_lab.images import build_image\n"
        "try:\n    build_image([sys.argv[1]], sys.argv[2])\nexcept Exception as e:\n    print(type(e).__name__)"
    )
    proc = subprocess.run([*nocaps, script, str(src), f"oci:{lay}:u"], capture_output=True, text=True)
    assert proc.stdout.strip() == UnreadableFile.__name__, proc.stderr
