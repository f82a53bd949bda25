"""The lazy model's readahead: the kernel's (page cache and Linux readahead on the FUSE file) and the
reader's (``LayerReader``: spans after a sequential read), held exactly to real FUSE mounts.

- :class:`soci_lab.sim.pagecache.KernelReads` against the FUSE reads a real mount receives;
- a simulated lazy pull against ``soci_lab.lab.pull`` of the same SOCI image and trace: the same requests
  and bytes (the reader-path model, without the kernel, fetches fewer — it is what ``lab.lazy_read`` does).

The mounted tests need root, /dev/fuse and overlayfs (CI has them).
"""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
from collections import Counter

import pytest

from soci_lab.sim import Access, LazyParams, SimParams, simulate, write_trace
from soci_lab.sim.pagecache import KernelReads

KIB = 1024


def _reads(kr: KernelReads, name: str, size: int, ops: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    return [kr.read(name, name, size, off, n) for off, n in ops]


def test_kernel_reads_follow_linux_readahead():
    """The patterns a 6.x kernel sends a FUSE server (observed on a mount; the mounted test checks more)."""
    kr = KernelReads(32, 128 * KIB)
    # a 2 MiB read at 0: 128 KiB windows, the last one past the read (async readahead on its mark)
    (big,) = _reads(kr, "a", 3_000_000, [(0, 2 << 20)])
    assert big == [(i * 128 * KIB, (i + 1) * 128 * KIB) for i in range(17)]
    # a tiny read at 0: the initial window is 4 pages
    assert _reads(kr, "b", 700_000, [(100, 1000)]) == [[(0, 16 * KIB)]]
    # a small random read: its pages as they are; right after it, a small sequential read: 4 pages ahead
    assert _reads(kr, "c", 2_000_000, [(500_000, 10_000), (510_000, 10_000)]) == [
        [(499_712, 512_000)],
        [(512_000, 528_384)],
    ]
    # a whole small file: one request, clipped to the file
    assert _reads(kr, "d", 100_000, [(0, 100_000)]) == [[(0, 100_000)]]
    # 64 KiB steps: a 128 KiB window, then one window ahead each time the mark is reached, then cached
    assert _reads(kr, "e", 8_000_000, [(i * 64 * KIB, 64 * KIB) for i in range(4)]) == [
        [(0, 128 * KIB)],
        [(128 * KIB, 256 * KIB)],
        [(256 * KIB, 384 * KIB)],
        [],
    ]
    # a 1 MiB read not aligned to a window, ending inside one: two windows past its end
    reqs = kr.read("f", "f", 8_000_000, 3_000_000, 1 << 20)
    assert reqs[0] == (2_998_272, 2_998_272 + 128 * KIB) and len(reqs) == 10
    # page cache: the same bytes again cost nothing; beyond the end of the file, nothing
    assert kr.read("a", "a", 3_000_000, 0, 1 << 20) == []
    assert kr.read("b", "b", 700_000, 700_000, 10) == []


def _can_mount() -> None:
    lab = pytest.importorskip("soci_lab.lab")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")


# (file size, reads) — each file read through its own descriptor
PATTERNS: list[tuple[int, list[tuple[int, int]]]] = [
    (3_000_000, [(0, 2 << 20)]),
    (700_000, [(100, 1000)]),
    (2_000_000, [(500_000, 10_000), (510_000, 10_000), (900_000, 4096)]),
    (100_000, [(0, 100_000)]),
    (8_000_000, [(i * 64 * KIB, 64 * KIB) for i in range(4)]),
    (8_000_000, [(3_000_000, 1 << 20), (6_000_000, 300_000)]),
    (1_200_000, [(0, 4096), (4096, 4096), (8192, 8192), (16384, 65536), (200_000, 1)]),
    (5_000, [(0, 5_000), (0, 5_000)]),
]


def test_kernel_reads_agree_with_a_real_fuse_mount(tmp_path):
    """Every read of PATTERNS through a real FUSE mount: the server receives exactly the requests
    KernelReads predicts (as sets per file: concurrent requests may arrive in either order)."""
    _can_mount()
    import time

    from soci_lab.lazy.mount import LayerMount, LazyLayerSpec, ServeOptions

    rnd = random.Random(os.urandom(8))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i, (size, _ops) in enumerate(PATTERNS):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(rnd.randbytes(size)))
    (tmp_path / "layer.tar.gz").write_bytes(gzip.compress(buf.getvalue(), 1))
    spec = LazyLayerSpec.from_layer_file(tmp_path / "layer.tar.gz", span_size=4 << 20)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = ServeOptions()
    opts.background = False
    m = LayerMount(spec, mnt, opts).start()
    try:
        for i, (_size, ops) in enumerate(PATTERNS):
            fd = os.open(mnt / f"f{i}", os.O_RDONLY)
            try:
                for off, n in ops:
                    os.pread(fd, n, off)
                    time.sleep(0.02)  # let async readahead requests arrive before the next read
            finally:
                os.close(fd)
    finally:
        m.unmount()
    ev = m.events()
    reads = ev[(ev.kind == "file_read") & ev.ok.fillna(True).astype(bool)]
    got: dict[str, Counter] = {}
    for path, offset, nbytes in zip(reads.path, reads["offset"], reads.bytes, strict=True):
        off = int(offset)
        got.setdefault(str(path).lstrip("/"), Counter())[(off, off + int(nbytes))] += 1
    kr = KernelReads(32, 128 * KIB)
    for i, (size, ops) in enumerate(PATTERNS):
        want = Counter(r for off, n in ops for r in kr.read(i, i, size, off, n))
        assert got.get(f"f{i}", Counter()) == want, (i, PATTERNS[i])


