"""Fixtures of the analysis tests: synthetic runs from :mod:`analysis_synth`."""

from __future__ import annotations

import pytest
from analysis_synth import IMAGE_BYTES, STRATEGIES, make_events


@pytest.fixture(scope="session")
def synthetic_runs() -> list:
    """Six runs: sequential, parallel and lazy, each real and simulated."""
    from soci_lab.run import Run

    return [
        Run.from_events(make_events(s, src), image_bytes=IMAGE_BYTES, config={"mode": s})
        for s in STRATEGIES
        for src in ("real", "sim")
    ]
