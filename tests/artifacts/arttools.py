"""Helpers of the artifacts room's tests (importable as ``arttools``): small images, blob corruption on a
registry's disk, and an independent look at span geometry."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from soci_lab.images import build_image
from soci_lab.oci import Descriptor
from soci_lab.ztoc import Ztoc

MAIN = Path(__file__).resolve().parents[2]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"

#: small geometry: spans of 256 KiB, layers under 256 KiB get no zTOC
SPAN = 256 << 10
MIN_LAYER = 256 << 10


@dataclass(frozen=True)
class SmallImage:
    """A three-layer image: ``big`` (about 1.5 MiB of random data), ``tiny`` (a few KiB, under the minimum
    layer size), ``mid`` (about 1 MiB); ``files`` maps each layer's name to (path in the image, bytes)."""

    ref: str
    digest: str
    manifest: Descriptor
    layers: tuple[Descriptor, ...]
    files: dict[str, dict[str, bytes]]

    @property
    def big(self) -> Descriptor:
        return self.layers[0]

    @property
    def tiny(self) -> Descriptor:
        return self.layers[1]

    @property
    def mid(self) -> Descriptor:
        return self.layers[2]


def unique_repo(prefix: str = "art") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def make_trees(root: Path, seed: int = 7) -> tuple[list[Path], dict[str, dict[str, bytes]]]:
    """The three layer directories and what each holds."""
    rng = random.Random(seed)
    content = {
        "big": {"opt/big/blob.bin": rng.randbytes(1_500_000), "etc/big.conf": b"big=1\n" * 40},
        "tiny": {"etc/tiny.conf": b"tiny\n", "etc/motd": b"hello\n" * 100},
        "mid": {"usr/lib/mid.so": rng.randbytes(1_000_000), "etc/mid.conf": b"mid=2\n" * 30},
    }
    dirs = []
    for name, files in content.items():
        d = root / name
        for rel, data in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        dirs.append(d)
    return dirs, content


def build_small_image(ref: str, work: Path, *, compression: str = "gzip", seed: int = 7) -> SmallImage:
    """Build the small image into ``ref`` (registry or ``oci:`` layout)."""
    dirs, content = make_trees(work / f"trees-{uuid.uuid4().hex[:6]}", seed)
    result = build_image(dirs, ref, compression=compression)
    layers = tuple(b.descriptor for b in result.layers)
    return SmallImage(ref, str(result.digest), result.manifest_descriptor, layers, content)


def corrupt_registry_blob(basetemp: Path, kind: str, repo: str, digest: str) -> Path:
    """Flip one byte of a blob where the registry keeps it on disk (same length, wrong content).

    The embedded registry serves ``<root>/<repo>/blobs/sha256/<hex>``; distribution 2.8 serves
    ``<root>/data/docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data``. Neither re-hashes on GET.
    """
    hexpart = digest.split(":", 1)[1]
    if kind == "embedded":
        found = list(basetemp.glob(f"embedded*/{repo}/blobs/sha256/{hexpart}"))
    else:
        found = list(basetemp.glob(f"distribution*/data/docker/registry/v2/blobs/sha256/{hexpart[:2]}/{hexpart}/data"))
    found = sorted({p.resolve() for p in found})  # pytest's "<name>current" symlinks name the same dirs
    if len(found) != 1:
        pytest.fail(f"blob {digest} of {repo} not found on the {kind} registry's disk under {basetemp}: {found}")
    path = found[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def spans_by_geometry(z: Ztoc) -> list[tuple[int, int]]:
    """The ``[start, end)`` uncompressed ranges of the spans, walked from span 0 until they stop tiling
    the stream — a count that does not trust ``max_span_id``."""
    out: list[tuple[int, int]] = []
    pos = 0
    i = 0
    while pos < z.uncompressed_size:
        start, end = z.uncompressed_range(i)
        assert start == pos, f"span {i} starts at {start}, not where span {i - 1} ended ({pos})"
        assert end > start
        out.append((start, end))
        pos = end
        i += 1
    return out


def soci_lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``soci-lab`` CLI of this checkout in a subprocess."""
    proc = subprocess.run([sys.executable, "-c", CLI_CODE, *args], capture_output=True, text=True, cwd=MAIN,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"soci-lab {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc
