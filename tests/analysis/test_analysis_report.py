"""The report: its files, the summary.csv contract, embedded PNGs, and a render in real headless Chromium."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
from analysis_synth import make_events
from browser import screenshot_page

from soci_lab.analysis import write_report
from soci_lab.events import read_events

log = logging.getLogger(__name__)

CONTRACT = ["strategy", "source", "ready_s", "workload_done_s", "total_s", "bytes_fetched", "requests",
            "bytes_written", "fraction_read"]  # fmt: skip


def sweep() -> pd.DataFrame:
    return pd.DataFrame(
        [{"span_mib": s, "rtt_ms": r, "ready_s": s * r / 100} for s in (1, 4, 16) for r in (2, 20, 200)]
    )


@pytest.fixture(scope="module")
def report(synthetic_runs: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    sweeps = {"span x rtt": {"frame": sweep(), "x": "span_mib", "y": "rtt_ms", "value": "ready_s"}}
    return write_report(synthetic_runs, out, title="synthetic <runs> & co", sweeps=sweeps, progress=False)


def test_report_files(report: Path, synthetic_runs: list) -> None:
    out = report.parent
    assert report.name == "report.html" and report.is_file()
    names = {p.name for p in out.iterdir()}
    assert {"summary.csv", "events.csv", "summary.png", "bytes_over_time.png", "read_cdf.png",
            "real_vs_sim.png", "heatmap_span-x-rtt.png"} <= names  # fmt: skip
    assert len([n for n in names if n.startswith("timeline_")]) == len(synthetic_runs)


def test_summary_csv_has_the_contract_columns(report: Path, synthetic_runs: list) -> None:
    summary = pd.read_csv(report.parent / "summary.csv")
    assert list(summary.columns[: len(CONTRACT)]) == CONTRACT
    assert len(summary) == len(synthetic_runs)
    assert set(summary["source"]) == {"real", "sim"}
    lazy_real = summary[(summary["strategy"] == "lazy") & (summary["source"] == "real")].iloc[0]
    run = next(r for r in synthetic_runs if r.strategy == "lazy" and r.source == "real")
    assert lazy_real["ready_s"] == pytest.approx(run.summary["ready_s"])
    assert lazy_real["bytes_fetched"] == run.summary["bytes_fetched"]


def test_events_csv_holds_every_run(report: Path, synthetic_runs: list) -> None:
    events = read_events(report.parent / "events.csv")
    assert len(events) == sum(len(r.events) for r in synthetic_runs)
    assert set(events["run_id"]) == {r.run_id for r in synthetic_runs}


def test_html_embeds_and_links_every_png(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    pngs = sorted(p for p in report.parent.glob("*.png"))
    assert pngs
    for png in pngs:
        assert f'href="{png.name}"' in page, png.name
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert "synthetic &lt;runs&gt; &amp; co" in page and "<runs>" not in page  # title escaped
    assert "<script" not in page.lower()


def test_progress_bar_on_request(synthetic_runs: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    write_report(synthetic_runs[:2], tmp_path, progress=True)
    assert "report figures" in capsys.readouterr().err


def test_report_of_recorders_and_frames(tmp_path: Path) -> None:
    """write_report accepts anything as_run does: here bare event frames."""
    path = write_report([make_events("lazy"), make_events("parallel")], tmp_path, progress=False)
    summary = pd.read_csv(path.parent / "summary.csv")
    assert sorted(summary["strategy"]) == ["lazy", "parallel"]
    assert not (path.parent / "real_vs_sim.png").exists()  # one source only: no comparison figure


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path, record_property) -> None:
    """The page opens in Debian's chromium (installed by scripts/setup.sh) and is not blank."""
    shot = screenshot_page(report, tmp_path)
    record_property("screenshot", str(shot))
    log.warning("report screenshot: %s", shot)


def test_report_of_runs_without_reads_or_ready(tmp_path: Path) -> None:
    """An empty run and a run of bare requests still give every file; missing numbers are blank, not 'nan'."""
    from soci_lab.events import EventRecorder
    from soci_lab.run import Run

    empty = Run.from_recorder(EventRecorder("empty", source="real", strategy="lazy", clock=lambda: 0.0))
    rec = EventRecorder("requests-only", source="sim", strategy="lazy", clock=lambda: 0.0)
    rec.emit("http_request", 0.0, 1.0, nbytes=5)
    path = write_report([empty, Run.from_recorder(rec)], tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"report.html", "summary.csv", "events.csv", "read_cdf.png", "real_vs_sim.png"} <= names
    page = path.read_text()
    assert ">nan<" not in page.lower()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["ready_s"].isna().all() and list(summary["bytes_fetched"]) == [0, 5]
