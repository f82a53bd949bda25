"""Validation at small scale: simulated and real eager pulls of the same image agree exactly on requests,
bytes fetched and bytes written (issue 7, item 4).

The real side is ``soci_lab.unpack`` (sequential and parallel pullers) over ``soci_lab.remote`` against the
embedded registry on loopback; the simulated side builds its image model from the same OCI layout. The
pullers are given the layer list (manifest and config are fetched by whoever calls them), so the sim's two
metadata requests are left out of the comparison. Wall time is not compared here: on loopback a pull of a
few MB is all fixed cost; that comparison needs the calibrated benchmark at full size.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

build = pytest.importorskip("soci_lab.images.build")
netlab = pytest.importorskip("soci_lab.netlab")
remote = pytest.importorskip("soci_lab.remote")
unpack = pytest.importorskip("soci_lab.unpack")

import anyio  # noqa: E402

from soci_lab.cli.sim import image_from_layout  # noqa: E402
from soci_lab.config import Config  # noqa: E402
from soci_lab.events import EventRecorder, detail  # noqa: E402
from soci_lab.oci.layout import OCILayout  # noqa: E402
from soci_lab.oci.manifest import ImageConfig, Manifest  # noqa: E402
from soci_lab.sim import simulate  # noqa: E402

CHUNK = "256kb"


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("val")
    rnd = random.Random(1)
    dirs = []
    for li, n in enumerate((30, 4, 12)):
        d = tmp / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"f{i}").write_bytes(rnd.randbytes(50_000))
        dirs.append(tmp / f"l{li}")
    build.build_image(dirs, f"oci:{tmp / 'layout'}:t")
    return tmp / "layout"


def _real(layout: Path, tmp: Path, mode: str):
    oci = OCILayout(layout, create=False)
    desc = oci.resolve("t")
    man = Manifest.from_bytes(oci.read_blob(desc.digest), desc.media_type)
    cfg = ImageConfig.from_bytes(oci.read_blob(man.config.digest))
    specs = [unpack.LayerSpec.from_descriptor(d, diff) for d, diff in zip(man.layers, cfg.diff_ids, strict=True)]
    rec = EventRecorder(strategy=mode)

    async def go() -> None:
        with netlab.EmbeddedRegistry(root=tmp / "reg", layouts={"img": layout}) as reg:
            host = reg.url.split("://", 1)[1]
            async with remote.RegistryClient(f"{host}/img", insecure=True, events=rec) as client:
                src = unpack.RegistryBlobSource(client, "img")
                mps = [tmp / f"{mode}-mp{i}" for i in range(len(specs))]
                if mode == "parallel":
                    pc = Config().pull_modes.parallel_pull_unpack
                    pc.enable = True
                    pc.concurrent_download_chunk_size = CHUNK
                    async with unpack.ParallelPuller(tmp / f"root-{mode}", src, config=pc, recorder=rec) as p:
                        await p.pull("img", specs, mps)
                else:
                    await unpack.SequentialPuller(tmp / f"root-{mode}", src, recorder=rec).pull("img", specs, mps)

    anyio.run(go)
    return rec.to_frame()


def _requests(frame, *, sim: bool) -> Counter:
    http = frame[frame.kind == "http_request"]
    if sim:  # the pullers are handed the layer list; the sim also fetched manifest and config
        http = http[~detail(http, "what").isin(["manifest", "config"])]
    out: Counter = Counter()
    for nbytes, method in zip(http.bytes, detail(http, "method"), strict=True):
        out[(method or "GET", int(nbytes))] += 1
    return out


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_sim_and_real_agree_on_requests_and_bytes(layout, tmp_path, mode):
    real = _real(layout, tmp_path, mode)
    image = image_from_layout(f"{layout}:t")
    cfg = Config()
    cfg.pull_modes.parallel_pull_unpack.concurrent_download_chunk_size = CHUNK
    sim = simulate(image, mode, config=cfg)
    assert _requests(sim.events, sim=True) == _requests(real, sim=False)
    real_apply = real[real.kind == "apply"]
    assert sim.summary["bytes_written"] == int(real_apply.bytes.sum())
    sim_apply = sim.events[sim.events.kind == "apply"]
    assert sorted(sim_apply.bytes) == sorted(real_apply.bytes)
    for kind in ("blob_download", "chunk_download", "decompress"):
        r, s = real[real.kind == kind], sim.events[sim.events.kind == kind]
        assert sorted(s.bytes) == sorted(r.bytes), kind


def test_lazy_span_fetches_agree_with_the_real_span_manager(tmp_path):
    """The same reads through soci_lab.lazy.SpanManager and through the simulator fetch the same spans."""
    import gzip
    import io
    import tarfile

    lazy = pytest.importorskip("soci_lab.lazy")
    ztoc_mod = pytest.importorskip("soci_lab.ztoc.ztoc")
    from soci_lab.sim.workload import Access
    from soci_lab.sim.ztoc_adapter import LayerSource, from_ztocs

    rnd = random.Random(3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(40):
            data = rnd.randbytes(rnd.randint(1, 90_000)) if i % 3 else b"text " * rnd.randint(1, 30_000)
            info = tarfile.TarInfo(f"d/f{i:02d}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    blob = gzip.compress(raw, 6)
    z = ztoc_mod.build_ztoc(blob, span_size=64 * 1024)
    model = from_ztocs("v", [LayerSource.from_ztoc("sha256:v", z)])
    layer = model.layers[0]
    files = sorted((f for f in model.files if f.type == "reg" and f.size), key=lambda f: f.offset)
    reads = [(f.path, 0, f.size) for f in files[::7]]  # whole files
    reads += [(f.path, f.size // 3, 1000) for f in files[1::5]]  # small reads inside files
    boundary = next((f, s.u_start) for s in layer.spans[1:] for f in files if f.offset < s.u_start < f.offset + f.size)
    f_b, b = boundary
    reads.append((f_b.path, 0, b - f_b.offset))  # a read ending exactly on a span boundary
    reads += reads[:3]  # re-reads hit the cache

    fetcher = lazy.BytesRangeFetcher(blob)

    async def real() -> None:
        sm = lazy.SpanManager(z, fetcher)
        view = model.view()
        for path, off, size in reads:
            f = view[path]
            got = await sm.get_contents(f.offset + off, f.offset + off + size)
            assert got == raw[f.offset + off : f.offset + off + size]

    anyio.run(real)
    from soci_lab.sim import LazyParams, SimParams

    cfg = Config()
    cfg.background_fetch.disable = True
    trace = [Access(0.0, "read", p, off, size) for p, off, size in reads]
    # the span manager alone: no kernel, no reader (no readahead, no tar header checks)
    bare = dict(kernel_ra_pages=0, readahead_spans=0, verify_headers=False)
    sim = simulate(model, "lazy", workload=trace, config=cfg, params=SimParams(lazy=LazyParams(**bare)))
    spans = sim.events[sim.events.kind == "span_fetch"]
    assert len(spans) == fetcher.requests
    assert int(spans.bytes.sum()) == fetcher.bytes
    # upstream's end-of-range quirk, selectable, costs exactly the one extra span of the boundary read
    quirk = simulate(
        model, "lazy", workload=trace, config=cfg, params=SimParams(lazy=LazyParams(touch_end_span=True, **bare))
    )
    assert (quirk.events.kind == "span_fetch").sum() == fetcher.requests + 1


def test_full_pulls_agree_in_every_mode(tmp_path):
    """soci_lab.lab.pull (mount, replay a trace, unmount) of a SOCI v2 image vs the simulator, per mode:
    the same HTTP requests (method, body bytes), the same totals. Needs root, /dev/fuse and overlayfs."""
    import os

    lab = pytest.importorskip("soci_lab.lab")
    create = pytest.importorskip("soci_lab.artifacts.create")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")
    from soci_lab.sim import Access, write_trace

    rnd = random.Random(os.urandom(8))  # fresh digests: nothing cached from an earlier run can answer
    dirs = []
    for li, n in enumerate((60, 4, 30)):
        d = tmp_path / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"f{i}").write_bytes(rnd.randbytes(50_000))
        dirs.append(tmp_path / f"l{li}")
    ref = f"oci:{tmp_path / 'layout'}:t"
    build.build_image(dirs, ref)
    create.create_soci_index(ref, min_layer_size=1 << 20, span_size=256 << 10)
    trace = [
        Access(0.0, "open", "/d0/f3"),
        Access(0.0, "read", "/d0/f3", 0, 50_000),
        Access(0.0, "read", "/d2/f7", 0, 50_000),
        Access(0.0, "stat", "/d1/f1"),
    ]
    write_trace(trace, tmp_path / "trace.csv")
    image = image_from_layout(f"{tmp_path / 'layout'}:t")
    assert image.image_index_size > 0 and [la.indexed for la in image.layers] == [True, False, True]
    with netlab.EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        host = reg.url.split("://", 1)[1]
        for mode in ("lazy", "parallel", "sequential"):
            real = lab.pull(f"{host}/img:t", mode, trace=str(tmp_path / "trace.csv"))
            sim = simulate(image, mode, workload=trace)
            assert _requests(sim.events, sim=False) == _requests(real.events, sim=False), mode
            for key in ("bytes_fetched", "requests", "bytes_written"):
                assert sim.summary[key] == real.summary[key], (mode, key)
