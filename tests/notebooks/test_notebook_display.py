"""soci_lab's figures and runs in a fresh Jupyter kernel (nbclient, the default inline backend, no pyplot
imported first): each plot shows exactly once as a PNG — as a cell's value, behind ``;``, in a loop, before
and after pyplot is imported, after ``display(fig)`` — and a run shows as HTML with a readable timeline.
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest
from nbrun import display_problems, execute, notebook_of, outputs_of_type

pytestmark = pytest.mark.timeout(300)

#: (cell source, image/png outputs it must have)
CELLS: list[tuple[str, int]] = [
    (
        "from soci_lab.run import Run\n"
        "from soci_lab.sim import SyntheticSpec, generate, simulate\n"
        "run = Run.from_sim(simulate(generate(SyntheticSpec.parse('synthetic:1,size=20MiB,layers=3')), 'lazy'))",
        0,
    ),
    ("run.plot_timeline()", 1),  # the cell's value
    ("run.plot_read_cdf();", 1),  # no value: shown when the cell ends
    ("for plot in (run.plot_bytes_over_time,):\n    fig = plot()", 1),  # made in a loop
    ("run", 0),  # HTML, its timeline inside
    ("from soci_lab.analysis import subplots\nfig, ax = subplots()\nrun.plot_bytes_over_time(ax=ax)\nfig", 1),
    ("import matplotlib.pyplot as plt", 0),
    ("run.plot_timeline()", 1),  # pyplot imported: the inline backend's formatter must not show it again
    ("fig = run.plot_read_cdf()\ndisplay(fig)\nshown = True", 1),  # shown by display(): not again at the end
    ("fig, ax = plt.subplots()\nrun.plot_read_cdf(ax=ax);", 1),  # the user's own pyplot figure: pyplot shows it
    ("from soci_lab.analysis import write_report\nwrite_report([run], 'report-out').name", 0),  # rendered, not shown
    ("from soci_lab.analysis import plot_summary\nplot_summary([run])", 1),
    ("from soci_lab.analysis import plot_real_vs_sim\nplot_real_vs_sim([run]);", 1),
    (
        "import pandas as pd\nfrom soci_lab.analysis import plot_heatmap\n"
        "sweep = pd.DataFrame({'span_mib': [1, 1, 4, 4], 'rtt_ms': [0, 20, 0, 20], 'total_s': [1.0, 2.0, 1.5, 1.2]})\n"
        "plot_heatmap(sweep, x='span_mib', y='rtt_ms', value='total_s', xlabel='span (MiB)', ylabel='RTT (ms)',\n"
        "             value_label='time (s)')",
        1,
    ),
]


def test_every_plot_function_is_tried() -> None:
    """A plot added later is added here too: every public ``plot_*`` of the analysis and of a run."""
    import soci_lab.analysis
    from soci_lab.run import Run

    names = {n for n in soci_lab.analysis.__all__ if n.startswith("plot_")} | {
        n for n in dir(Run) if n.startswith("plot_")
    }
    source = "\n".join(src for src, _ in CELLS)
    assert sorted(n for n in names if f"{n}(" not in source) == []


def png_width(data_b64: str) -> int:
    png = base64.b64decode(data_b64)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", png[16:20])[0]


def test_every_figure_shows_exactly_once_and_a_run_shows_its_timeline(tmp_path: Path) -> None:
    nb = execute(notebook_of([src for src, _ in CELLS]), tmp_path, tmp_path / "scratch")
    got = [len(outputs_of_type(cell, "image/png")) for cell in nb.cells]
    assert got == [n for _, n in CELLS], list(zip(got, [src for src, _ in CELLS], strict=True))
    problems = [p for p in display_problems(nb, "display") if "as text" in p]
    assert problems == [], problems
    (html_out,) = outputs_of_type(nb.cells[4], "text/html")
    page = html_out["data"]["text/html"]
    assert "<table>" in page and "lazy (simulated)" in page
    (uri,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert png_width(uri) >= 700, "the run's timeline is a thumbnail"
    for cell in nb.cells:
        for out in outputs_of_type(cell, "image/png"):
            assert png_width(out["data"]["image/png"]) >= 400
