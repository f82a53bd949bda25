"""The Run type: construction from recorders, frames and simulator runs; save/load; notebook display."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from analysis_synth import IMAGE_BYTES, make_events

from soci_lab.errors import AnalysisError, RunFormatError
from soci_lab.events import EventRecorder
from soci_lab.run import Run, as_run


def recorded() -> EventRecorder:
    rec = EventRecorder("rec-1", source="real", strategy="parallel", clock=lambda: 0.0)
    rec.emit("http_request", 0.0, 0.4, layer="L", nbytes=4000, status=206)
    rec.emit("chunk_download", 0.0, 0.4, layer="L", span=0, nbytes=4000)
    rec.emit("apply", 0.4, 0.7, layer="L", nbytes=9000)
    rec.emit("ready", 0.0, 0.75)
    rec.emit("file_read", 0.8, 0.81, path="/x", nbytes=300, offset=100)
    rec.emit("workload", 0.75, 0.9)
    return rec


def test_from_recorder() -> None:
    run = Run.from_recorder(recorded(), config={"http": {"timeout": 3}}, image_bytes=9000)
    assert (run.run_id, run.source, run.strategy) == ("rec-1", "real", "parallel")
    s = run.summary
    assert s["ready_s"] == 0.75 and s["workload_done_s"] == 0.9 and s["total_s"] == 0.9
    assert s["bytes_fetched"] == 4000 and s["requests"] == 1 and s["bytes_written"] == 9000
    assert s["fraction_read"] == pytest.approx(300 / 9000)
    assert run.config == {"http": {"timeout": 3}}
    prov = run.provenance
    assert prov["host"] and prov["python"] and "pandas" in prov["versions"] and prov["created"].endswith("+00:00")


def test_config_object_becomes_a_dict() -> None:
    from soci_lab.config import Config

    run = Run.from_recorder(recorded(), config=Config())
    assert isinstance(run.config, dict) and run.config == Config().to_dict()


def test_bad_source_is_refused() -> None:
    with pytest.raises(AnalysisError):
        Run("x", "virtual", "lazy", make_events("lazy"), {})


def test_save_load_round_trip(tmp_path: Path) -> None:
    run = Run.from_events(make_events("lazy"), image_bytes=IMAGE_BYTES, config={"span_size": 4194304})
    run.summary["workload_done_s"] = math.nan  # NaN must survive JSON
    out = run.save(tmp_path / "run")
    assert {p.name for p in out.iterdir()} == {"events.csv", "summary.json", "run.json"}
    json.loads((out / "summary.json").read_text())  # strict JSON: NaN written as null
    back = Run.load(out)
    assert (back.run_id, back.source, back.strategy) == (run.run_id, run.source, run.strategy)
    assert back.config == run.config and back.provenance == run.provenance
    assert math.isnan(back.summary["workload_done_s"])
    for key in ("ready_s", "bytes_fetched", "requests", "bytes_written", "fraction_read"):
        assert back.summary[key] == run.summary[key], key
    pd.testing.assert_frame_equal(back.events, run.events, check_exact=False)


def test_load_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunFormatError, match="missing"):
        Run.load(tmp_path)
    (tmp_path / "run.json").write_text('{"format": "something/else"}')
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(RunFormatError):
        Run.load(tmp_path)


def test_repr_html_has_summary_values_and_an_image() -> None:
    run = Run.from_events(make_events("lazy"), image_bytes=IMAGE_BYTES)
    page = run._repr_html_()
    s = run.summary
    assert f"{s['ready_s']:.3f} s" in page
    assert f"{s['bytes_fetched']} B" in page
    assert f">{s['requests']}<" in page
    assert f"{s['fraction_read']:.4f}" in page
    assert '<img alt="timeline' in page and 'src="data:image/png;base64,' in page


def test_plots_of_a_run_return_figures() -> None:
    run = Run.from_events(make_events("parallel"))
    for fig in (run.plot_timeline(), run.plot_read_cdf(), run.plot_bytes_over_time()):
        assert fig.axes and all(ax.get_xlabel() for ax in fig.axes)


def test_as_run_accepts_recorders_frames_and_runs() -> None:
    rec = recorded()
    assert as_run(rec).summary["bytes_fetched"] == 4000
    frame = make_events("sequential")
    assert as_run(frame).strategy == "sequential"
    run = Run.from_events(frame)
    assert as_run(run) is run
    with pytest.raises(AnalysisError):
        as_run(42)


def test_simulated_run_becomes_a_run_with_the_same_numbers() -> None:
    """The simulator's SimRun (soci_lab.sim) and the common rule agree on the shared summary keys."""
    from soci_lab import sim

    image = sim.generate(sim.SyntheticSpec(seed=3, compressed_size=40 * 1024 * 1024, layers=3))
    workload = sim.synthetic_trace(image, seed=3)
    for mode in ("sequential", "parallel", "lazy"):
        sim_run = sim.simulate(image, mode, workload=workload)
        run = as_run(sim_run)
        assert run.source == "sim" and run.strategy.startswith(mode)
        for key in ("ready_s", "workload_done_s", "total_s", "bytes_fetched", "requests"):
            assert run.summary[key] == pytest.approx(sim_run.summary[key]), (mode, key)
        assert run.provenance["reported_summary"] == sim_run.summary
        assert run.summary["fraction_read"] == pytest.approx(sim_run.summary["fraction_read"])
