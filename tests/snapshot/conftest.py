"""Fixtures of the snapshot room: images built once per session, and a guard that nothing leaks.

Every test here runs with its own state root (``SOCI_LAB_STATE_ROOT``) and its own temporary directory
(``TMPDIR`` and :data:`tempfile.tempdir`), both under the session's base temp directory, so the
``no_leftovers`` guard can tell our mounts, processes and temp dirs from those of the other rooms' tests
running on the same machine. It checks at the end of the session, whether the tests passed or failed.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from privateroots import private_roots
from snaptools import build_realistic_trees, build_small_trees, our_mounts, our_processes

from soci_lab.images import build_image
from soci_lab.snapshot import mounts_under, umount_tree, unmount_recorded


@pytest.fixture(scope="session", autouse=True)
def snapshot_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A state root and a temp dir of our own for the whole session; fails if anything was left behind."""
    base = tmp_path_factory.mktemp("snaproot")
    roots = {"state": base / "state", "tmp": base / "tmp", "mnt": base / "mnt"}
    roots["tmp"].mkdir()
    roots["mnt"].mkdir()
    try:
        with private_roots(roots["state"], roots["tmp"]):
            yield roots
    finally:
        mounts = our_mounts([base])
        leftover_mnt = sorted(p.name for p in roots["mnt"].iterdir()) if roots["mnt"].exists() else []
        procs = our_processes([base])
        leftovers = sorted(p.name for p in roots["tmp"].iterdir()) if roots["tmp"].exists() else []
        states = sorted(p.name for p in roots["state"].iterdir()) if roots["state"].exists() else []
        problems = []
        if mounts:
            problems.append(f"mounts left: {mounts}")
        if procs:
            problems.append(f"processes left: {procs}")
        if leftovers:
            problems.append(f"temporary files left: {leftovers}")
        if leftover_mnt:
            problems.append(f"mountpoints left: {leftover_mnt}")
        if states:
            problems.append(f"state directories left: {states}")
        assert not problems, "; ".join(problems)


@pytest.fixture
def mnt(snapshot_roots: dict[str, Path], request: pytest.FixtureRequest) -> Iterator[Path]:
    """An empty mountpoint inside the session's guarded directory (removed after the test)."""
    path = snapshot_roots["mnt"] / request.node.name.replace("/", "_")[:80]
    path.mkdir(parents=True)
    yield path
    if mounts_under(path):  # a test failed half-way: take its mount down so the next tests run clean
        with contextlib.suppress(Exception):
            unmount_recorded(path)
        with contextlib.suppress(Exception):
            umount_tree(path)
    try:
        path.rmdir()
    except OSError as exc:  # still mounted or not empty: the session guard reports it
        print(f"mountpoint {path} left: {exc}")


@dataclass(frozen=True)
class BuiltImage:
    """An image in the distribution registry: its ref, the trees it was built from, the manifest digest."""

    ref: str
    dirs: tuple[Path, ...]
    manifest_digest: str
    index_digest: str | None = None


@pytest.fixture(scope="session")
def realistic_trees(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_realistic_trees(tmp_path_factory.mktemp("realistic"))


@pytest.fixture(scope="session")
def realistic_image(distribution_registry, realistic_trees: list[Path]) -> BuiltImage:  # type: ignore[no-untyped-def]
    """The realistic image (four layers, ~50 MB) pushed to distribution 2.8 and given a v2 SOCI index
    (1 MiB spans; layers under 1 MiB are left unindexed, so two layers are local)."""
    from soci_lab.artifacts import create_soci_index

    ref = distribution_registry.ref("snap/realistic", "v1")
    built = build_image(realistic_trees, ref, insecure=True)
    index = create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    return BuiltImage(ref, tuple(realistic_trees), str(built.manifest_descriptor.digest), str(index.digest))


@pytest.fixture(scope="session")
def umoci_rootfs(tmp_path_factory: pytest.TempPathFactory, realistic_image: BuiltImage) -> Path:
    """``skopeo copy`` of the realistic image (by its manifest digest) into a layout, ``umoci raw unpack``."""
    from snaptools import tool

    work = tmp_path_factory.mktemp("umoci")
    repo = realistic_image.ref.rsplit(":", 1)[0]
    tool(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{repo}@{realistic_image.manifest_digest}",
        f"oci:{work / 'layout'}:t",
    )
    rootfs = work / "rootfs"
    tool("umoci", "raw", "unpack", "--image", f"{work / 'layout'}:t", str(rootfs))
    return rootfs


@pytest.fixture(scope="session")
def small_trees(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_small_trees(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def small_layout(tmp_path_factory: pytest.TempPathFactory, small_trees: list[Path]) -> Path:
    """The small three-layer image as an OCI layout, without an index (copied per test that indexes it)."""
    lay = tmp_path_factory.mktemp("small-layout") / "lay"
    build_image(small_trees, f"oci:{lay}:v1")
    return lay


@pytest.fixture
def small_copy(tmp_path: Path, small_layout: Path) -> Path:
    """A private copy of the small layout (tests add indexes to it)."""
    dst = tmp_path / "lay"
    shutil.copytree(small_layout, dst)
    return dst


@pytest.fixture(scope="session")
def small_image(distribution_registry, small_layout: Path) -> BuiltImage:  # type: ignore[no-untyped-def]
    """The small image in distribution 2.8 with a v2 SOCI index (layers 0 and 2 lazy, layer 1 local)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import copy_image

    ref = distribution_registry.ref("snap/small", "v1")
    copied = copy_image(f"oci:{small_layout}:v1", ref, insecure=True)
    index = create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    return BuiltImage(ref, (), str(copied.digest), str(index.digest))


@pytest.fixture(scope="session")
def sample_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's sample image at a small scale (it has a shell and a workload), indexed (v2, 256 KiB)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_sample_image

    base = tmp_path_factory.mktemp("sample")
    ref = f"oci:{base / 'lay'}:v1"
    build_sample_image(ref, base / "trees", scale=0.05)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=256 << 10)
    return base / "lay"
