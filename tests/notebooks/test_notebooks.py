"""Every notebook in ``notebooks/`` runs top to bottom in a fresh kernel, and its check cells pass.

Each notebook is executed with ``nbclient`` (what nbmake uses) in small mode (``SOCI_LAB_NOTEBOOK_SCALE``
unset, or as the environment says), from the ``notebooks/`` folder. A failing cell fails the test with the
cell's source and the kernel's traceback. Notebooks are committed without outputs; that is checked too.
The wall time of each notebook is printed (``pytest -s``) and held under a budget in small mode. The kernel
is this interpreter (a kernelspec written for the test), never whatever ``python3`` kernel a machine has.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbclient  # the test extra's nbmake brings nbclient and nbformat; a missing one fails, never skips
import nbformat
import pytest
from nbclient.exceptions import CellExecutionError, CellTimeoutError

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
#: seconds one small-mode notebook may take (the brief: under ~90 s on 2 shared cores; slack for a busy host)
SMALL_BUDGET_S = 150.0
CELL_TIMEOUT_S = 600


def test_there_are_six_notebooks() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"], [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs before committing"
    assert any("assert " in c.source for c in nb.cells if c.cell_type == "code"), f"{path.name} checks nothing"


KERNEL = "soci-lab-test-python"


def this_interpreters_kernel(root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this very interpreter (the venv's), first on JUPYTER_PATH, so a machine-wide
    ``python3`` kernelspec (another Python, without soci_lab) can never be picked."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    rest = os.environ.get("JUPYTER_PATH")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(root), rest]) if rest else str(root))
    return KERNEL


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scale = os.environ.get("SOCI_LAB_NOTEBOOK_SCALE", "small")
    kernel = this_interpreters_kernel(tmp_path / "jupyter", monkeypatch)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=kernel,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        allow_errors=False,
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    wall = time.perf_counter() - t0
    print(f"{path.name}: {wall:.1f} s ({scale})")
    if scale == "small":
        assert wall < SMALL_BUDGET_S, f"{path.name} took {wall:.0f} s in small mode (budget {SMALL_BUDGET_S:.0f} s)"