def _requests(frame) -> Counter:
    http = frame[frame.kind == "http_request"]
    return Counter(int(n) for n in http.bytes)


def test_lazy_pull_agrees_with_the_simulator_exactly(tmp_path):
    """``soci_lab.lab.pull(..., "lazy", trace=...)`` of a SOCI v2 image (4 MiB spans) and the simulator on
    the same image and trace: the same HTTP requests (by body size), requests and bytes fetched — with
    reads that the kernel widens (a tiny read at a file's start becomes 16 KiB, crossing a span boundary),
    small sequential reads and a 2 MiB read (both starting the reader's readahead of the next span), mid-file
    reads whose tar header lies in another span, and whole small files. The reader path (no kernel) fetches
    less: the readahead is what the FUSE path adds."""
    _can_mount()
    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.cli.sim import image_from_layout
    from soci_lab.images.build import build_image
    from soci_lab.lab import pull
    from soci_lab.netlab import EmbeddedRegistry

    sizes = random.Random(11)
    content = random.Random(os.urandom(8))  # fresh digests: nothing cached from an earlier run answers
    dirs = []
    for li, n in enumerate((300, 3, 200)):
        d = tmp_path / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        for i in range(n):
            size = 6_000_000 if i == 0 and li != 1 else sizes.randint(2_000, 90_000)
            (d / f"f{i:03d}").write_bytes(content.randbytes(size))
        dirs.append(tmp_path / f"l{li}")
    ref = f"oci:{tmp_path / 'layout'}:t"
    build_image(dirs, ref)
    create_soci_index(ref, min_layer_size=1 << 20, span_size=4 << 20)
    image = image_from_layout(f"{tmp_path / 'layout'}:t")
    assert [la.indexed for la in image.layers] == [True, False, True]
    trace: list[Access] = []

    def read(path: str, off: int, size: int) -> None:
        trace.extend([Access(0.0, "open", path), Access(0.0, "read", path, off, size)])

    for li in (0, 2):
        layer = image.layers[li]
        files = sorted((f for f in image.files if f.layer == li and f.type == "reg"), key=lambda f: f.offset)
        read(f"/d{li}/f000", 0, 2 << 20)  # the big file: readahead of the span after the read
        big = files[0]
        for s in layer.spans[1:]:
            b = s.u_start
            for f in files[1:]:
                if f.offset < b < f.offset + f.size and 1_100 < b - f.offset < 16 * KIB:
                    read(f.path, 0, 1000)  # the kernel's 16 KiB crosses the boundary
                if f.offset - f.header < b <= f.offset and f.size > 10_000:
                    read(f.path, f.size - 5_000, 1000)  # mid-file read; its header in the span before
        small = [f for f in files[1:] if f.size > 40_000][:6]
        for f in small[:3]:
            read(f.path, 0, 4096)
            read(f.path, 4096, 4096)  # sequential: a 32 KiB FUSE read, readahead of its next span
        for f in small[3:]:
            read(f.path, 0, f.size)
        read(big.path, 3_000_000, 100_000)
    write_trace(trace, tmp_path / "trace.csv")
    fuse = simulate(image, "lazy", workload=trace)
    reader = simulate(image, "lazy", workload=trace, params=SimParams(lazy=LazyParams.reader_path()))
    assert fuse.summary["requests"] > reader.summary["requests"]
    assert fuse.summary["bytes_fetched"] > reader.summary["bytes_fetched"]
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        host = reg.url.split("://", 1)[1]
        real = pull(f"{host}/img:t", "lazy", trace=str(tmp_path / "trace.csv"))
    assert real.provenance.get("lazy_path") == "fuse"
    assert _requests(fuse.events) == _requests(real.events)
    for key in ("requests", "bytes_fetched"):
        assert fuse.summary[key] == real.summary[key], key


