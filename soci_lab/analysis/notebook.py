"""Every soci_lab figure shows exactly once in a Jupyter cell, with or without pyplot.

soci_lab draws on bare :class:`matplotlib.figure.Figure` objects (no pyplot state: report writing works on
the Agg canvas in any thread), so the inline backend's end-of-cell flush never sees them, and before
pyplot is imported IPython knows no image form of a figure at all: a cell ending in ``run.plot_timeline()``
showed ``<Figure size 800x580 with 1 Axes>``. So, when soci_lab runs in a Jupyter kernel:

- its figures are :class:`NotebookFigure` (a ``Figure`` subclass), for which a PNG formatter is registered
  on the kernel's shell — by class, so it wins over the inline backend's formatter for ``Figure`` and keeps
  working when pyplot is imported later;
- every figure a ``plot_*`` call made during a cell is shown once when the cell ends (as pyplot's figures
  are) unless it was shown already: as the cell's value, by ``display(fig)``, or rendered into HTML or a
  report (:func:`soci_lab.analysis.style.figure_png` marks it). A ``plot_*`` call in a loop or behind a
  ``;`` still shows; the cell's value never shows twice.

Outside a kernel (scripts, a plain ``python`` REPL, terminal IPython) nothing is registered and nothing is
shown: the functions just return figures.
"""

from __future__ import annotations

import base64
import sys
import threading
from typing import Any

from matplotlib.figure import Figure

__all__ = ["NotebookFigure", "kernel_shell", "mark_shown", "track"]


class NotebookFigure(Figure):
    """A soci_lab figure: a plain matplotlib ``Figure`` that a Jupyter kernel shows exactly once."""

    _soci_lab_shown = False


_lock = threading.Lock()
_pending: list[NotebookFigure] = []
_installed_on: Any = None


def kernel_shell() -> Any:
    """The IPython shell of a running Jupyter kernel, or None (IPython is never imported here)."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:  # a half-imported or broken IPython: behave as outside a kernel
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return shell


def mark_shown(fig: Figure) -> None:
    """Note that ``fig`` was shown or rendered, so the end of the cell does not show it again."""
    if isinstance(fig, NotebookFigure):
        fig._soci_lab_shown = True


def track(fig: NotebookFigure) -> None:
    """Show ``fig`` when the current cell ends unless it is shown before (no-op outside a kernel)."""
    shell = kernel_shell()
    if shell is None:
        return
    _install(shell)
    with _lock:
        _pending.append(fig)


def _png(fig: NotebookFigure) -> str:
    from .style import figure_png

    return base64.b64encode(figure_png(fig)).decode("ascii")


def _install(shell: Any) -> None:
    global _installed_on
    with _lock:
        if _installed_on is shell:
            return
        _installed_on = shell
    shell.display_formatter.formatters["image/png"].for_type(NotebookFigure, _png)
    shell.events.register("post_run_cell", _end_of_cell)


def _end_of_cell(result: Any = None) -> None:
    with _lock:
        figures = list(_pending)
        _pending.clear()
    value = getattr(result, "result", None)
    for fig in figures:
        if fig._soci_lab_shown or fig is value:
            continue
        from IPython.display import display

        display(fig)
        fig._soci_lab_shown = True
