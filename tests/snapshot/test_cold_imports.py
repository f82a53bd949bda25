"""Cold commands that draw nothing import neither matplotlib nor (on their usual path) pandas (issue 18: a cold
``umount`` spent 1.5 s importing matplotlib through ``soci_lab.analysis``, and so did the mount serving process
of a command run without the per-host service, before it reported ready).

What each process imported is read from ``python -X importtime`` (``PYTHONPROFILEIMPORTTIME=1``, inherited by
a serving process that runs as a fresh interpreter, whose stderr is its ``server.log``; modules loaded by
``importlib.import_module``, as the CLI's command groups are, are not listed)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from snaptools import soci_lab

from soci_lab.snapshot import find_state_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")

PLOTTING = ("matplotlib", "soci_lab.analysis")
FRAMES = ("pandas", "numpy", "pyarrow")


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines."""
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", stderr, re.M)}


def tops(names: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", **extra}


@pytest.mark.parametrize("service", ["1", "0"])
def test_mount_background_and_umount_import_no_plotting(small_image, mnt: Path, service: str) -> None:  # type: ignore[no-untyped-def]
    out = soci_lab("mount", small_image.ref, str(mnt), "--mode", "lazy", "--background", "--json",
                   env=env(SOCI_LAB_SERVICE=service))
    mount_mods = imported(out.stderr)
    assert "soci_lab.cli.progress" in mount_mods, "the importtime report was read"
    assert tops(mount_mods, PLOTTING + FRAMES) == set()
    state = find_state_dir(mnt)
    assert state is not None
    serving = imported((state.root / "server.log").read_text())
    if service == "0":  # the serving process is a fresh interpreter: it reported ready without plotting code
        assert "soci_lab.snapshot.filesystem" in serving
        assert tops(serving, PLOTTING) == set()
    out = soci_lab("umount", str(mnt), "--json", env=env(SOCI_LAB_SERVICE=service))
    umount_mods = imported(out.stderr)
    assert "soci_lab.snapshot.teardown" in umount_mods
    assert tops(umount_mods, PLOTTING + FRAMES) == set()


def test_umount_of_a_dead_serving_process_imports_no_plotting(small_image, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    """The teardown from the record reads the events files (pandas), but draws nothing."""
    soci_lab("mount", small_image.ref, str(mnt), "--mode", "lazy", "--background")
    record = find_state_dir(mnt).read_record()
    os.kill(record.server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while record.server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = soci_lab("umount", str(mnt), "--json", env=env())
    mods = imported(out.stderr)
    assert "soci_lab.snapshot.teardown" in mods
    assert tops(mods, PLOTTING) == set()
