"""BENCHMARKS.md's fleet section: the scaling curve and the agreement table drawn from the fleet benchmarks'
raw results, with their commands, beside the suite's table (whose rows keep naming their conditions)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import run as suite  # noqa: E402

POINT = {"hosts": 10000, "arrivals": "poisson", "image_bytes": 1e9, "accesses": 5000, "cpu_s": 29.0, "wall_s": 95.5,
         "peak_rss_mb": 189.4, "groups": 10000, "recomputes": 3489943, "max_flows": 79414, "requests_per_host": 180,
         "ready_p50_s": 291.9, "done_p50_s": 1781.8, "done_p99_s": 1790.0}  # fmt: skip


def _cell(ratio: float) -> dict:
    x = {"real": 2.0, "sim": 2.0 * ratio, "ratio": ratio, "within": abs(ratio - 1) <= 0.15}
    return {"hosts": 8, "mode": "lazy", "real_hosts": 16, "ready_p50": x, "ready_p90": x, "workload_done_p50": x,
            "workload_done_p90": x, "bytes_real": [5], "bytes_sim": 5, "requests_real": [7], "requests_sim": 7,
            "exact": True}  # fmt: skip


def _doc() -> dict:
    scale = {"load_avg_start": [6.0], "load_avg_end": [6.5], "points": [POINT]}
    real = {"egress": "40Mbit", "image_compressed_mb": 8.6, "accesses": 96, "repeat": 2,
            "fitted_on": "6 lone pulls (N = 1) through the same proxy", "uptime_before": "load average: 6.31",
            "uptime_after": "load average: 6.00", "cells": [_cell(0.93), _cell(1.3)]}  # fmt: skip
    entry = {"error": None, "seconds": 9, "date": "2026-12-07T12:30:00+00:00", "loadavg_before": [6.0],
             "conditions": {"fs": "the shared root ext4 (/tmp)", "commit": "abc1234"}}  # fmt: skip
    return {
        "command": ".venv/bin/python benchmarks/run.py --full --only fleet_scale,fleet_real", "profile": "full",
        "date": "2026-12-07T12:30:00+00:00", "host": "vm", "cpus": 2, "loadavg": [6.0], "commit": "abc1234",
        "results_file": "r.json",
        "benchmarks": {"fleet_scale": {**entry, "rows": suite.fleet_scale_rows(scale), "raw": scale},
                       "fleet_real": {**entry, "rows": suite.fleet_real_rows(real), "raw": real}},
    }  # fmt: skip


def test_the_fleet_section_has_the_scaling_curve_and_the_agreement_table_with_their_commands() -> None:
    md = suite.markdown(_doc())
    section = md.split("## Fleet (issue 19)", 1)[1].split("## Notes", 1)[0]
    assert "benchmarks/run.py --full --only fleet_scale" in section
    assert "benchmarks/run.py --full --only fleet_real" in section
    assert "poisson | 10,000 | 29.00 s | 95.50 s | 189 MB | 10,000 |" in section
    assert "8 | lazy | ready | 2.00 s | 1.86 s | 0.93 |" in section
    assert "| 1.30 ✗ |" in section  # outside the goal: marked
    assert "6 lone pulls (N = 1)" in section
    assert not any(line.startswith("| ") for line in section.splitlines())  # the suite's table alone starts so


def test_the_fleet_rows_join_the_suite_table_with_goals_and_conditions() -> None:
    doc = _doc()
    scale = doc["benchmarks"]["fleet_scale"]["rows"]
    assert scale[0]["metric"] == "fleet sim, 10,000 hosts, poisson arrivals (CPU time)"
    assert scale[0]["met"] is True and "≤ 60 s" in scale[0]["goal"]
    real = doc["benchmarks"]["fleet_real"]["rows"]
    assert len(real) == 8 and [r["met"] for r in real[:4]] == [True] * 4 and real[4]["met"] is False
    md = suite.markdown(doc)
    rows = [ln for ln in md.splitlines() if ln.startswith("| fleet_")]
    assert len(rows) == 9 and all("40Mbit" in r or "simulated" in r for r in rows)
    assert all(" ext4" in r and "load " in r and "UTC" in r for r in rows)
