"""Small raw-HTTP helpers for the netlab tests: push blobs and manifests with plain httpx."""

from __future__ import annotations

import hashlib
import json

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible bytes."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(n)


def with_digest(location: str, digest: str) -> str:
    """``location`` with ``digest=`` added to its query (distribution keeps upload state in the query)."""
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def push_blob(c: httpx.Client, repo: str, data: bytes) -> str:
    """Monolithic POST ?digest=; a registry may answer 202 instead (distribution 2.8): then POST + PUT."""
    d = sha256(data)
    r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d}, content=data)
    if r.status_code == 202:
        r = c.put(with_digest(r.headers["Location"], d), content=data)
    assert r.status_code == 201, r.text
    return d


def manifest_doc(config: bytes, layers: list[bytes], **extra: object) -> dict:
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b), "size": len(b)} for b in layers],
    }
    doc.update(extra)
    return doc


def push_image(c: httpx.Client, repo: str, tag: str, layers: list[bytes], **extra: object) -> tuple[str, bytes]:
    """Push config + layers + manifest; returns (manifest digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    push_blob(c, repo, config)
    for layer in layers:
        push_blob(c, repo, layer)
    body = json.dumps(manifest_doc(config, layers, **extra)).encode()
    r = c.put(f"/v2/{repo}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return sha256(body), body


def error_codes(r: httpx.Response) -> list[str]:
    return [e["code"] for e in r.json()["errors"]]
