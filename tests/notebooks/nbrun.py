"""Running notebooks in a fresh kernel of this interpreter, and reading what their cells displayed.

Shared by the notebook tests and ``scripts/notebooks`` (which keeps the outputs in the repository). The
kernel is this interpreter (a kernelspec written for the run), never whatever ``python3`` kernel a machine
has; pyplot's backend is whatever a fresh Jupyter kernel gets by default (the inline one), and nothing
imports pyplot before the notebook does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbclient  # the test extra's nbmake brings nbclient and nbformat; a missing one fails, never skips
import nbformat

KERNEL = "soci-lab-test-python"
REPO = Path(__file__).resolve().parents[2]

#: a call that draws: any ``plot_*`` function or method, or a figure made to draw into
PLOT_CALL = re.compile(r"\b(plot_\w+|subplots)\(")


@contextmanager
def this_interpreters_kernel(root: Path) -> Iterator[str]:
    """A kernelspec running this very interpreter (the venv's), first on JUPYTER_PATH while the block runs."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "PYDEVD_DISABLE_FILE_VALIDATION", "MPLBACKEND")}
    rest = saved["JUPYTER_PATH"]
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root), rest]) if rest else str(root)
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    os.environ.pop("MPLBACKEND", None)  # the kernel's own default: matplotlib-inline
    try:
        yield KERNEL
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(nb: Any, cwd: Path, scratch: Path, *, timeout: int = 600) -> Any:
    """Run ``nb`` top to bottom in a fresh kernel started in ``cwd``; its outputs are filled in place."""
    with this_interpreters_kernel(scratch / "jupyter") as kernel:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}, allow_errors=False
        )
        client.execute()
    return nb


def code_without_comments(source: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


def is_plotting(cell: Any) -> bool:
    """A code cell that draws a figure (a ``plot_*`` call or a figure to draw into)."""
    return cell.cell_type == "code" and bool(PLOT_CALL.search(code_without_comments(cell.source)))


def outputs_of_type(cell: Any, mime: str) -> list[Any]:
    return [o for o in cell.get("outputs", []) if mime in o.get("data", {})]


def display_problems(nb: Any, name: str) -> list[str]:
    """Every plotting cell shows exactly one PNG, and no other cell shows any (a figure shown twice, or a
    figure shown as ``<Figure size …>`` text, is a problem)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        pngs = len(outputs_of_type(cell, "image/png"))
        want = 1 if is_plotting(cell) else 0
        if pngs != want:
            problems.append(f"{name} cell {i}: {pngs} image/png outputs, expected {want}:\n{cell.source}")
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            if "image/png" not in out.get("data", {}) and re.search(r"<(\w*Figure|Axes)\b", str(text)):
                problems.append(f"{name} cell {i}: a figure shown as text {text!r}")
    return problems


def readme_tour_cells(readme: Path = REPO / "README.md") -> list[str]:
    """The README tour's Python blocks, in order: each block is one notebook cell a reader pastes."""
    text = readme.read_text()
    start = text.index("## A five-minute tour")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return [m.group(1).strip("\n") for m in re.finditer(r"```python\n(.*?)```", section, re.S)]


def notebook_of(cells: list[str]) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nb


def refresh(path: Path, scratch: Path) -> float:
    """Run the notebook at ``path`` (small mode unless the environment says otherwise) and write it back
    with its outputs, without timing metadata and with its own kernelspec; returns the wall time."""
    import time

    nb = nbformat.read(path, as_version=4)
    metadata = dict(nb.metadata)
    t0 = time.perf_counter()
    with this_interpreters_kernel(scratch / "jupyter") as kernel:
        client = nbclient.NotebookClient(
            nb,
            timeout=900,
            kernel_name=kernel,
            resources={"metadata": {"path": str(path.parent)}},
            allow_errors=False,
            record_timing=False,
        )
        client.execute()
    nb.metadata = nbformat.from_dict({**metadata, "language_info": nb.metadata.get("language_info", {})})
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """``scripts/notebooks [NAME …]``: run the notebooks (all, or those whose file name contains a NAME) one
    at a time and keep their outputs in the files, so a reader sees them without running anything."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="scripts/notebooks", description=main.__doc__)
    parser.add_argument("names", nargs="*", help="run only the notebooks whose file name contains one of these")
    args = parser.parse_args(argv)
    paths = [
        p
        for p in sorted((REPO / "notebooks").glob("*.ipynb"))
        if not args.names or any(n in p.name for n in args.names)
    ]
    if not paths:
        parser.error(f"no notebook matches {' '.join(args.names)}")
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="soci-lab-nb-") as scratch:
            wall = refresh(path, Path(scratch))
        problems = display_problems(nbformat.read(path, as_version=4), path.name)
        print(f"{path.name}: {wall:.1f} s, {path.stat().st_size / 1e3:.0f} kB" + "".join(f"\n  {p}" for p in problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
