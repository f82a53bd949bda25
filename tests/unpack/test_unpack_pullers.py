"""The parallel puller and the sequential baseline over a local blob source, under asyncio and trio."""

from __future__ import annotations

import itertools
import os
import tarfile
from pathlib import Path

import anyio
import pytest
from treecmp import assert_same_tree
from unpack_helpers import GZ, ZST, E, layer_image

from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.errors import ParallelPullIsDisabled, VerificationFailed
from soci_lab.events import EventRecorder
from soci_lab.oci import OCILayout
from soci_lab.unpack import LayerSpec, LocalFileSource, ParallelPuller, SequentialPuller

BACKENDS = ["asyncio", "trio"]


@pytest.fixture
def image(tmp_path: Path) -> tuple[list[LayerSpec], dict[str, Path], Path]:
    """Three layers (gzip, zstd, gzip) with a 700 KiB file so chunked downloads take several chunks."""
    big = os.urandom(700 << 10)
    l1 = [E("etc/", tarfile.DIRTYPE, mode=0o755), E("etc/os-release", data=b"ID=test\n"), E("big", data=big)]
    l1 += [E("usr/", tarfile.DIRTYPE), E("usr/share/", tarfile.DIRTYPE)]
    l1 += [E(f"usr/share/f{i}", data=b"%d" % i) for i in range(50)]
    l2 = [E("etc/", tarfile.DIRTYPE), E("etc/.wh.os-release"), E("usr/", tarfile.DIRTYPE)]
    l2 += [E("usr/share/", tarfile.DIRTYPE), E("usr/share/.wh..wh..opq"), E("usr/share/new", data=b"new")]
    l3 = [
        E("app/", tarfile.DIRTYPE),
        E("app/run", data=b"#!/bin/sh\n", mode=0o755),
        E("app/link", tarfile.SYMTYPE, linkname="run"),
    ]
    return layer_image(tmp_path, [("l1", l1, GZ), ("l2", l2, ZST), ("l3", l3, GZ)])


