"""Image model: synthetic generation, geometry, JSON round trip, respan, the zTOC adapter."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from soci_lab.errors import SimulationError
from soci_lab.sim import ImageModel, SyntheticSpec, generate
from soci_lab.sim.image import FileModel, LayerModel, SpanModel
from soci_lab.sim.ztoc_adapter import LayerSource, from_ztocs

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def image() -> ImageModel:
    return generate(SyntheticSpec(seed=3, compressed_size=120 * MIB, layers=6))


def test_synthetic_image_has_the_asked_size_and_valid_geometry(image):
    assert image.compressed_size == 120 * MIB
    image.validate()
    ratio = image.uncompressed_size / image.compressed_size
    assert 2.4 < ratio < 3.5
    for layer in image.layers:
        assert layer.indexed == (layer.compressed_size >= 10 * MIB)
        for s in layer.spans[:-1]:
            assert 4 * MIB < s.u_size <= 4 * MIB + 64 * 1024  # gzip checkpoints overshoot the span size


def test_same_seed_same_image_other_seed_other_image():
    spec = SyntheticSpec(seed=11, compressed_size=40 * MIB, layers=4)
    a, b = generate(spec), generate(spec)
    assert a.to_dict() == b.to_dict()
    c = generate(SyntheticSpec(seed=12, compressed_size=40 * MIB, layers=4))
    assert c.to_dict() != a.to_dict()


def test_json_round_trip(tmp_path, image):
    path = image.save(tmp_path / "img.json")
    back = ImageModel.load(path)
    assert back.to_dict() == image.to_dict()
    assert back.lookup(image.files[-1].path) == image.files[-1]


def test_load_refuses_other_documents(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(SimulationError, match="not a soci_lab image model"):
        ImageModel.load(tmp_path / "x.json")


def test_validate_finds_a_gap_between_spans():
    layer = LayerModel(
        "sha256:a", "gzip", 100, 200, spans=[SpanModel(0, 0, 50, 0, 100), SpanModel(1, 50, 100, 101, 200)]
    )
    with pytest.raises(SimulationError, match="tile"):
        ImageModel("x", [layer]).validate()


@pytest.mark.parametrize("span", [1 * MIB, 2 * MIB, 8 * MIB])
def test_respan_tiles_layers_and_keeps_compressed_totals(image, span):
    other = image.respan(span)
    other.validate()
    for old, new in zip(image.layers, other.layers, strict=True):
        assert new.indexed == old.indexed
        if new.indexed:
            assert all(s.u_size == span for s in new.spans[:-1])
            assert new.spans[0].c_start == old.spans[0].c_start
            assert new.spans[-1].c_end == old.compressed_size
            assert new.span_id(new.spans[-1].u_start) == len(new.spans) - 1


def test_span_id_is_largest_start_not_after_offset():
    layer = LayerModel(
        "d", "gzip", 30, 300, spans=[SpanModel(i, 10 * i, 10 * i + 10, 100 * i, 100 * i + 100) for i in range(3)]
    )
    assert [layer.span_id(o) for o in (0, 99, 100, 250, 299, 300)] == [0, 0, 1, 2, 2, 2]


def test_view_upper_layer_wins_and_whiteout_hides():
    files = [
        FileModel("/a", 0, 512, 10),
        FileModel("/b", 0, 1536, 10),
        FileModel("/a", 1, 512, 20),
        FileModel("/b", 1, 0, 0, "whiteout"),
    ]
    layers = [LayerModel("l0", "gzip", 100, 4096), LayerModel("l1", "gzip", 100, 4096)]
    img = ImageModel("x", layers, files)
    assert img.lookup("/a").layer == 1
    assert img.lookup("/b") is None
    assert img.readable_bytes() == 20


def test_synthetic_spec_parse():
    spec = SyntheticSpec.parse("synthetic:7,size=2GiB,layers=25,span=8MiB")
    assert (spec.seed, spec.compressed_size, spec.layers, spec.span_size) == (7, 2 << 30, 25, 8 * MIB)
    with pytest.raises(SimulationError):
        SyntheticSpec.parse("synthetic:7,colour=blue")


def test_from_ztocs_with_real_gzip_geometry():
    """The adapter takes a real zinfo's span geometry and TOC exactly (soci_lab.ztoc when present)."""
    gz = pytest.importorskip("soci_lab.ztoc.gzip_zinfo")
    toc_mod = pytest.importorskip("soci_lab.ztoc.toc")
    import random

    rnd = random.Random(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(40):
            data = bytes(rnd.getrandbits(8) for _ in range(20_000)) if i % 2 else b"x" * 30_000
            info = tarfile.TarInfo(f"dir/f{i:02d}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    blob = gzip.compress(raw)
    scan = gz.scan_gzip(io.BytesIO(blob), 64 * 1024)
    zinfo = scan.zinfo
    entries, _ = toc_mod.toc_from_tar_chunks([raw])
    src = LayerSource("sha256:x", "gzip", len(blob), zinfo.uncompressed_size, zinfo=zinfo, toc=entries)
    model = from_ztocs("real", [src])
    layer = model.layers[0]
    assert len(layer.spans) == zinfo.span_count > 1
    for i, s in enumerate(layer.spans):
        assert (s.c_start, s.c_end) == (zinfo.start_compressed_offset(i), zinfo.end_compressed_offset(i))
        assert (s.u_start, s.u_end) == (zinfo.start_uncompressed_offset(i), zinfo.end_uncompressed_offset(i))
    f = model.lookup("/dir/f03")
    assert f is not None and f.size == 20_000
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert raw[f.offset : f.offset + f.size] == tar.extractfile("dir/f03").read()


def test_from_ztocs_with_built_ztocs():
    """A two-layer image (gzip + uncompressed tar) indexed by soci_lab.ztoc.build_ztoc, then simulated."""
    ztoc_mod = pytest.importorskip("soci_lab.ztoc.ztoc")
    from soci_lab.sim import simulate
    from soci_lab.sim.workload import Access

    def tar_bytes(prefix: str, n: int) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for i in range(n):
                data = (f"{prefix}{i}" * 5000).encode()[: 10_000 + 997 * i]
                info = tarfile.TarInfo(f"{prefix}/f{i:02d}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    raw0, raw1 = tar_bytes("a", 30), tar_bytes("b", 12)
    z0 = ztoc_mod.build_ztoc(gzip.compress(raw0), span_size=32 * 1024)
    z1 = ztoc_mod.build_ztoc(raw1, span_size=32 * 1024)
    model = from_ztocs(
        "built", [LayerSource.from_ztoc("sha256:a", z0, ztoc_size=4096), LayerSource.from_ztoc("sha256:b", z1)]
    )
    assert [la.compression for la in model.layers] == ["gzip", "none"]
    assert len(model.layers[0].spans) == z0.span_count and len(model.layers[1].spans) == z1.span_count
    f = model.lookup("/a/f07")
    assert f is not None and raw0[f.offset : f.offset + f.size] == (("a7" * 5000).encode()[: 10_000 + 997 * 7])
    run = simulate(model, "lazy", workload=[Access(0.0, "read", "/a/f07", 0, f.size)], params=None)
    fetched = run.events[run.events.kind == "span_fetch"]
    want = range(model.layers[0].span_id(f.offset), model.layers[0].span_id(f.offset + f.size) + 1)
    assert sorted(fetched.span) == list(want)


def test_links_and_opaque_directories_round_trip_through_json(tmp_path):
    """A link's target is kept (``FileModel.link``) and an opaque directory is an entry of its own, so a
    saved model resolves paths as the one it was saved from; rows written before links had them still load."""
    layer = LayerModel("sha256:a", "none", 4096, 4096)
    files = [
        FileModel("/d", 0, 0, 0, "dir"),
        FileModel("/d/f", 0, 512, 100, "reg", 512),
        FileModel("/d/h", 0, 1024, 0, "hardlink", 0, "/d/f"),
        FileModel("/s", 0, 1536, 0, "symlink", 0, "d/h"),
        FileModel("/d", 1, 2048, 0, "opaque"),
    ]
    model = ImageModel("links", [layer, LayerModel("sha256:b", "none", 4096, 4096)], files=files)
    back = ImageModel.load(model.save(tmp_path / "m.json"))
    assert back.files == files
    assert back.resolve("/s") is None  # the opaque /d of layer 1 hides layer 0's /d/h
    assert model.resolve("/s", follow_last=False) == files[3]
    old = model.to_dict()
    old["files"] = [row[:5] for row in old["files"]]
    assert ImageModel.from_dict(old).files[2].link == ""
