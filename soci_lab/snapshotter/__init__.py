"""soci_lab as a containerd snapshotter: the snapshots gRPC API served on a unix socket (a proxy plugin).

    sn = Snapshotter("/var/lib/soci-lab-snapshotter")
    server = SnapshotterServer(sn, "/run/soci-lab/snapshotter.sock").start()   # until server.stop()

Modules: :mod:`._api` (containerd's generated stubs), :mod:`.metastore` (snapshot table in SQLite),
:mod:`.filters` (Walk filters), :mod:`.core` (the overlayfs layout and the API), :mod:`.service` (gRPC),
:mod:`.eventlog` (events to a .jsonl file as they happen). The command line is ``soci-lab snapshotter``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from .core import Mount, Snapshotter, disk_usage
from .metastore import MetaStore, SnapshotExists, SnapshotInfo, SnapshotNotFound, SnapshotPrecondition
from .service import SnapshotterServer, client


def layer_server_pids(root: str | Path) -> list[int]:
    """PIDs of the lazy layer servers serving under ``root`` (each writes its stdout to ``…/serve/server.log``).

    They outlive a daemon on purpose (containers keep their rootfs across a restart), so cleanup finds
    them by what they have open rather than by parentage."""
    target = str(Path(root).resolve()) + os.sep
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            out = os.readlink(proc / "fd" / "1")
        except OSError:
            continue
        if out.startswith(target) and out.endswith(f"{os.sep}server.log"):
            pids.append(int(proc.name))
    return pids


def remove_root(root: str | Path, *, timeout: float = 10.0) -> None:
    """Delete a snapshotter root (its daemon stopped): stop its layer servers, unmount what is still
    mounted under it, remove it. Nothing of it is left, running or mounted."""
    from ..snapshot.overlay import umount_tree

    root = Path(root)
    if not root.exists():
        return
    pids = layer_server_pids(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # a server unmounts its layer and writes its last events
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    umount_tree(root)
    shutil.rmtree(root)


__all__ = [
    "MetaStore",
    "Mount",
    "SnapshotExists",
    "SnapshotInfo",
    "SnapshotNotFound",
    "SnapshotPrecondition",
    "Snapshotter",
    "SnapshotterServer",
    "client",
    "disk_usage",
    "layer_server_pids",
    "remove_root",
]
