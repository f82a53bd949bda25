"""copy_image / `soci-lab image copy` between OCI layouts and registries, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imgtools import soci_lab, tool

from soci_lab.errors import ContentNotFound
from soci_lab.images import build_image
from soci_lab.images.copy import copy_image
from soci_lab.images.verify import verify_image
from soci_lab.oci import Descriptor, Index, OCILayout, Platform
from soci_lab.oci import mediatypes as mt


def _small_tree(root: Path, text: str) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text(text * 5000)
    return root


def _index_layout(tmp_path: Path) -> tuple[Path, Index]:
    """A layout holding an image index of two platforms (same content, different configs)."""
    lay = tmp_path / "multi"
    src = _small_tree(tmp_path / "src", "multi-platform\n")
    entries = []
    for plat in (Platform("linux", "amd64"), Platform("linux", "arm64", "v8")):
        res = build_image([src], f"oci:{lay}:{plat.architecture}", platform=plat)
        entries.append(Descriptor(mt.OCI_MANIFEST, res.digest, len(res.manifest.to_bytes()), platform=plat))
    index = Index(mt.OCI_INDEX, tuple(entries))
    OCILayout(lay).put_document(index, "multi")
    return lay, index


def test_layout_to_registry_to_layout_keeps_every_digest(tmp_path, registry):
    src = _small_tree(tmp_path / "a", "one\n")
    built = build_image([src, _small_tree(tmp_path / "b", "two\n")], f"oci:{tmp_path / 'l1'}:v1")
    ref = registry.ref("copy/simple", "v1")
    up = copy_image(f"oci:{tmp_path / 'l1'}:v1", ref)
    assert up.digest == built.digest and up.blobs_copied == 3
    again = copy_image(f"oci:{tmp_path / 'l1'}:v1", ref)  # nothing travels twice
    assert again.blobs_copied == 0 and again.blobs_present == 3
    down = copy_image(ref, f"oci:{tmp_path / 'l2'}:back")
    assert down.digest == built.digest and down.bytes_copied == sum(la.descriptor.size for la in built.layers) + len(
        built.config.to_bytes()
    )
    assert verify_image(f"oci:{tmp_path / 'l2'}:back").digest == built.digest
    # skopeo sees the same image in the registry
    raw = tool("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    assert json.loads(raw)["config"]["digest"] == built.manifest.config.digest


def test_an_index_is_copied_whole_or_narrowed_to_one_platform(tmp_path, registry):
    lay, index = _index_layout(tmp_path)
    ref = registry.ref("copy/multi", "all")
    res = copy_image(f"oci:{lay}:multi", ref)
    assert res.digest == index.digest and len(res.manifests) == 2
    back = copy_image(ref, f"oci:{tmp_path / 'back'}:multi")
    assert back.digest == index.digest
    arm = verify_image(f"oci:{tmp_path / 'back'}:multi", platform=Platform("linux", "arm64"))
    assert arm.config.architecture == "arm64" and arm.index_descriptor.digest == index.digest
    one = soci_lab("image", "copy", "--json", "--platform", "linux/arm64", ref, f"oci:{tmp_path / 'one'}:arm")
    doc = json.loads(one.stdout)
    assert doc["digest"] == index.manifests[1].digest and doc["media_type"] == mt.OCI_MANIFEST


def test_registry_to_registry_across_hosts_and_within_one(tmp_path, embedded_registry, distribution_registry):
    src = _small_tree(tmp_path / "src", "travelling\n")
    first = embedded_registry.ref("copy/origin", "v1")
    built = build_image([src], first)
    other_host = distribution_registry.ref("copy/arrived", "v1")
    same_host = embedded_registry.ref("copy/mounted", "v1")
    assert copy_image(first, other_host).digest == built.digest
    assert copy_image(other_host, same_host).digest == built.digest
    mounted = copy_image(first, embedded_registry.ref("copy/mounted-again", "v1"))
    assert mounted.digest == built.digest and mounted.bytes_copied == 0  # cross-repository mounts
    for ref in (other_host, same_host):
        assert verify_image(ref).digest == built.digest


def test_missing_source_is_one_clear_error(tmp_path, registry):
    OCILayout(tmp_path / "empty")
    with pytest.raises(ContentNotFound):
        copy_image(f"oci:{tmp_path / 'empty'}:nope", registry.ref("copy/never", "v1"))
    proc = soci_lab("image", "copy", registry.ref("copy/absent", "v1"), f"oci:{tmp_path / 'x'}:t", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing made at the destination
    proc = soci_lab("image", "copy", "NOT A REF", f"oci:{tmp_path / 'x'}:t", check=False)
    assert proc.returncode == 2


def test_build_copy_and_verify_record_events(tmp_path, registry):
    src = _small_tree(tmp_path / "src", "evented\n")
    ref = registry.ref("copy/events", "v1")
    soci_lab("image", "build", "--events", str(tmp_path / "build.jsonl"), "--layer", str(src), ref)
    soci_lab("image", "verify", "--events", str(tmp_path / "verify.jsonl"), ref)
    soci_lab("image", "copy", "--events", str(tmp_path / "copy.jsonl"), ref, f"oci:{tmp_path / 'l'}:t")
    kinds = {}
    for name in ("build", "verify", "copy"):
        rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        kinds[name] = {r["kind"] for r in rows}
        assert all(r["ok"] for r in rows if r["kind"] != "http_request")
    assert {"push", "http_request"} <= kinds["build"]
    assert {"verify", "http_request"} <= kinds["verify"]
    assert "http_request" in kinds["copy"]
