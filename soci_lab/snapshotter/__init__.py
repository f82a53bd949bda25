"""soci_lab as a containerd snapshotter: the snapshots gRPC API served on a unix socket (a proxy plugin).

    sn = Snapshotter("/var/lib/soci-lab-snapshotter")
    server = SnapshotterServer(sn, "/run/soci-lab/snapshotter.sock").start()   # until server.stop()

Modules: :mod:`._api` (containerd's generated stubs), :mod:`.metastore` (snapshot table in SQLite),
:mod:`.filters` (Walk filters), :mod:`.core` (the overlayfs layout and the API), :mod:`.service` (gRPC),
:mod:`.eventlog` (events to a .jsonl file as they happen). The command line is ``soci-lab snapshotter``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .core import Mount, Snapshotter, disk_usage
from .metastore import MetaStore, SnapshotExists, SnapshotInfo, SnapshotNotFound, SnapshotPrecondition
from .service import SnapshotterServer, client


def remove_root(root: str | Path) -> None:
    """Delete a snapshotter root (its daemon stopped): unmount anything still mounted under it, then remove it."""
    from ..snapshot.overlay import umount_tree

    root = Path(root)
    if not root.exists():
        return
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
    "remove_root",
]
