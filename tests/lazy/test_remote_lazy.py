"""Lazy layers served from a registry: ranged GETs through soci_lab.remote, behind the shaping proxy's faults.

Reliability property: with corrupted bodies, truncated bodies and 5xx injected, every read through the
FUSE mount returns the right bytes or fails with EIO — never a wrong byte — and once the faults stop every
file reads correctly again.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile

import anyio
import pytest

from soci_lab.config import Config
from soci_lab.errors import RegistryError
from soci_lab.lazy import RegistryRangeFetcher, SpanManager
from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions, mount_layer
from soci_lab.ztoc import Ztoc

SPAN = 64 << 10


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def pushed(embedded_registry, layer_files):
    """(registry url, repository, spec) of the test layer pushed to the embedded registry."""
    from soci_lab.remote.client import RegistryClient

    path, _raw = layer_files
    spec = LazyLayerSpec.from_layer_file(path, span_size=SPAN)

    async def push() -> None:
        async with RegistryClient(embedded_registry.url) as rc:
            desc = await rc.push_blob("lazy/layer", path)
            assert str(desc.digest) == spec.digest

    anyio.run(push)
    return embedded_registry.url, "lazy/layer", spec


def _test_config() -> Config:
    cfg = Config()
    cfg.http.max_wait_msec = 200  # keep retry back-off short in tests
    cfg.blob.max_span_verification_retries = 2
    return cfg


@pytest.mark.anyio
async def test_registry_fetcher_reads_spans_and_resolves_redirect(pushed):
    from soci_lab.remote.client import RegistryClient

    url, repo, spec = pushed
    z = Ztoc.from_bytes(spec.ztoc)
    async with RegistryClient(url) as rc:
        f = RegistryRangeFetcher(rc, rc.blob_url(repo, spec.digest))
        m = SpanManager(z, f)
        blob = open(spec.blob_path, "rb").read()  # noqa: SIM115
        lo, hi = z.compressed_range(3)
        assert await f.fetch(lo, hi - 1) == blob[lo:hi]
        assert f.real_url is not None  # learned with GET Range: bytes=0-1
        entry = next(e for e in z.toc if e.name == "usr/bin/tool")
        data = await m.get_contents(entry.uncompressed_offset, entry.uncompressed_offset + entry.uncompressed_size)
        assert len(data) == entry.uncompressed_size


class _Scripted:
    """A fake registry client answering from a script of statuses, to test the fetcher's status handling."""

    def __init__(self, blob: bytes, statuses: list[int]) -> None:
        self.blob, self.statuses, self.calls = blob, list(statuses), []

    async def get_content_with_range(self, url: str, lower: int, upper: int) -> bytes:
        self.calls.append((url, lower, upper))
        status = self.statuses.pop(0) if self.statuses else 206
        if status == 200:
            return self.blob
        if status != 206:
            raise RegistryError(f"HTTP {status}", status=status)
        return self.blob[lower : upper + 1]

    async def resolve_redirect(self, url: str) -> str:
        await self.get_content_with_range(url, 0, 1)
        return url


@pytest.mark.anyio
async def test_fetcher_refreshes_on_403_falls_back_on_400_and_slices_200():
    blob = os.urandom(1000)
    c = _Scripted(blob, [206, 403, 206])  # resolve, then 403 → re-resolve → retry
    f = RegistryRangeFetcher(c, "http://r/v2/x/blobs/sha256:1")
    assert await f.fetch(10, 19) == blob[10:20]
    assert f.refreshes == 1
    c = _Scripted(blob, [206, 400, 206])
    f = RegistryRangeFetcher(c, "http://r/v2/x/blobs/sha256:1")
    assert await f.fetch(10, 19) == blob[10:20] and len(c.calls) == 3  # resolve, the 400, one more try
    c = _Scripted(blob, [206, 200])  # a server ignoring Range: take the asked bytes, not the first ones
    f = RegistryRangeFetcher(c, "http://r/v2/x/blobs/sha256:1")
    assert await f.fetch(100, 149) == blob[100:150]
    c = _Scripted(blob, [206, 403, 206, 403])
    f = RegistryRangeFetcher(c, "http://r/v2/x/blobs/sha256:1")
    with pytest.raises(RegistryError):
        await f.fetch(0, 9)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse")
def test_faulty_registry_reads_right_bytes_or_eio_then_recover(pushed, layer_files, tmp_path):
    from soci_lab.netlab import ShapingProxy
    from soci_lab.netlab.faults import FaultSpec

    url, repo, spec0 = pushed
    _path, raw = layer_files
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        truth = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile() and ".wh." not in m.name}
    faults = "seed=3,corrupt=0.4,truncate=0.15,http500=0.15,http503=0.05"
    with ShapingProxy(url, faults=faults) as proxy:
        spec = LazyLayerSpec(
            digest=spec0.digest, ztoc=spec0.ztoc, blob_size=spec0.blob_size, registry=proxy.url, repository=repo,
            ztoc_origin="pinned",  # (served at once: this test is about a faulty registry, not the zTOC)
        )
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        cfg = _test_config()
        cfg.blob.max_span_verification_retries = 0  # one attempt per read: both outcomes happen
        opts = ServeOptions(config=cfg, background=False)
        with mount_layer(spec, mnt, opts) as m:
            ok = eio = 0
            for name, want in truth.items():
                try:
                    got = (mnt / name).read_bytes()
                except OSError as exc:
                    assert exc.errno == errno.EIO, (name, exc)
                    eio += 1
                    continue
                assert got == want, name  # never a wrong byte
                ok += 1
            assert ok > 0  # (EIOs happen too, most runs; the verify failures below always)
            assert proxy.stats.faults_injected > 0
            print(f"faulty phase: {ok} files right, {eio} EIO, faults {proxy.stats.as_dict()['faults']}")
            proxy.faults = FaultSpec()  # faults stop
            for name, want in truth.items():
                assert (mnt / name).read_bytes() == want, name
        ev = m.events()
    bad = ev[(ev.kind == "span_verify") & (~ev.ok)]
    assert len(bad) > 0  # corrupted bodies were seen, and rejected by the span digests
