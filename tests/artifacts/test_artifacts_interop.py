"""After ``index create --format v2`` the image is still an ordinary, valid OCI image to tools nobody here
wrote: skopeo copies the SOCI-enabled index whole (``--all``) or picks the platform image, umoci unpacks
that, and ``verify_image`` checks every digest and diffID. The SOCI index survives the ``--all`` copy and is
found again in the copied OCI layout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from arttools import MIN_LAYER, SPAN, build_small_image, soci_lab, unique_repo

from soci_lab.artifacts import LayoutSource, create_soci_index, fetch_soci_artifacts
from soci_lab.config import Config
from soci_lab.images import verify_image
from soci_lab.oci import Index, OCILayout, Reference
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient
from soci_lab.ztoc.index import ANNOTATION_SOCI_INDEX_DIGEST, SOCI_INDEX_V2

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci are needed"
)


def tool(*args: str | Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-2000:]}"
    return proc.stdout


async def top_document(ref: str, digest: str) -> bytes:
    async with RegistryClient(ref) as rc:
        return (await rc.get_manifest(Reference.parse(ref).repository, digest)).data


def test_soci_enabled_image_is_copied_by_skopeo_unpacked_by_umoci_and_verified(registry, tmp_path):
    img = build_small_image(registry.ref(unique_repo(), "v1"), tmp_path)
    index_digest = soci_lab("index", "create", img.ref, "--span-size", str(SPAN), "--min-layer-size",
                            str(MIN_LAYER)).stdout.strip()
    verified = verify_image(img.ref)
    assert verified.index_descriptor is not None  # REF is an index now, and its image still checks out
    assert [str(layer.descriptor.digest) for layer in verified.layers] == [str(d.digest) for d in img.layers]
    top_digest = verified.index_descriptor.digest

    # --all: every entry of the SOCI-enabled index, the SOCI index and its zTOCs included. skopeo 1.9
    # re-serializes the index with an image-spec that predates ``artifactType`` and drops that field (so the
    # top digest changes); the annotations both ways survive, and they are what discovery uses.
    every = tmp_path / "all"
    tool("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--all", f"docker://{img.ref}", f"oci:{every}:v1")
    lay = OCILayout(every, create=False)
    ours = Index.from_bytes(anyio.run(top_document, img.ref, str(top_digest)))
    index = Index.from_bytes(lay.read_blob(lay.resolve("v1").digest))
    assert [(d.digest, d.platform, d.annotations) for d in index.manifests] == [
        (d.digest, d.platform, d.annotations) for d in ours.manifests
    ]
    [soci_entry] = [d for d in ours.manifests if d.artifact_type == SOCI_INDEX_V2]
    assert str(soci_entry.digest) == index_digest and lay.has(soci_entry.digest)
    desc = index.manifests[0]  # the image entry comes first, the SOCI index is appended after it
    assert desc.annotations[ANNOTATION_SOCI_INDEX_DIGEST] == index_digest
    arts = anyio.run(lambda: fetch_soci_artifacts(LayoutSource(lay), Reference.parse(f"oci:{every}:v1"), desc,
                                                  config=Config(), local_store=OCILayout(tmp_path / "store")))
    assert str(arts.digest) == index_digest and arts.found_via == "v2"
    assert set(arts.ztocs) == {str(img.big.digest), str(img.mid.digest)}
    assert verify_image(f"oci:{every}:v1").digest == verified.digest
    # converting the copy again recognises the stripped entry as a SOCI index: it is replaced, not kept
    # beside the new one, and the same zTOCs give the same SOCI index
    again = create_soci_index(f"oci:{every}:v1", span_size=SPAN, min_layer_size=MIN_LAYER)
    assert str(again.digest) == index_digest and again.annotated_manifest.digest == verified.digest
    rewritten = Index.from_bytes(lay.read_blob(lay.resolve("v1").digest))
    assert [d.digest for d in rewritten.manifests] == [verified.digest, again.digest]

    # without --all skopeo picks this platform's image manifest (the rewritten one), and umoci unpacks it
    one = tmp_path / "one"
    tool("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{img.ref}", f"oci:{one}:v1")
    picked = OCILayout(one, create=False).resolve("v1")
    assert picked.media_type == mt.OCI_MANIFEST and picked.digest == verified.digest
    rootfs = tmp_path / "rootfs"
    tool("umoci", "raw", "unpack", "--image", f"{one}:v1", rootfs)
    for files in img.files.values():
        for rel, data in files.items():
            assert (rootfs / rel).read_bytes() == data, rel
