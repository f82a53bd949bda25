"""The main job, as a new user runs it: `soci-lab demo` compares the pulls over loopback and over the shaping
proxy at a cloud-like link (100 Mbit/s, 20 ms), and writes a report per link plus an overview that says
in computed sentences what each link and the two together show."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SOCI_LAB = str(Path(sys.executable).with_name("soci-lab"))
LINKS = ("loopback", "100Mbit-20ms")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run([SOCI_LAB, "demo", "--out", str(out), "--json"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads(proc.stdout)


def test_report_files_and_every_plot_are_written(demo):
    out, result = demo
    assert Path(result["report"]) == out / "report.html"
    overview = (out / "report.html").read_text()
    for link in LINKS:
        assert f'href="{link}/report.html"' in overview
        html = (out / link / "report.html").read_text()
        pngs = sorted(p.name for p in (out / link).glob("*.png"))
        assert {"bytes_over_time.png", "read_cdf.png", "real_vs_sim.png", "summary.png"} <= set(pngs)
        assert sum(name.startswith("timeline_") for name in pngs) == 6  # 3 modes x real/sim
        for name in pngs:
            assert name in html, f"{name} is not in the {link} report"
        assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", html)) >= len(pngs)
        events = pd.read_csv(out / link / "events.csv")
        assert set(events["source"]) == {"real", "sim"}
    assert set(pd.read_csv(out / "events.csv")["source"]) == {"real", "sim"}


def test_the_overview_explains_both_regimes_with_units(demo):
    """Who won on each link, by how much and why, and what the two links show together — computed, with
    units, never a number in scientific notation."""
    out, _ = demo
    page = (out / "report.html").read_text()
    assert not re.search(r"\d\.\d+e[+-]\d\d", page)
    assert "What the two links show" in page and "Together: over loopback lazy " in page
    assert re.search(r"over 100Mbit-20ms lazy (won|lost) by \d", page)
    for sentence in ("finished the workload first", "Lazy moved", "Lazy&#x27;s fixed costs", "Why: "):
        assert page.count(sentence) == 2, sentence  # once per link
    assert re.search(r"<td>\d+\.\d MB</td>", page) and re.search(r"<td>\d+\.\d %</td>", page)
    for link in LINKS:
        sub = (out / link / "report.html").read_text()
        shown = sub.split("<h2>Runs</h2>")[0]  # the runs' raw config and provenance JSON follow
        assert "<h2>Findings</h2>" in shown and not re.search(r"\d\.\d+e[+-]\d\d", shown)


def test_the_demo_report_opens_in_headless_chromium(demo, tmp_path, record_property):
    """The page a new user opens: rendered by Debian's chromium without errors; the screenshot is kept."""
    from browser import screenshot_page

    out, _ = demo
    shot = screenshot_page(out / "report.html", tmp_path, name="demo-report.png")
    record_property("screenshot", str(shot))


def test_summary_has_every_mode_real_and_simulated_on_each_link(demo):
    out, result = demo
    summary = pd.read_csv(out / "summary.csv")
    for column in ("strategy", "source", "ready_s", "workload_done_s", "total_s", "bytes_fetched", "requests",
                   "bytes_written", "fraction_read", "network"):
        assert column in summary.columns
    got = {(r.strategy.split("+")[0], r.source, r.network) for r in summary.itertuples()}
    assert got == {(m, s, n) for m in ("lazy", "parallel", "sequential") for s in ("real", "sim") for n in LINKS}
    assert len(result["summary"]) == 12
    for link in LINKS:
        assert len(pd.read_csv(out / link / "summary.csv")) == 6


def test_lazy_fetches_less_than_eager_and_the_model_agrees_on_eager_requests(demo):
    out, _ = demo
    s = pd.read_csv(out / "summary.csv")
    s["mode"] = s["strategy"].str.split("+").str[0]
    for link in LINKS:
        row = {(r.mode, r.source): r for r in s[s["network"] == link].itertuples()}
        assert row["lazy", "real"].bytes_fetched < row["parallel", "real"].bytes_fetched
        assert row["parallel", "real"].bytes_fetched == row["sequential", "real"].bytes_fetched
        for mode in ("parallel", "sequential"):
            assert row[mode, "sim"].requests == row[mode, "real"].requests
            assert row[mode, "sim"].bytes_fetched == row[mode, "real"].bytes_fetched
    # every mode, on every link, read the same start-up files
    assert len(set(s["fraction_read"].round(6))) == 1 and s["fraction_read"].iloc[0] > 0


def test_the_cloud_link_is_really_shaped(demo):
    """Over the proxy no real pull can beat 100 Mbit/s: its workload is done no sooner than its bytes take."""
    out, _ = demo
    s = pd.read_csv(out / "summary.csv")
    cloud = s[(s["network"] == "100Mbit-20ms") & (s["source"] == "real")]
    assert len(cloud) == 3
    assert (cloud["workload_done_s"] >= cloud["bytes_fetched"] / 12.5e6).all(), cloud


def test_trace_is_the_sample_apps_startup_reads(demo):
    out, _ = demo
    trace = pd.read_csv(out / "startup-trace.csv")
    assert list(trace.columns) == ["t_s", "op", "path", "offset", "size"]
    reads = trace[trace["op"] == "read"]
    assert "/opt/data/model.bin" in set(reads["path"])
    assert reads.loc[reads["path"] == "/opt/data/model.bin", "size"].iloc[0] == 2 << 20
    assert (reads["path"].str.startswith("/app/docs/")).sum() >= 10


def test_the_model_replays_the_trace_back_to_back_as_the_real_runs_do(demo):
    """The real runs replay the trace without its recorded pauses (lab.pull's speed=None); the simulated
    eager runs, whose reads all hit the local tree, must not wait out the trace's timestamps either."""
    out, _ = demo
    span = pd.read_csv(out / "startup-trace.csv")["t_s"].agg(lambda t: t.max() - t.min())
    s = pd.read_csv(out / "summary.csv")
    s["mode"] = s["strategy"].str.split("+").str[0]
    sim = s[(s["source"] == "sim") & s["mode"].isin(["parallel", "sequential"])]
    assert span > 0.05 and len(sim) == 4
    assert ((sim["workload_done_s"] - sim["ready_s"]) < 0.5 * span).all(), (span, sim)


def test_demo_runs_where_nothing_can_be_mounted_and_says_so(tmp_path):
    """Root without CAP_SYS_ADMIN (as in many containers) cannot mount: the demo still runs, lazily through
    the library's reader, skips the eager modes and says why — in its JSON, in notes.txt and in the report."""
    out = tmp_path / "out"
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", SOCI_LAB, "demo", "--out", str(out),
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["skipped"]) == {"parallel", "sequential"}
    assert all("CAP_SYS_ADMIN" in why for why in result["skipped"].values())
    assert any("library's reader" in note for note in result["notes"])
    assert "library's reader" in (out / "notes.txt").read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert set(zip(summary["strategy"], summary["source"], summary["network"], strict=True)) == {
        ("lazy", s, n) for s in ("real", "sim") for n in LINKS
    }
    for link in LINKS:
        per = summary[summary["network"] == link]
        real, sim = (per[per["source"] == s].iloc[0] for s in ("real", "sim"))
        # without FUSE (no kernel read-ahead) the reader fetches exactly the spans the model fetches
        assert real["requests"] == sim["requests"] and real["bytes_fetched"] == sim["bytes_fetched"]
        assert (out / link / "report.html").is_file()
    assert (out / "report.html").is_file()
