"""Small builders for the remote tests: deterministic bytes, unique repositories, images pushed with the client."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from soci_lab.oci import Descriptor, canonical_json
from soci_lab.oci import mediatypes as mt
from soci_lab.remote import RegistryClient


def random_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible bytes."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(n)


def unique_repo(prefix: str = "remote") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


@dataclass
class PushedImage:
    repo: str
    tag: str
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    layers: list[tuple[Descriptor, bytes]]


def config_bytes(n_layers: int) -> bytes:
    return canonical_json({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{i:064x}" for i in range(n_layers)]},
    })


def manifest_bytes(config: Descriptor, layers: list[Descriptor], **extra: object) -> bytes:
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config.digest), "size": config.size},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": str(d.digest), "size": d.size} for d in layers],
    }
    doc.update(extra)
    return canonical_json(doc)


async def push_image(rc: RegistryClient, repo: str, tag: str = "v1", layer_sizes: tuple[int, ...] = (300_000,),
                     seed: int = 1, chunk_size: int | None = None) -> PushedImage:
    layers = []
    for i, size in enumerate(layer_sizes):
        data = random_bytes(size, seed * 1000 + i)
        layers.append((await rc.push_blob(repo, data, chunk_size=chunk_size), data))
    cfg = config_bytes(len(layers))
    cdesc = await rc.push_blob(repo, cfg)
    body = manifest_bytes(cdesc, [d for d, _ in layers])
    mdesc = await rc.push_manifest(repo, body, mt.OCI_MANIFEST, tag)
    return PushedImage(repo, tag, mdesc, body, cdesc, layers)


def stored_blob_files(base: Path, kind: str, digest: str) -> list[Path]:
    """Where a registry under the pytest base temp keeps a blob's bytes (to corrupt them on disk)."""
    hexpart = digest.split(":", 1)[1]
    found = []
    for top in base.glob(f"{kind}*"):
        for p in top.rglob(hexpart):
            if p.is_file():
                found.append(p)
            elif (p / "data").is_file():
                found.append(p / "data")
    return found
