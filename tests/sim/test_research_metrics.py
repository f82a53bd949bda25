"""Slacker's two numbers in every run's summary (issue 17, point 7): the pull's share of start-up time
(``pull_share`` = ``ready_s / workload_done_s``; Harter et al., FAST '16: 76 %) and the fraction of the image
read (``fraction_read``: 6.4 %), computed by one rule for real and simulated runs, so a notebook compares
them across images and modes. The real run here is a real lazy pull on FUSE (needs root, /dev/fuse and
overlayfs, as CI has); the simulated ones need nothing."""

from __future__ import annotations

import math

import pytest

from soci_lab.run import Run, as_run
from soci_lab.sim import Access, SyntheticSpec, generate, simulate, synthetic_trace

MIB = 1024 * 1024


@pytest.mark.parametrize("mode", ["sequential", "parallel", "lazy"])
def test_a_simulated_run_carries_the_pull_share_and_the_fraction_read(mode, tmp_path):
    image = generate(SyntheticSpec(seed=8, compressed_size=24 * MIB, layers=3, min_layer_size=1 * MIB))
    trace = synthetic_trace(image, 0.1, seed=8)
    sim = simulate(image, mode, workload=trace)
    run = as_run(sim)  # as a notebook makes it, without telling the image's size
    s = run.summary
    assert 0 < s["pull_share"] < 1
    assert s["pull_share"] == pytest.approx(s["ready_s"] / s["workload_done_s"])
    assert s["image_bytes"] == image.uncompressed_size
    assert s["fraction_read"] == pytest.approx(s["bytes_read"] / image.uncompressed_size)
    assert s["fraction_read"] == pytest.approx(sim.summary["fraction_read"])
    assert sim.summary["pull_share"] == pytest.approx(s["pull_share"])
    assert dict(run.summary_rows())["pull_share"].endswith("%)")
    back = Run.load(run.save(tmp_path / "run"))  # kept on disk like the others
    assert back.summary["pull_share"] == pytest.approx(s["pull_share"])


def test_without_a_workload_there_is_no_start_up_to_share():
    image = generate(SyntheticSpec(seed=8, compressed_size=8 * MIB, layers=2))
    s = as_run(simulate(image, "sequential")).summary
    assert math.isnan(s["pull_share"]) and s["fraction_read"] == 0


def test_a_real_lazy_pull_carries_both_numbers(tmp_path):
    lab = pytest.importorskip("soci_lab.lab")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")
    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.images.build import build_image
    from soci_lab.netlab import EmbeddedRegistry
    from soci_lab.sim import write_trace

    src = tmp_path / "l0" / "d"
    src.mkdir(parents=True)
    for i in range(4):
        (src / f"f{i}").write_bytes(bytes(range(256)) * 400 * (i + 1))
    build_image([tmp_path / "l0"], f"oci:{tmp_path / 'layout'}:t")
    create_soci_index(f"oci:{tmp_path / 'layout'}:t", min_layer_size=0, span_size=64 << 10)
    write_trace([Access(0.0, "read", "/d/f1", 0, 50_000), Access(0.0, "read", "/d/f3", 0, 4096)], tmp_path / "t.csv")
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        run = lab.pull(f"{reg.url.split('://', 1)[1]}/img:t", "lazy", trace=str(tmp_path / "t.csv"))
    s = run.summary
    assert 0 < s["pull_share"] < 1 and s["pull_share"] == pytest.approx(s["ready_s"] / s["workload_done_s"])
    assert s["bytes_read"] == 50_000 + 4096
    assert s["fraction_read"] == pytest.approx(s["bytes_read"] / s["image_bytes"])
