"""One visual language for every soci_lab plot, readable in colour and in black and white.

Strategies differ by marker and hatch as well as by colour; real and simulated runs differ by line style
(solid against dashed) and by fill (solid against hollow), so a figure printed in greyscale still tells
them apart. Colours come from 'cividis', whose lightness rises monotonically. Figures are made as bare
:class:`matplotlib.figure.Figure` objects (no pyplot state), so report writing works on the Agg backend in
any thread. pyplot is never imported and the global backend is never switched: PNGs are rendered on an
explicit Agg canvas. In a Jupyter kernel each figure shows exactly once (:mod:`.notebook`);
:func:`subplots` gives a notebook the same kind of figure to draw several plots into.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

CMAP = "cividis"
SEQUENTIAL_CMAP = "viridis"

#: Known strategies, in the order they are drawn; unknown ones are appended as they are met.
STRATEGY_ORDER = ["sequential", "parallel", "lazy", "lazy+prefetch"]
_MARKERS = ["s", "o", "^", "v", "D", "P", "X", "*"]
_HATCHES = ["//", "\\\\", "..", "xx", "oo", "--", "++", "**"]
_SHADES = [0.05, 0.4, 0.7, 0.9, 0.25, 0.55, 0.8, 0.15]

SOURCE_LINESTYLE = {"real": "-", "sim": "--"}
SOURCE_LABEL = {"real": "real", "sim": "simulated"}

#: The unit pattern every axis label must contain: "(s)", "[MiB]", …
UNIT_RE = re.compile(r"[\(\[][^\)\]]+[\)\]]")


@dataclass(frozen=True)
class Look:
    """How one (strategy, source) pair is drawn."""

    color: tuple[float, float, float, float]
    marker: str
    hatch: str
    linestyle: str
    filled: bool

    def line(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot`` / ``Axes.step``."""
        return {
            "color": self.color,
            "linestyle": self.linestyle,
            "marker": self.marker,
            "markerfacecolor": self.color if self.filled else "white",
            "markeredgecolor": self.color,
        }

    def bar(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.bar``: real bars filled, simulated bars hollow, hatch by strategy."""
        return {
            "facecolor": self.color if self.filled else "white",
            "edgecolor": "black" if self.filled else self.color,
            "hatch": self.hatch,
            "linewidth": 1.0,
        }


def _strategy_index(strategy: str) -> int:
    if strategy not in STRATEGY_ORDER:
        STRATEGY_ORDER.append(strategy)
    return STRATEGY_ORDER.index(strategy)


def strategy_sort_key(strategy: str) -> int:
    """Order strategies the same way in every table and figure."""
    return _strategy_index(strategy)


def look(strategy: str, source: str = "real") -> Look:
    """The marker, hatch, colour and line style of a (strategy, source) pair."""
    import matplotlib as mpl

    i = _strategy_index(strategy)
    color = mpl.colormaps[CMAP](_SHADES[i % len(_SHADES)])
    return Look(
        color=tuple(color),  # type: ignore[arg-type]
        marker=_MARKERS[i % len(_MARKERS)],
        hatch=_HATCHES[i % len(_HATCHES)],
        linestyle=SOURCE_LINESTYLE.get(source, ":"),
        filled=source != "sim",
    )


def run_label(strategy: str, source: str) -> str:
    """``lazy (real)``, ``parallel (simulated)``."""
    return f"{strategy or '?'} ({SOURCE_LABEL.get(source, source)})"


def new_figure(width: float = 7.0, height: float = 4.0, dpi: int = 100) -> Figure:
    """A pyplot-free figure with a constrained layout, shown once at the end of a Jupyter cell."""
    from .notebook import NotebookFigure, track

    fig = NotebookFigure(figsize=(width, height), dpi=dpi, layout="constrained")
    track(fig)
    return fig


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (7.0, 4.0), **kw: Any
) -> tuple[Figure, Any]:
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, without pyplot: pass the axes to ``plot_*(ax=…)``
    and the figure shows once when the cell ends (returning ``fig`` as the cell's value shows it once too)."""
    fig = new_figure(*figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def figure_and_axes(ax: Axes | None, width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """Draw into ``ax`` when the caller gives one (their own pyplot figure), else into a new figure."""
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = new_figure(width, height)
    return fig, fig.add_subplot()


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """The figure rendered as PNG bytes (Agg canvas, nothing shown; a notebook no longer shows it by itself)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .notebook import mark_shown

    mark_shown(fig)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,…`` URI, for HTML that must stand on its own."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def has_unit(label: str) -> bool:
    """True when an axis label names its unit in parentheses or brackets."""
    return bool(UNIT_RE.search(label or ""))


def text_color_for(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (relative luminance), so annotations stay readable."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def note_empty(ax: Axes, message: str) -> None:
    """Say on the axes why nothing is drawn, instead of leaving an empty frame."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3")
