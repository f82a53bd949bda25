"""BENCHMARKS.md tells one story: every row names its conditions (file system, network, load, when and on
which commit), and a stale entry can be removed from the results with its reason kept and shown."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import run as suite  # noqa: E402


def _row(metric: str, **extra: object) -> dict:
    return {**suite.row(metric, "s", [1.0, 1.2], [2.0, 2.2], peer_name="peer"), **extra}


def _doc() -> dict:
    return {
        "command": ".venv/bin/python benchmarks/run.py --full", "profile": "full", "date": "2026-11-28T06:00:00+00:00",
        "host": "vm", "cpus": 2, "loadavg": [0.3], "commit": "abc1234", "results_file": "r.json",
        "benchmarks": {
            # an entry from before conditions were recorded: its raw result and its metric say what they can
            "lazy_vs_eager": {"rows": [_row("workload done, pandas, 100Mbit+20ms: lazy")], "raw": {},
                              "error": None, "seconds": 9, "date": "2026-11-27T19:37:21+00:00",
                              "loadavg_before": [5.1, 5.5, 5.9]},
            "eager": {"rows": [_row("eager parallel pull+unpack")], "raw": {"fs": "fresh"}, "error": None,
                      "seconds": 9, "date": "2026-11-28T06:58:45+00:00", "loadavg_before": [0.3, 0.6, 0.9]},
            "lazy": {"rows": [_row("lazy mount to ready")], "raw": [], "error": None, "seconds": 9,
                     "date": "2026-11-28T07:00:00+00:00", "loadavg_before": [0.2, 0.2, 0.2],
                     "conditions": {"fs": "ext4 (/)", "commit": "def5678"}},
        },
    }  # fmt: skip


def _table_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| benchmark")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def test_every_row_names_its_file_system_network_load_and_commit(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(suite, "SECTIONS", tmp_path)  # the suite's own table only (no committed sections)
    md = suite.markdown(_doc())
    assert "| benchmark | metric | ours | peer | ratio | goal | met? | conditions |" in md
    rows = {r[0]: r for r in _table_rows(md)}
    assert set(rows) == {"lazy_vs_eager", "eager", "lazy"}
    lve, eager, lazy = rows["lazy_vs_eager"][-1], rows["eager"][-1], rows["lazy"][-1]
    assert "100Mbit+20ms" in lve and "load 5.1 (busy) on 2 CPUs" in lve and "2026-11-27 19:37 UTC" in lve
    assert "shared root ext4" in lve
    assert re.search(r"`(≈[0-9a-f]{7}|unknown)`$", lve)  # not recorded: the commit that was HEAD then
    assert eager.startswith("a new ext4 per run; loopback; load 0.3 on 2 CPUs")
    assert lazy.startswith("ext4 (/); loopback; load 0.2 on 2 CPUs") and "`def5678`" in lazy


def test_a_stale_entry_is_dropped_with_its_reason(tmp_path: Path) -> None:
    results, md = tmp_path / "r.json", tmp_path / "BENCHMARKS.md"
    results.write_text(json.dumps(_doc()))
    assert suite.main(["--render", str(results), "--md", str(md), "--drop", "lazy_vs_eager", "load 5.1, old code"]) == 0
    doc = json.loads(results.read_text())
    assert "lazy_vs_eager" not in doc["benchmarks"]
    assert doc["removed"]["lazy_vs_eager"]["reason"] == "load 5.1, old code"
    text = md.read_text()
    assert "| lazy_vs_eager |" not in text
    assert "## Removed" in text and "- **lazy_vs_eager**" in text and "load 5.1, old code" in text


def test_the_committed_table_has_no_stale_lazy_vs_eager_rows_and_names_every_rows_conditions() -> None:
    """The contradiction the issue found (python-pandas over loopback: lazy 5.17 s vs parallel 8.99 s in one
    table, 3.14 s vs 1.42 s in another) is gone, and no row of the committed table lacks its conditions."""
    md = (REPO / "BENCHMARKS.md").read_text()
    for cells in _table_rows(md):
        assert not (cells[0] == "lazy_vs_eager" and "2026-11-27 19:37" in cells[-1]), cells
        assert len(cells) == 8, cells
        assert " ext4" in cells[-1] and "load " in cells[-1] and "UTC" in cells[-1], cells


def test_a_section_of_a_benchmark_run_on_its_own_is_kept_after_the_table(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A benchmark outside the suite (snapshotter_startup: root, containerd) writes its section into
    benchmarks/sections/; every render of the table appends it, so a re-run of the suite does not drop it."""
    (tmp_path / "b.md").write_text("## b section\n\nsecond\n")
    (tmp_path / "a.md").write_text("## a section\n\nfirst\n")
    monkeypatch.setattr(suite, "SECTIONS", tmp_path)
    text = suite.markdown(_doc())
    assert text.index("## Notes") < text.index("## a section") < text.index("## b section")
    assert text.endswith("second\n")