def _check_trees(expected: Path, mounts: list[Path]) -> None:
    for i, mp in enumerate(mounts):
        assert_same_tree(expected / str(i), mp, include_root=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_pull_chunked(tmp_path: Path, image, backend: str) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = image
    src = LocalFileSource(paths, chunk=16 << 10)
    rec = EventRecorder(strategy="parallel")
    cfg = ParallelPullUnpackConfig(
        enable=True,
        concurrent_download_chunk_size="64kb",
        max_concurrent_downloads=4,
        max_concurrent_downloads_per_image=3,
        max_concurrent_unpacks_per_image=2,
    )
    mounts = [tmp_path / "snap" / str(i) / "fs" for i in range(len(specs))]

    async def main() -> ParallelPuller:
        async with ParallelPuller(tmp_path / "root", src, config=cfg, recorder=rec) as puller:
            outcomes = await puller.pull("sha256:img", specs, mounts)
            assert [o.how for o in outcomes] == ["remote"] * 3
            assert puller.storage is not None and puller.storage.keys() == []
            assert puller.jobs is not None and puller.jobs.images() == []
            return puller

    puller = anyio.run(main, backend=backend)
    _check_trees(expected, mounts)
    big = next(s for s in specs if s.size > 64 << 10)
    ranged = [r for r in src.requests if r[0] == big.digest and r[2] is not None and r[2] > 1]
    assert len(ranged) == -(-big.size // (64 << 10))  # one request per chunk
    assert puller.resources.downloads.peak <= 4
    kinds = {e.kind for e in rec.events}
    assert {"blob_download", "chunk_download", "decompress", "apply", "verify", "job_status"} <= kinds
    assert all(e.ok for e in rec.events if e.kind == "verify")
    done = [e for e in rec.events if e.kind == "job_status" and e.attrs["to"] == "DONE"]
    assert len(done) == 3


def test_parallel_pull_without_range_support_uses_whole_requests(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = image
    src = LocalFileSource(paths, ranges=False)
    cfg = ParallelPullUnpackConfig(enable=True, concurrent_download_chunk_size="64kb")
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        async with ParallelPuller(tmp_path / "root", src, config=cfg) as puller:
            await puller.pull("img", specs, mounts)

    anyio.run(main)
    _check_trees(expected, mounts)
    fetches = [r for r in src.requests if r[2] is None]
    assert len(fetches) == 3  # whole-blob GETs only (the probe is (digest, 0, 1))


def test_parallel_pull_downloads_the_largest_layer_first(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    """Premount tasks start largest first (LPT), yet every layer still lands at its own mountpoint."""
    specs, paths, expected = image
    order = [2, 1, 0]  # the 700 KiB layer (index 0 of the fixture) last in layer order
    layers = [specs[i] for i in order]
    src = LocalFileSource(paths, ranges=False)
    cfg = ParallelPullUnpackConfig(enable=True, max_concurrent_downloads_per_image=1)
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> list[str]:
        async with ParallelPuller(tmp_path / "root", src, config=cfg) as puller:
            return [o.layer for o in await puller.pull("img", layers, mounts)]

    assert anyio.run(main) == [s.digest for s in layers]
    for mp, i in zip(mounts, order, strict=True):
        assert_same_tree(expected / str(i), mp, include_root=False)
    fetched = [r[0] for r in src.requests if r[2] is None]
    assert fetched == [s.digest for s in sorted(layers, key=lambda s: -s.size)]
    assert fetched[0] == specs[0].digest


def test_content_store_hit_skips_network_and_remote_blobs_are_stored(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = image
    layout = OCILayout(tmp_path / "layout")
    layout.import_file(paths[specs[0].digest], specs[0].digest)
    src = LocalFileSource(paths)
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> list[str]:
        async with ParallelPuller(tmp_path / "root", src, content=layout) as puller:
            return [o.how for o in await puller.pull("img", specs, mounts)]

    assert anyio.run(main) == ["local", "remote", "remote"]
    _check_trees(expected, mounts)
    assert not [r for r in src.requests if r[0] == specs[0].digest]
    assert all(layout.has(s.digest) for s in specs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mount_parallel_layer_by_layer(tmp_path: Path, image, backend: str) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = image
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        async with ParallelPuller(tmp_path / "root", LocalFileSource(paths)) as puller:
            for i in range(3):
                await puller.mount_parallel("img", specs, i, mounts[i])

    anyio.run(main, backend=backend)
    _check_trees(expected, mounts)


def test_bad_diff_id_fails_and_nothing_is_renamed(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    specs, paths, _ = image
    bad = [specs[0], LayerSpec(specs[1].digest, specs[1].size, specs[1].media_type, "sha256:" + "0" * 64), specs[2]]
    mounts = [tmp_path / "m" / str(i) for i in range(3)]
    rec = EventRecorder()

    async def main() -> None:
        async with ParallelPuller(tmp_path / "root", LocalFileSource(paths), recorder=rec) as puller:
            with pytest.raises(VerificationFailed, match="diffID"):
                await puller.pull("img", bad, mounts)
            assert puller.jobs is not None and puller.jobs.images() == []
            with anyio.fail_after(10):  # removed job directories may need the cleaner's next pass
                while puller.storage is not None and puller.storage.keys():
                    puller.jobs.gc()
                    await anyio.sleep(0.05)

    anyio.run(main)
    assert not mounts[1].exists()
    failed = [e for e in rec.events if e.kind == "job_status" and e.attrs["to"] == "FAILED"]
    assert failed and failed[0].layer == specs[1].digest


def test_disabled_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParallelPullIsDisabled):
        ParallelPuller(tmp_path, LocalFileSource({}), config=ParallelPullUnpackConfig(enable=False))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancelled_pull_leaves_nothing(tmp_path: Path, image, backend: str) -> None:  # type: ignore[no-untyped-def]
    specs, paths, _ = image
    slow = LocalFileSource(paths, chunk=4 << 10, delay_s=0.01)
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        async with ParallelPuller(tmp_path / "root", slow) as puller:
            with anyio.move_on_after(0.3):
                await puller.pull("img", specs, mounts)
            puller.clean_image("img")
            res = puller.resources
            with anyio.fail_after(10):  # cancelled tasks release their leases as they unwind
                while res.downloads.in_use or res.unpacks.in_use:
                    await anyio.sleep(0.01)

    anyio.run(main, backend=backend)
    assert not any(m.exists() for m in mounts[1:])
    leftovers = os.listdir(tmp_path / "root" / "unpack")
    assert leftovers == [] or all(not (tmp_path / "root" / "unpack" / x / "fs").exists() for x in leftovers)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_pull_unpacks_in_order(tmp_path: Path, image, backend: str) -> None:  # type: ignore[no-untyped-def]
    specs, paths, expected = image
    rec = EventRecorder(strategy="sequential")
    src = LocalFileSource(paths)
    mounts = [tmp_path / "m" / str(i) for i in range(3)]
    puller = SequentialPuller(tmp_path / "root", src, recorder=rec)

    async def main() -> None:
        await puller.pull("img", specs, mounts)

    anyio.run(main, backend=backend)
    _check_trees(expected, mounts)
    applies = [e for e in rec.events if e.kind == "apply"]
    assert [e.layer for e in applies] == [s.digest for s in specs]
    for a, b in itertools.pairwise(applies):
        assert a.t_end <= b.t_start + 1e-6  # one at a time
    assert puller.resources.downloads.peak <= 3
    assert all(r[2] is None for r in src.requests)  # whole-layer downloads
    assert os.listdir(tmp_path / "root" / "sequential" / "unpack") == []


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_repeated_layer_digest(tmp_path: Path, image, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Images repeat identical layers (empty ones often): each occurrence gets its own job and tree."""
    specs, paths, expected = image
    repeated = [specs[0], specs[2], specs[0]]
    mounts = [tmp_path / "m" / str(i) for i in range(3)]

    async def main() -> None:
        src = LocalFileSource(paths)
        if mode == "parallel":
            async with ParallelPuller(tmp_path / "root", src) as puller:
                await puller.pull("img", repeated, mounts)
        else:
            await SequentialPuller(tmp_path / "root", src).pull("img", repeated, mounts)

    anyio.run(main)
    for mp, ref in zip(mounts, ["0", "2", "0"], strict=True):
        assert_same_tree(expected / ref, mp, include_root=False)
