"""Interop with tools nobody here wrote: skopeo pulls what soci-lab builds and umoci unpacks it into the
identical tree; an image umoci builds and skopeo pushes is read back by soci_lab with every digest checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imgtools import make_rich_tree, soci_lab, tool
from treecmp import assert_same_tree, diff_snapshots, snapshot

from soci_lab.errors import DigestMismatch
from soci_lab.images import build_image
from soci_lab.images.verify import verify_image
from soci_lab.oci import OCILayout


def _no_whiteouts(rel: str) -> bool:
    """Whiteout files are instructions to the unpacker, not files it creates."""
    return os.path.basename(rel).startswith(".wh.")


def _pull_and_unpack(src: str, work: Path, *, tls: bool = True, recompress: bool = False) -> Path:
    """``skopeo copy`` SRC into an OCI layout, then ``umoci raw unpack`` it; returns the rootfs."""
    args = ["skopeo", "copy", "--quiet"]
    if src.startswith("docker://"):
        args.append("--src-tls-verify=false")
    if recompress:  # umoci 0.4 cannot read zstd layers: let skopeo (Go's zstd) decode them
        args += ["--dest-compress", "--dest-compress-format", "gzip"]
    tool(*args, src, f"oci:{work / 'pulled'}:t")
    rootfs = work / "rootfs"
    tool("umoci", "raw", "unpack", "--image", f"{work / 'pulled'}:t", str(rootfs))
    return rootfs


def test_umoci_unpacks_a_layout_build_into_the_identical_tree(tmp_path, rich_tree):
    digest = soci_lab("image", "build", "--layer", str(rich_tree), f"oci:{tmp_path / 'lay'}:v1").stdout.strip()
    tool("umoci", "raw", "unpack", "--image", f"{tmp_path / 'lay'}:v1", str(tmp_path / "rootfs"))
    assert_same_tree(rich_tree, tmp_path / "rootfs", exclude=_no_whiteouts)
    assert verify_image(f"oci:{tmp_path / 'lay'}:v1").digest == digest


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pushed_build_is_pulled_by_skopeo_and_unpacked_by_umoci(tmp_path, rich_tree, registry, compression):
    ref = registry.ref("interop/rich", compression)
    out = soci_lab("image", "build", "--json", "--compression", compression, "--span-size", "1MiB",
                   "--layer", str(rich_tree), ref)  # fmt: skip
    built = json.loads(out.stdout)
    rootfs = _pull_and_unpack(f"docker://{ref}", tmp_path, recompress=compression == "zstd")
    assert_same_tree(rich_tree, rootfs, exclude=_no_whiteouts)
    # skopeo kept our manifest byte for byte when it did not have to recompress
    if compression == "gzip":
        pulled = OCILayout(tmp_path / "pulled", create=False)
        assert pulled.resolve("t").digest == built["digest"]
    assert verify_image(ref).digest == built["digest"]


def test_whiteouts_and_opaque_directories_apply_in_umoci(tmp_path, registry):
    lower = make_rich_tree(tmp_path / "lower")
    upper = tmp_path / "upper"
    (upper / "files").mkdir(parents=True)
    (upper / "files" / ".wh.text").write_bytes(b"")  # delete one file
    (upper / "links" / ".wh..wh..opq").parent.mkdir()
    (upper / "links" / ".wh..wh..opq").write_bytes(b"")  # empty a directory...
    (upper / "links" / "fresh").write_text("only this")  # ...and put one new file in it
    (upper / ".wh.special").write_bytes(b"")  # delete a whole directory
    ref = registry.ref("interop/layers", "v1")
    build_image([lower, upper], ref)
    rootfs = _pull_and_unpack(f"docker://{ref}", tmp_path)
    expected = {
        rel: e
        for rel, e in snapshot(lower).items()
        if rel != "files/text" and not rel.startswith(("links/", "special")) and not _no_whiteouts(rel)
    }
    got = snapshot(rootfs)
    assert got["links/fresh"].kind == "file" and {r for r in got if r.startswith("links/")} == {"links/fresh"}
    del got["links/fresh"]
    got = {rel: e for rel, e in got.items() if rel not in ("links",)}
    expected.pop("links", None)
    # directories touched by the upper layer take its mtime: compare times of everything else
    assert diff_snapshots(expected, got, mtime_kinds=("file", "symlink", "fifo", "chr", "blk")) == []


def test_sample_image_round_trips_through_skopeo_and_umoci_and_its_workload_runs(tmp_path, registry):
    from soci_lab.images.sample import LAYER_NAMES, SAMPLE_CMD

    ref = registry.ref("interop/sample", "v1")
    out = soci_lab("image", "sample", "--json", "--scale", "0.03", "--build", ref, str(tmp_path / "sample"))
    doc = json.loads(out.stdout)
    dirs = [Path(d) for d in doc["layers"]]
    assert [d.name for d in dirs] == list(LAYER_NAMES) and len(doc["image"]["layers"]) == 5
    rootfs = _pull_and_unpack(f"docker://{ref}", tmp_path)
    # the workload runs in the unpacked tree and checks the whiteouts itself
    run = subprocess.run(["chroot", str(rootfs), *SAMPLE_CMD], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "ok", run.stderr
    assert verify_image(ref).config.config["Cmd"] == list(SAMPLE_CMD)
    assert not (rootfs / "etc" / "motd").exists()  # whited out
    assert sorted(os.listdir(rootfs / "etc" / "legacy")) == ["new.conf"]  # opaque
    assert not (rootfs / "opt" / "data" / "extra").exists()  # directory whited out
    assert (rootfs / "opt" / "data" / "model.bin").stat().st_size > 0
    assert json.loads((rootfs / "app" / "config" / "app.json").read_text())["version"] == 2
    assert (rootfs / "app" / "bin" / "tool").stat().st_ino == (rootfs / "app" / "bin" / "tool-alias").stat().st_ino
    # the layers nobody above them touches come out exactly as they went in
    assert_same_tree(dirs[1], rootfs, exclude=lambda rel: not rel.startswith("usr/lib/sample-libs"))
    assert_same_tree(dirs[3], rootfs, exclude=lambda rel: not rel.startswith("app/") or rel.startswith("app/config"))


def _umoci_image(tmp_path: Path) -> tuple[Path, str]:
    """An image made by umoci alone: init, new, unpack, add a rich tree, repack, then a second layer."""
    lay = tmp_path / "umoci-layout"
    tool("umoci", "init", "--layout", str(lay))
    tool("umoci", "new", "--image", f"{lay}:v1")
    bundle = tmp_path / "bundle"
    tool("umoci", "unpack", "--image", f"{lay}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    src = make_rich_tree(tmp_path / "rich")
    for item in src.iterdir():
        if item.name != "wh":
            shutil.move(str(item), rootfs / item.name)
    tool("umoci", "repack", "--image", f"{lay}:v1", str(bundle))
    # and a layer added with raw add-layer from a tar made by GNU tar
    extra = tmp_path / "extra"
    (extra / "added").mkdir(parents=True)
    (extra / "added" / "by-gnu-tar").write_text("gnu\n" * 1000)
    tool("tar", "-C", str(extra), "-cf", str(tmp_path / "extra.tar"), "added")
    tool("umoci", "raw", "add-layer", "--image", f"{lay}:v1", str(tmp_path / "extra.tar"))
    top = json.loads((lay / "index.json").read_text())["manifests"]
    digest = next(m["digest"] for m in top if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "v1")
    return lay, digest


def test_umoci_built_image_pushed_by_skopeo_is_verified_by_soci_lab(tmp_path, registry):
    lay, digest = _umoci_image(tmp_path)
    verified = verify_image(f"oci:{lay}:v1")  # the layout as umoci wrote it
    assert verified.digest == digest and len(verified.layers) >= 2
    ref = registry.ref("interop/umoci", "v1")
    tool("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{lay}:v1", f"docker://{ref}")
    remote = verify_image(ref)
    assert remote.digest == digest
    assert [la.diff_id for la in remote.layers] == list(verified.config.diff_ids)
    assert [la.descriptor.digest for la in remote.layers] == [d.digest for d in verified.manifest.layers]
    # and soci_lab can copy it back out through the CLI, byte for byte
    out = soci_lab("image", "copy", ref, f"oci:{tmp_path / 'copied'}:v1")
    assert out.stdout.strip() == digest
    assert verify_image(f"oci:{tmp_path / 'copied'}:v1").digest == digest


def test_a_corrupted_layer_is_caught(tmp_path, rich_tree):
    res = build_image([rich_tree], f"oci:{tmp_path / 'lay'}:v1")
    blob = OCILayout(tmp_path / "lay").blob_path(res.layers[0].descriptor.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        verify_image(f"oci:{tmp_path / 'lay'}:v1")
    proc = soci_lab("image", "verify", f"oci:{tmp_path / 'lay'}:v1", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
