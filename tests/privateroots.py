"""A state root and a temporary directory of a test room's own, for fixtures that must tell their mounts,
processes and temp files from those of the other rooms' tests running on the same machine."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_roots(state: Path, tmp: Path) -> Iterator[None]:
    """While inside: ``SOCI_LAB_STATE_ROOT`` is ``state``, and ``TMPDIR`` and :data:`tempfile.tempdir` are
    ``tmp`` (this process's and every child's); afterwards all three are as they were."""
    old_env = {k: os.environ.get(k) for k in ("SOCI_LAB_STATE_ROOT", "TMPDIR")}
    old_tempdir = tempfile.tempdir
    os.environ["SOCI_LAB_STATE_ROOT"] = str(state)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = old_tempdir
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
