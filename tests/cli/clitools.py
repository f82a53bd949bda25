"""Helpers of the CLI room's tests: run ``soci-lab`` of this checkout in a subprocess, as a user does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parents[2]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
CLI = [sys.executable, "-c", CLI_CODE]


def soci_lab(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """``soci-lab ARGS…`` in a subprocess (environment inherited); never raises on a non-zero exit."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=MAIN, timeout=timeout,
                          **kw)  # type: ignore[call-overload]
