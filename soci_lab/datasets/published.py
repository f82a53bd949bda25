"""The published numbers of the landscape reference (``datasets/published.csv``), each with its source.

The CSV lives at the top of the repository (``datasets/``), beside the recorded traces; columns:
``system, metric, workload, value, unit, tag, source`` — ``tag`` is the reference's confidence mark
(``V`` checked against the primary source, ``S`` secondary, ``R`` read off a chart). ``SOCI_LAB_DATASETS``
points elsewhere when the package is installed without the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("system", "metric", "workload", "value", "unit", "tag", "source")


def published_path() -> Path:
    """Where ``published.csv`` is: ``$SOCI_LAB_DATASETS`` or the repository's ``datasets/``."""
    env = os.environ.get("SOCI_LAB_DATASETS")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "datasets"
    return base / "published.csv"


def published_numbers() -> pd.DataFrame:
    """The published numbers as a DataFrame (columns :data:`COLUMNS`)."""
    import pandas as pd

    path = published_path()
    if not path.exists():
        raise DatasetError(f"{path} not found; set SOCI_LAB_DATASETS to the repository's datasets/ directory")
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {', '.join(missing)}")
    return frame
