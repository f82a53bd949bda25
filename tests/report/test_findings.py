"""The report explains itself: who won, by how much and why, in sentences computed from the runs; numbers
with units; a read-latency axis that one slow read does not take over."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from soci_lab.analysis import plot_read_cdf, summary_frame, write_report
from soci_lab.analysis.report_findings import display_summary, findings, fmt_bytes, fmt_pct, fmt_s, verdict
from soci_lab.events import EventRecorder
from soci_lab.run import Run

MB = 1_000_000
LAYERS = [("sha256:" + c * 64, n) for c, n in (("a", 16 * MB), ("b", 6 * MB), ("c", 3 * MB))]


def _eager(mode: str, rate: float, rtt: float, *, unpack_s_per_mb: float = 0.004) -> Run:
    """An eager pull: every layer downloaded (one request each, ``rtt`` + bytes/``rate``) and unpacked."""
    rec = EventRecorder(f"{mode}-{int(rate)}", strategy=mode, clock=lambda: 0.0)
    t = 0.0
    for layer, size in LAYERS:
        end = t + rtt + size / rate
        rec.emit("http_request", t, end, layer=layer, nbytes=size, status=200)
        rec.emit("apply", end, end + size / MB * unpack_s_per_mb, layer=layer, nbytes=3 * size)
        t = end
    ready = t + LAYERS[-1][1] / MB * unpack_s_per_mb
    rec.emit("ready", 0.0, ready)
    rec.emit("file_read", ready, ready + 0.0001, path="/app/x", nbytes=MB, offset=0)
    rec.emit("workload", ready, ready + 0.01)
    return Run.from_recorder(rec, image_bytes=75 * MB)


def _lazy(rate: float, rtt: float, *, mount_s: float = 0.3) -> Run:
    """A lazy pull: index, one zTOC, the small layer pulled whole, a FUSE mount, two spans on demand."""
    rec = EventRecorder(f"lazy-{int(rate)}", strategy="lazy", clock=lambda: 0.0)
    rec.emit("index_fetch", 0.0, rtt, nbytes=700)
    rec.emit("http_request", 0.0, rtt, nbytes=700, status=200)
    big = LAYERS[0][0]
    rec.emit("ztoc_fetch", rtt, 2 * rtt + 200_000 / rate, layer=big, nbytes=200_000)
    rec.emit("http_request", rtt, 2 * rtt + 200_000 / rate, nbytes=200_000, status=200)
    small, size = LAYERS[2]
    rec.emit("http_request", rtt, 2 * rtt + size / rate, layer=small, nbytes=size, status=200)
    rec.emit("mount", rtt, 2 * rtt + size / rate, layer=small, how="local")
    rec.emit("mount", rtt, rtt + mount_s, layer=big, how="lazy")
    ready = max(rtt + mount_s, 2 * rtt + size / rate)
    rec.emit("ready", 0.0, ready)
    t = ready
    for _ in range(2):
        end = t + rtt + 4 * MB / rate
        rec.emit("span_fetch", t, end, layer=big, nbytes=4 * MB)
        rec.emit("http_request", t, end, layer=big, nbytes=4 * MB, status=200)
        rec.emit("file_read", t, end, path="/app/x", nbytes=MB // 2, offset=0)
        t = end
    rec.emit("workload", ready, t + 0.001)
    return Run.from_recorder(rec, image_bytes=75 * MB)


def _runs(rate: float, rtt: float) -> list[Run]:
    return [_eager("sequential", rate, rtt), _eager("parallel", rate * 0.9, rtt), _lazy(rate, rtt)]


def test_on_a_fast_link_the_report_says_lazy_lost_to_its_fixed_costs() -> None:
    runs = _runs(rate=800 * MB, rtt=0.0005)
    said = findings(runs)
    assert said[0].startswith("Sequential finished the workload first")
    v = verdict(runs)
    assert v is not None and v.winner == "sequential" and v.lazy_won is False
    assert v.fixed_s > v.saved_s  # the cost model agrees with the outcome by construction
    why = next(s for s in said if s.startswith("Why:"))
    assert "lazy lost by" in why and fmt_s(-v.margin_s) in why
    costs = next(s for s in said if s.startswith("Lazy's fixed costs"))
    assert "1 lazy layer through FUSE (300 ms)" in costs and "2 spans fetched on demand (8.0 MB" in costs
    assert "1 layer without a zTOC" in costs


def test_on_a_slow_link_the_report_says_lazy_won_on_the_bytes_it_did_not_move() -> None:
    runs = _runs(rate=12.5 * MB, rtt=0.02)  # 100 Mbit/s, 20 ms
    said = findings(runs)
    assert said[0].startswith("Lazy finished the workload first")
    v = verdict(runs)
    assert v is not None and v.lazy_won and v.saved_s > v.fixed_s and v.eager == "sequential"
    assert "lazy won by" in said[3]
    assert re.search(r"lazy moved \d+\.\d % less", said[1])
    # "by how much": seconds and percent for every loser
    assert re.search(r"sequential \d\.\d\d s \(\+\d\.\d\d s, \+\d+ %\)", said[0])


def test_numbers_carry_units_and_never_scientific_notation(tmp_path: Path) -> None:
    assert (fmt_bytes(25_135_318), fmt_bytes(231_720), fmt_bytes(512)) == ("25.1 MB", "231.7 kB", "512 B")
    assert (fmt_s(0.0179), fmt_s(1.0695), fmt_pct(0.0601)) == ("17.9 ms", "1.07 s", "6.0 %")
    runs = _runs(rate=800 * MB, rtt=0.0005)
    table = display_summary(summary_frame(runs))
    assert "25.0 MB" in set(table["fetched over the network"])
    page = write_report(runs, tmp_path / "r", progress=False).read_text()
    assert not re.search(r"\d\.\d+e[+-]\d\d", page), "a number in scientific notation"
    assert "<h2>Findings</h2>" in page and "lazy lost by" in page
    assert re.search(r"<td>\d+(\.\d+)? ms</td>", page) and "MB</td>" in page and " %</td>" in page


def test_one_slow_read_puts_the_latency_axis_on_a_log_scale() -> None:
    """99 reads of about 1 ms and one of 40 ms: a linear axis would give the outlier 95 % of its width."""
    rec = EventRecorder("outlier", strategy="lazy", clock=lambda: 0.0)
    lat = np.r_[np.linspace(0.0008, 0.0012, 99), 0.040]
    for i, d in enumerate(lat):
        rec.emit("file_read", i * 0.05, i * 0.05 + d, path=f"/f{i}", nbytes=4096, offset=0)
    fig = plot_read_cdf(Run.from_recorder(rec))
    assert fig.axes[0].get_xscale() == "log"


@pytest.mark.parametrize("source", ["real", "sim"])
def test_findings_use_the_simulated_runs_when_there_are_no_real_ones(source: str) -> None:
    runs = _runs(rate=12.5 * MB, rtt=0.02)
    for r in runs:
        r.source = source
    v = verdict(runs)
    assert v is not None and v.source == source
    assert ("(simulated)" in v.sentences[0]) == (source == "sim")


def test_the_two_links_together_say_where_lazy_loading_pays() -> None:
    from soci_lab.demo import LINKS, regime_sentence

    verdicts = {"loopback": verdict(_runs(rate=800 * MB, rtt=0.0005)), "100Mbit-20ms": verdict(_runs(12.5 * MB, 0.02))}
    said = regime_sentence(verdicts, LINKS)
    assert said is not None and said.startswith("Together: over loopback lazy lost by ")
    assert "over 100Mbit-20ms lazy won by " in said and "pays where bytes are dear" in said
    assert re.search(r"a MB cost the eager pull \d+(\.\d+)? ms to move and unpack", said)


def test_a_lazy_pull_faster_than_its_own_bytes_at_the_eager_pace_has_no_negative_cost() -> None:
    """When the eager pull is slow per MB (a CPU-starved unpack), lazy's time can be less than its own bytes
    at that pace: the report says its fixed costs hid behind its transfers instead of printing "-444 ms"."""
    from soci_lab.demo import LINKS, regime_sentence

    runs = [_eager("sequential", 800 * MB, 0.0005, unpack_s_per_mb=0.2), _lazy(800 * MB, 0.0005, mount_s=0.01)]
    v = verdict(runs)
    assert v is not None and v.lazy_won and v.fixed_s < 0
    said = " ".join(findings(runs))
    assert "hid behind its transfers" in said and not re.search(r"-\d", said.split("simulator")[0])
    together = regime_sentence({"loopback": v, "100Mbit-20ms": v}, LINKS)
    assert together is not None and "fixed costs hidden behind its transfers" in together
    assert not re.search(r"of -\d", together)