@pytest.fixture(scope="module")
def demo_image(tmp_path_factory):
    """The demo's sample image in the embedded registry, its start-up trace and its simulator model."""
    import shutil

    from soci_lab.artifacts import create_soci_index
    from soci_lab.compare import image_model
    from soci_lab.demo import startup_trace
    from soci_lab.images import build_sample_image, sample_image_trees
    from soci_lab.netlab import EmbeddedRegistry

    work = tmp_path_factory.mktemp("ra-demo")
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            ref = f"{reg.host_port}/sample:latest"
            build_sample_image(ref, work / "trees")
            trace = startup_trace(sample_image_trees(work / "trees-view"), work / "trace.csv")
            create_soci_index(ref, version="v2")
            yield ref, trace, image_model(ref, insecure=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_demo_lazy_numbers_agree(demo_image):
    """``soci-lab demo``'s image and start-up trace: the simulated FUSE lazy pull makes the real one's
    requests and bytes (14 / 14,032,103 at scale 1 where the reader path makes 13 / 11,638,732)."""
    _can_mount()
    from soci_lab.lab import pull
    from soci_lab.sim import read_trace

    ref, trace, image = demo_image
    real = pull(ref, "lazy", trace=str(trace), insecure=True)
    accesses = read_trace(trace)
    sim = simulate(image, "lazy", workload=accesses, params=SimParams(lazy=LazyParams(concurrent_mounts=True)))
    assert _requests(sim.events) == _requests(real.events)
    for key in ("requests", "bytes_fetched"):
        assert sim.summary[key] == real.summary[key], key
    reader = simulate(image, "lazy", workload=accesses, params=SimParams(lazy=LazyParams.reader_path()))
    assert reader.summary["requests"] < sim.summary["requests"]


def test_compare_simulates_the_reader_path_when_it_cannot_mount(demo_image, monkeypatch):
    """Without FUSE, ``compare`` reads through ``lab.lazy_read`` and simulates that path (no kernel)."""
    from soci_lab import lab
    from soci_lab.compare import compare

    ref, trace, _image = demo_image
    monkeypatch.setattr(lab, "can_mount", lambda: (False, "pretend"))
    result = compare(ref, ("lazy",), sim=True, trace=trace, insecure=True, calibration="in-sample")
    real, sim = result.runs
    assert real.provenance["lazy_path"] == "reader" and sim.source == "sim"
    for key in ("requests", "bytes_fetched"):
        assert sim.summary[key] == real.summary[key], key
