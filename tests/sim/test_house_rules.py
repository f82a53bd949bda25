"""The simulator stands apart from the real data path (docs/architecture.md, "Rules of the house")."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import sys
import soci_lab.sim, soci_lab.sim.calibrate, soci_lab.sim.network, soci_lab.sim.eager, soci_lab.sim.lazy
real = sorted(m for m in sys.modules if m.split(".")[:2] in (["soci_lab", r] for r in ROOMS))
print(" ".join(real))
"""


def test_the_simulator_imports_no_real_data_path_room() -> None:
    """Importing ``soci_lab.sim`` (models, network, calibration) loads nothing of ``remote/``, ``lazy/``,
    ``unpack/`` or ``snapshot/``: constants and policies it shares with them live in leaf modules
    (``soci_lab.fastpath``, ``soci_lab.slotqueue``). A fresh interpreter, so other tests' imports do not count."""
    code = "ROOMS = ('remote', 'lazy', 'unpack', 'snapshot')\n" + _CHECK
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []
