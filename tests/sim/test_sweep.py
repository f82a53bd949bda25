"""The sweep helper on a thread pool, the default process pool and a local Dask cluster; the CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from soci_lab.cli import main
from soci_lab.errors import SimulationError
from soci_lab.sim import SUMMARY_KEYS, SyntheticSpec, generate, simulate, synthetic_trace, write_trace
from soci_lab.sim.sweep import WorkloadSpec, sweep

IMAGE = "synthetic:4,size=24MiB,layers=3,min_layer=2MiB"
GRID = {"mode": ["lazy", "parallel"], "span_size": ["1MiB", "4MiB"], "rtt": ["0ms", "20ms"]}


def _check_frame(frame: pd.DataFrame) -> None:
    assert len(frame) == 8
    assert set(SUMMARY_KEYS) <= set(frame.columns)
    assert list(frame["mode"]) == ["lazy"] * 4 + ["parallel"] * 4  # grid order kept
    assert list(frame["rtt"]) == ["0ms", "20ms"] * 4
    lazy = frame[frame["mode"] == "lazy"]
    assert (lazy["spans_fetched"] > 0).all()
    slow = frame[frame["rtt"] == "20ms"].set_index(["mode", "span_size"]).total_s
    fast = frame[frame["rtt"] == "0ms"].set_index(["mode", "span_size"]).total_s
    assert (slow > fast).all()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    with ThreadPoolExecutor(2) as ex:
        return sweep(IMAGE, GRID, workload=WorkloadSpec(fraction=0.05, seed=1), executor=ex)


def test_sweep_on_threads(reference):
    _check_frame(reference)


def test_sweep_matches_a_direct_simulation(reference):
    image = generate(SyntheticSpec.parse(IMAGE)).respan(4 * 1024 * 1024)
    trace = synthetic_trace(generate(SyntheticSpec.parse(IMAGE)), 0.05, seed=1, read_size=256 * 1024)
    from soci_lab.sim import NetworkParams, SimParams

    run = simulate(image, "lazy", workload=trace, params=SimParams(network=NetworkParams(rtt=0.02)))
    row = reference[(reference["mode"] == "lazy") & (reference.span_size == "4MiB") & (reference.rtt == "20ms")]
    assert row.iloc[0]["total_s"] == pytest.approx(run.summary["total_s"])
    assert row.iloc[0]["bytes_fetched"] == run.summary["bytes_fetched"]


def test_sweep_on_the_default_process_pool(reference):
    frame = sweep(IMAGE, GRID, workload=WorkloadSpec(fraction=0.05, seed=1))
    cols = [*GRID, *SUMMARY_KEYS]
    pd.testing.assert_frame_equal(frame[cols], reference[cols])


def test_sweep_on_a_local_dask_cluster(reference):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = sweep(IMAGE, GRID, workload=WorkloadSpec(fraction=0.05, seed=1), executor=client.get_executor())
    cols = [*GRID, *SUMMARY_KEYS]
    pd.testing.assert_frame_equal(frame[cols], reference[cols])


def test_sweep_refuses_unknown_keys():
    with pytest.raises(SimulationError, match="unknown sweep keys"):
        sweep(IMAGE, {"colour": ["blue"]})


def test_cli_simulate_json_and_events(tmp_path, capsys):
    image = generate(SyntheticSpec.parse(IMAGE))
    image_file = image.save(tmp_path / "img.json")
    trace = tmp_path / "trace.csv"
    write_trace(synthetic_trace(image, 0.1, seed=2), trace)
    events = tmp_path / "ev.jsonl"
    rc = main(
        ["simulate", "--image", str(image_file), "--mode", "lazy", "--bandwidth", "100Mbit", "--rtt", "20ms",
         "--trace", str(trace), "--events", str(events), "--json"]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(SUMMARY_KEYS) <= set(out)
    assert {"layers", "events", "source"} <= set(out)
    assert out["mode"] == "lazy" and out["source"] == "sim"
    assert out["fraction_read"] == pytest.approx(0.1, abs=0.05)
    assert {la["how"] for la in out["layers"]} <= {"lazy", "local"}
    from soci_lab.events import read_events

    frame = read_events(events)
    assert len(frame) == out["events"] and (frame.source == "sim").all()


def test_cli_simulate_errors(capsys):
    # a registry REF is read from the registry (issue 16); this one's name does not resolve: one line, at once
    assert main(["simulate", "--image", "registry.invalid/foo:1", "--mode", "lazy"]) == 1
    assert "cannot resolve host 'registry.invalid'" in capsys.readouterr().err
    assert main(["simulate", "--image", IMAGE, "--mode", "teleport"]) == 2  # usage errors return 2
    assert main(["simulate", "--image", IMAGE, "--mode", "sequential", "--rtt", "soon"]) == 2  # a usage error


def test_cli_simulate_an_oci_layout(tmp_path, capsys):
    """``--image oci:PATH:TAG``: zTOCs built from the layout's blobs; the big layer lazy, the small one local."""
    build = pytest.importorskip("soci_lab.images.build")
    import random

    rnd = random.Random(5)
    big, small = tmp_path / "big", tmp_path / "small"
    (big / "data").mkdir(parents=True)
    (small / "etc").mkdir(parents=True)
    for i in range(24):
        (big / "data" / f"f{i:02d}").write_bytes(rnd.randbytes(100_000))
    (small / "etc" / "conf").write_text("x = 1\n")
    build.build_image([big, small], f"oci:{tmp_path / 'layout'}:t")
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,op,path,offset,size\n0,open,/data/f03,0,0\n0,read,/data/f03,0,100000\n0,stat,/etc/conf,0,0\n")
    rc = main(
        ["simulate", "--image", f"oci:{tmp_path / 'layout'}:t", "--mode", "lazy", "--span-size", "256KiB",
         "--min-layer-size", "1MiB", "--trace", str(trace), "--json"]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [la["how"] for la in out["layers"]] == ["lazy", "local"]
    assert out["files_read"] == 1 and out["bytes_read"] == 100_000
    assert 1 <= out["spans_fetched"] <= 2  # 100 kB inside 256 KiB spans: one span, two if it straddles


def test_sweep_shows_progress_when_asked(reference, capsys):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        frame = sweep(IMAGE, GRID, workload=WorkloadSpec(fraction=0.05, seed=1), executor=ex, progress=True)
    err = capsys.readouterr().err
    n = len(frame)
    assert f"{n}/{n}" in err and "point" in err  # the bar reached every point
    pd.testing.assert_frame_equal(frame.drop(columns="sim_wall_s"), reference.drop(columns="sim_wall_s"))
