"""Every notebook in ``notebooks/`` and the README's tour run top to bottom in a fresh kernel, and show what
they draw.

Each notebook is executed with ``nbclient`` (what nbmake uses) in small mode (``SOCI_LAB_NOTEBOOK_SCALE``
unset, or as the environment says), from the ``notebooks/`` folder, with the kernel's default (inline)
backend and nothing imported first. A failing cell fails the test with the cell's source and the kernel's
traceback; every plotting cell must show exactly one PNG and no other cell any (``nbrun.display_problems``);
the last cell must state the notebook's findings. The README tour is read from README.md block by block
(one cell each) and run in an empty directory outside the clone.

The notebooks are committed *with* the outputs of a small-mode run (``scripts/notebooks`` writes them), so
a reader sees the plots without running anything: that is checked without a kernel (the outputs are not
required to equal a new run's). The wall time of each run is printed (``pytest -s``) and held under a
budget in small mode.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from nbrun import (
    code_without_comments,
    display_problems,
    execute,
    is_plotting,
    notebook_of,
    outputs_of_type,
    readme_tour_cells,
)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
#: seconds one small-mode notebook may take (the brief: under ~90 s on 2 shared cores; slack for a busy host)
SMALL_BUDGET_S = 150.0
CELL_TIMEOUT_S = 600
#: committed outputs stay small: PNGs and short tables, no dumps
MAX_NOTEBOOK_BYTES = 1_500_000


def test_the_notebooks_are_numbered() -> None:
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert {"01", "02", "03", "04", "05", "06", "07", "08"} <= set(numbers), [p.name for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers)), [p.name for p in NOTEBOOKS]


def findings_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """The last cell states the findings: a code cell that displays Markdown built from the notebook's data
    (its sentences come out of f-strings, so they carry the numbers of the run that made them)."""
    cell = nb.cells[-1]
    if cell.cell_type != "code" or "findings" not in cell.source.lower():
        return [f"{name}: the last cell is not a findings cell"]
    if not re.search(r"\bf\"|\bf'", code_without_comments(cell.source)):
        return [f"{name}: the findings are not computed (no f-string in the findings cell)"]
    markdown = [o["data"]["text/markdown"] for o in outputs_of_type(cell, "text/markdown")]
    if len(markdown) != 1:
        return [f"{name}: the findings cell showed {len(markdown)} Markdown outputs, expected 1"]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", markdown[0]) if re.search(r"\d", s)]
    return [] if len(sentences) >= 2 else [f"{name}: fewer than two findings with a number:\n{markdown[0]}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_the_outputs_of_a_small_run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name}: {path.stat().st_size} bytes of outputs"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name}: run scripts/notebooks to keep outputs"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not one top-to-bottom run: {counts}"
    errors = [c.source for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == [], f"{path.name}: committed with an error in {errors[0]!r}"
    assert any("assert " in c.source for c in code), f"{path.name} checks nothing"
    assert display_problems(nb, path.name) == []
    assert findings_problems(nb, path.name) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    scale = os.environ.get("SOCI_LAB_NOTEBOOK_SCALE", "small")
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    try:
        execute(nb, NOTEBOOKS_DIR, tmp_path, timeout=CELL_TIMEOUT_S)
    except (CellExecutionError, CellTimeoutError) as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    wall = time.perf_counter() - t0
    print(f"{path.name}: {wall:.1f} s ({scale})")
    assert display_problems(nb, path.name) == []
    assert findings_problems(nb, path.name) == []
    if scale == "small":
        assert wall < SMALL_BUDGET_S, f"{path.name} took {wall:.0f} s in small mode (budget {SMALL_BUDGET_S:.0f} s)"


def test_the_readme_tour_is_cut_into_cells() -> None:
    cells = readme_tour_cells()
    assert len(cells) >= 5, cells
    assert sum(is_plotting(nbformat.v4.new_code_cell(c)) for c in cells) >= 2
    assert not any("demo-out" in c for c in cells), "the tour must make what it reads"
    for src in cells:  # one plot per cell: a pasted cell shows what it draws
        assert len(re.findall(r"\bplot_\w+\(", code_without_comments(src))) <= 1, src


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readme_tour_runs_anywhere_and_shows_every_plot(tmp_path: Path) -> None:
    """The tour, block by block as a reader pastes it, in a fresh kernel started in an empty directory."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    nb = notebook_of(readme_tour_cells())
    try:
        execute(nb, here, tmp_path, timeout=CELL_TIMEOUT_S)
    except (CellExecutionError, CellTimeoutError) as exc:
        pytest.fail(f"the README tour failed:\n{exc}", pytrace=False)
    assert display_problems(nb, "README tour") == []
    run_cells = [c for c in nb.cells if c.source.strip() == "lazy"]
    assert run_cells, "the tour shows a run"
    (page,) = [o["data"]["text/html"] for o in outputs_of_type(run_cells[0], "text/html")]
    assert "<table>" in page and "data:image/png;base64," in page
    assert list(here.iterdir()) == [], "the tour wrote into the directory it ran in"
