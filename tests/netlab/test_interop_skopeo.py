"""Interop with tools nobody here wrote: skopeo pushes a umoci-built OCI image into the embedded registry
and pulls it back byte-identically (also through the shaping proxy, and with token auth)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from netlab_helpers import random_bytes

from soci_lab.netlab import EmbeddedRegistry, RegistryAuth, ShapingProxy
from soci_lab.oci import Digest, OCILayout

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci are needed"
)


def run(*cmd: str | Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def umoci_image(tmp_path_factory) -> Path:
    """An OCI layout ``DIR:v1`` built by umoci: two layers, a few hundred KB of incompressible data."""
    work = tmp_path_factory.mktemp("umoci")
    layout = work / "img"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:v1")
    bundle = work / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:v1", bundle)
    (bundle / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "etc" / "hello").write_text("hello from umoci\n")
    run("umoci", "repack", "--image", f"{layout}:v1", bundle)
    shutil.rmtree(bundle)
    run("umoci", "unpack", "--image", f"{layout}:v1", bundle)
    (bundle / "rootfs" / "data.bin").write_bytes(random_bytes(400_000, 21))
    run("umoci", "repack", "--image", f"{layout}:v1", bundle)
    return layout


def manifest_digest(layout: Path, tag: str) -> Digest:
    return OCILayout(layout, create=False).resolve(tag).digest


def assert_same_image(a: Path, b: Path, tag: str) -> None:
    """Same manifest digest, and every blob it reaches byte-identical."""
    da, db = manifest_digest(a, tag), manifest_digest(b, tag)
    assert da == db
    la, lb = OCILayout(a, create=False), OCILayout(b, create=False)
    manifest = json.loads(la.read_blob(da))
    digests = [da, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    assert len(manifest["layers"]) >= 2
    for d in digests:
        assert lb.blob_path(d).read_bytes() == la.blob_path(d).read_bytes()
        assert lb.read_blob(d, verify=True)


def skopeo_copy(src: str, dst: str, *extra: str) -> None:
    run("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, src, dst)


def test_skopeo_push_and_pull_roundtrip(umoci_image, tmp_path):
    with EmbeddedRegistry(root=tmp_path / "reg") as reg:
        skopeo_copy(f"oci:{umoci_image}:v1", f"docker://{reg.host_port}/interop/app:v1")
        # what the registry stored is itself an OCI layout holding the same image
        assert_same_image(umoci_image, tmp_path / "reg" / "interop" / "app", "v1")
        tags = json.loads(run("skopeo", "list-tags", "--tls-verify=false", f"docker://{reg.host_port}/interop/app"))
        assert tags["Tags"] == ["v1"]
        skopeo_copy(f"docker://{reg.host_port}/interop/app:v1", f"oci:{tmp_path / 'back'}:v1")
    assert_same_image(umoci_image, tmp_path / "back", "v1")


def test_skopeo_through_the_proxy_with_token_auth(umoci_image, tmp_path):
    auth = RegistryAuth(users={"skopeo": "pw"})
    with EmbeddedRegistry(root=tmp_path / "reg", auth=auth) as reg, ShapingProxy(reg.url, latency="5ms") as proxy:
        host = proxy.url.removeprefix("http://")
        creds = ("--dest-creds", "skopeo:pw")
        skopeo_copy(f"oci:{umoci_image}:v1", f"docker://{host}/auth/app:v1", *creds)
        skopeo_copy(f"docker://{host}/auth/app:v1", f"oci:{tmp_path / 'back'}:v1", "--src-creds", "skopeo:pw")
        assert reg.tokens_issued >= 2
        assert proxy.stats.requests > 5
        # without credentials the pull is refused
        proc = subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/auth/app:v1", f"oci:{tmp_path / 'no'}:v1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
    assert_same_image(umoci_image, tmp_path / "back", "v1")


def test_skopeo_pulls_a_layout_served_in_place(umoci_image, tmp_path):
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"inplace/img": umoci_image}) as reg:
        skopeo_copy(f"docker://{reg.host_port}/inplace/img:v1", f"oci:{tmp_path / 'back'}:v1")
    assert_same_image(umoci_image, tmp_path / "back", "v1")
    assert not (tmp_path / "reg" / "inplace").exists()
