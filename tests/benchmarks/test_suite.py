"""The benchmark suite runner end to end on tiny images: every benchmark reports, and the table is written.

Speed is measured by the suite, never asserted here: this only checks that one command produces a results
JSON holding every benchmark (with rows, no errors) and a BENCHMARKS.md table naming each of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import run as suite  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.distribution,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"),
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs Debian's docker-registry"),
    pytest.mark.timeout(600),
]


def test_tiny_suite_writes_every_benchmark(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    res = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--results-dir", str(res), "--md", str(md)],
        cwd=REPO, capture_output=True, text=True, timeout=590,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    files = list(res.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["profile"] == "tiny"
    assert set(doc["benchmarks"]) == set(suite.BENCHMARKS)
    for name, b in doc["benchmarks"].items():
        assert b["error"] is None, f"{name}: {b['error']}"
        assert b["rows"], name
        for r in b["rows"]:
            assert {"metric", "ours", "peer", "ratio", "goal", "met"} <= set(r)
    table = md.read_text()
    assert "| benchmark | metric | ours | peer | ratio | goal | met? |" in table
    for name in suite.BENCHMARKS:
        assert f"| {name} |" in table


def test_row_ratio_and_goal() -> None:
    r = suite.row("t", "s", [1.0, 2.0, 3.0], [4.0, 4.0], goal="ratio <= 0.7", check=lambda ratio, o: ratio <= 0.7)
    assert r["ours"] == 2.0 and r["peer"] == 4.0 and r["ratio"] == 0.5 and r["met"] is True
    assert r["ours_spread"] == [1.0, 3.0]
    assert suite.row("t", "s", 1.0)["met"] is None  # no goal set: neither met nor missed
    assert suite.parse_json_tail('progress\n{"a": 1}\n') == {"a": 1}


def test_rerun_commands_are_listed_once_in_the_order_of_their_last_run() -> None:
    """A day of partial re-runs joins one results file; BENCHMARKS.md's "Re-run with" names each command
    once, where it last ran (it had grown to 28 commands, most of them repeats)."""
    full, eager, sim = (f".venv/bin/python benchmarks/run.py --full{o}" for o in ("", " --only eager", " --only sim"))
    day = suite.commands(full, eager)
    for cmd in (sim, eager, sim, eager):
        day = suite.commands(day, cmd)
    assert day == f"{full}; then {sim}; then {eager}"
    doc = {"command": f"{full}; then {eager}; then {sim}; then {eager}", "profile": "tiny", "date": "d", "host": "h",
           "cpus": 2, "loadavg": [0.0], "commit": "c", "results_file": "r.json", "benchmarks": {}}  # fmt: skip
    assert f"\n    {day}\n" in suite.markdown(doc)  # a results file written before this rule
