"""Open an HTML page in Debian's headless chromium and check the screenshot (shared by the test rooms).

The screenshot is kept with the test's files, and copied into ``$SOCI_LAB_TEST_ARTIFACTS`` when that is set,
so a CI run can keep it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def screenshot_page(page: Path, workdir: Path, *, name: str = "shot.png", size: tuple[int, int] = (1280, 2000)) -> Path:
    """Render ``page`` in chromium into ``workdir/name``; fail on page errors or a nearly blank picture."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed; scripts/setup.sh installs it (APT_PACKAGES)")
    shot = workdir / name
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}", f"--screenshot={shot}",
           f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=workdir)
    (workdir / "chromium.stderr.txt").write_text(proc.stderr)
    print(f"report screenshot: {shot}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    page_error = re.compile(r"Uncaught|net::ERR_|Failed to load resource")
    errors = [line for line in proc.stderr.splitlines() if page_error.search(line)]
    assert not errors, errors
    assert shot.is_file() and shot.stat().st_size > 10_000
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (size[1], size[0])
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.05, f"screenshot is nearly blank ({non_white:.1%} non-white pixels)"
    assert len(np.unique(np.round(pixels.mean(axis=2), 2))) > 20  # text, tables, figures: many grey levels
    keep = os.environ.get("SOCI_LAB_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"{page.parent.name}-{name}")
    return shot
