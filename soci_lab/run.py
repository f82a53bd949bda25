"""The run object's public name: :class:`Run`, :func:`as_run` and friends live in :mod:`soci_lab.analysis.run`.

The run is summarised, drawn and reported by the analysis room, and the report takes runs, so the type
lives there (one direction between ``analysis`` and ``run``); ``from soci_lab.run import Run`` stays the
way users and notebooks spell it.
"""

from __future__ import annotations

from .analysis.run import FORMAT, TIMELINE_DPI, Run, as_run, collect_provenance, summarize

__all__ = ["FORMAT", "TIMELINE_DPI", "Run", "as_run", "collect_provenance", "summarize"]
