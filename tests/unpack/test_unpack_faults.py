"""Under the shaping proxy's faults a pull finishes (the client retries and resumes) or fails cleanly.

"Cleanly": a ``SociLabError`` (e.g. ``VerificationFailed`` for a corrupted byte, ``TooManyRetries``),
no mountpoint holding an incomplete layer, no lease held, no job left in memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import pytest
from treecmp import assert_same_tree

from soci_lab.config import HTTPConfig, ParallelPullUnpackConfig
from soci_lab.errors import SociLabError
from soci_lab.images import build_image
from soci_lab.netlab import EmbeddedRegistry, ShapingProxy
from soci_lab.remote import RegistryClient
from soci_lab.unpack import ParallelPuller, RegistryBlobSource, SequentialPuller, image_layer_specs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership round trip needs root")

FAULTS = "http503=0.08,reset=0.08,truncate=0.08,corrupt=0.03"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("faults")
    lib = Path(os.path.dirname(os.__file__))
    dirs = [base / "l1", base / "l2"]
    shutil.copytree(lib / "json", dirs[0] / "json", ignore=shutil.ignore_patterns("__pycache__"))
    dirs[1].mkdir()
    (dirs[1] / "blob.bin").write_bytes(os.urandom(900 << 10))
    with EmbeddedRegistry(root=base / "reg") as reg:
        build_image(dirs, f"{reg.url.removeprefix('http://')}/unpack/faults:v1", insecure=True)
        yield reg, dirs


def _pull_through_faults(served, tmp_path: Path, seed: int, mode: str, *, chunk: str = "128kb",  # type: ignore[no-untyped-def]
                         retries: int = 6) -> tuple[BaseException | None, list[Path]]:
    """Pull the served image through the shaping proxy's faults; the error (or None) and the mountpoints.

    A parallel pull must leave no lease held and no job in memory, whatever happened."""
    reg, _dirs = served
    mounts = [tmp_path / "m" / str(i) for i in range(2)]
    http = HTTPConfig(max_retries=retries, min_wait_msec=1, max_wait_msec=20)
    with ShapingProxy(reg.url, faults=f"seed={seed},{FAULTS}") as proxy:
        host = proxy.url.removeprefix("http://")

        async def main() -> BaseException | None:
            async with RegistryClient(host, insecure=True, config=http) as client:
                try:
                    resolved = await client.resolve_image(f"{host}/unpack/faults:v1")
                except SociLabError as exc:
                    return exc
                specs = image_layer_specs(resolved.layers, resolved.config.diff_ids)
                source = RegistryBlobSource(client, "unpack/faults")
                try:
                    if mode == "parallel":
                        cfg = ParallelPullUnpackConfig(enable=True, concurrent_download_chunk_size=chunk)
                        async with ParallelPuller(tmp_path / "root", source, config=cfg) as puller:
                            try:
                                await puller.pull("img", specs, mounts)
                            finally:
                                res = puller.resources
                                with anyio.fail_after(10):
                                    while res.downloads.in_use or res.unpacks.in_use:
                                        await anyio.sleep(0.01)
                                assert puller.jobs is not None and puller.jobs.images() == []
                    else:
                        await SequentialPuller(tmp_path / "root", source).pull("img", specs, mounts)
                except SociLabError as exc:
                    return exc
            return None

        return anyio.run(main), mounts


def _complete_or_clean(served, error: BaseException | None, mounts: list[Path]) -> None:  # type: ignore[no-untyped-def]
    for mp, src in zip(mounts, served[1], strict=True):
        if mp.exists():
            assert_same_tree(src, mp)  # whatever is in place is complete
    if error is None:
        assert all(mp.exists() for mp in mounts)
    else:
        assert str(error).strip() and "\n" not in str(error).strip()


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pull_through_faults_finishes_or_fails_cleanly(served, tmp_path: Path, seed: int, mode: str) -> None:  # type: ignore[no-untyped-def]
    error, mounts = _pull_through_faults(served, tmp_path, seed, mode)
    _complete_or_clean(served, error, mounts)


@pytest.mark.parametrize("chunk", ["128kb", ""])
@pytest.mark.parametrize("seed", [4, 5])
def test_downloads_pumped_from_the_socket_survive_faults(served, tmp_path: Path, monkeypatch, seed: int,
                                                          chunk: str) -> None:  # type: ignore[no-untyped-def]
    """Every body on the client's fast path (forced here for small layers) goes connection → pwrite on the pump's
    threads, through resets, truncations and corrupted bytes: the pull ends complete or fails cleanly."""
    import soci_lab.remote.fastpath as fastpath
    import soci_lab.remote.ranges as ranges

    pumped: list[int] = []
    real_pump = fastpath.pump_body

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        res = real_pump(*args, **kw)
        pumped.append(res.delivered)
        return res

    monkeypatch.setattr(ranges, "FAST_MIN_BYTES", 0)
    monkeypatch.setattr(fastpath, "pump_body", counting)
    error, mounts = _pull_through_faults(served, tmp_path, seed, "parallel", chunk=chunk, retries=8)
    assert pumped and sum(pumped) > 0, f"no body took the pump ({error})"
    _complete_or_clean(served, error, mounts)
