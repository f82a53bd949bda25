"""The snapshotter itself: containerd's overlayfs snapshot layout on top of :class:`MetaStore`.

Layout of ``ROOT`` (as containerd's overlayfs snapshotter has it, so the mounts look alike)::

    ROOT/metadata.db            the snapshot table (metastore.py)
    ROOT/snapshots/<id>/fs      the snapshot's files (an active snapshot's upperdir)
    ROOT/snapshots/<id>/work    overlayfs workdir of an active snapshot

Mounts (returned to containerd, which mounts them itself): a snapshot without parents is a bind mount of
its ``fs`` (``rw`` if active, ``ro`` if a view); an active snapshot with parents is an overlay whose
lowerdirs are its parents' ``fs``, nearest first; a view of one parent is a read-only bind of that parent;
a view of several is a lowerdir-only overlay.

Every call is one event in the run's events (``soci_lab.events``): ``mount`` for Prepare/View, ``apply``
for Commit, ``unmount`` for Remove/Cleanup, ``file_op`` for the rest, ``attrs.op`` naming the RPC.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SociLabError
from ..events import EventRecorder
from ..snapshot.overlay import umount_tree
from .filters import matcher
from .metastore import MetaStore, SnapshotExists, SnapshotInfo, SnapshotNotFound, SnapshotPrecondition
from .remote import LABEL_HOW, RemoteLayers, RemoteRequest

METADATA_DB = "metadata.db"


@dataclass(frozen=True, slots=True)
class Mount:
    """containerd's ``types.Mount``: what containerd passes to mount(2)."""

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes under ``path``, hard links counted once (as containerd's fs.DiskUsage)."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            size += st.st_blocks * 512
    return size, len(seen)


def layer_answers(path: Path) -> bool:
    """Whether a lazy layer at ``path`` is mounted and its server answers (a dead one: ENOTCONN)."""
    from ..lazy.mount import is_mounted

    if not is_mounted(path):
        return False
    try:
        os.listdir(path)
    except OSError:
        return False
    return True


class Snapshotter:
    """containerd's ``snapshots.Snapshotter`` on an overlayfs layout; the gRPC face is :mod:`.service`."""

    def __init__(self, root: str | Path, *, events: EventRecorder | None = None, remote: RemoteLayers | None = None,
                 restore: bool = True) -> None:
        """``remote`` mounts layers whose Prepare carries the remote-snapshotter labels (None: every
        Prepare is a plain one). ``restore`` re-mounts the lazy layers a previous daemon served."""
        self.root = Path(root)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.store = MetaStore(self.root / METADATA_DB)
        # "is not None": an empty recorder is falsy (it has __len__)
        self.events = events if events is not None else EventRecorder(strategy="snapshotter")
        self.remote = remote
        if remote is not None and restore:
            self.restore()

    def close(self) -> None:
        """Stop serving. Lazy layers stay mounted: each has a server process of its own, so containers on
        them keep running while the daemon restarts; ``Remove`` or ``soci-lab snapshotter cleanup`` ends them.
        Layers being pulled in parallel are cancelled (containerd's Prepare of them fails)."""
        if self.remote is not None:
            self.remote.close()
        self.store.close()

    def restore(self) -> list[str]:
        """Re-attach the lazy snapshots of a previous daemon: a layer whose server still answers is kept as
        it is (its server outlives the daemon); one whose mount is dead (ENOTCONN) or gone is mounted again,
        as upstream remounts on restart. A layer that cannot come back is reported (``error`` event) and
        left unmounted; returns the keys that failed."""
        assert self.remote is not None
        failed = []
        for info in self.store.all():
            if info.kind != "committed" or info.labels.get(LABEL_HOW) != "lazy":
                continue
            req = RemoteRequest.from_labels(info.labels)
            t0 = self.events.now()
            dest = self.fs_dir(info.id)
            if layer_answers(dest):
                self.events.emit("mount", t0, path=info.key, op="restore", how="attached")
                continue
            try:
                self.remote.unmount(dest)  # a dead FUSE mount (ENOTCONN) of the previous daemon
                if req is None:
                    raise SociLabError("its labels no longer name the image and layer")
                self.remote.mount(req, dest, self.serve_dir(info.id))
                self.events.emit("mount", t0, path=info.key, op="restore", how="remounted")
            except Exception as exc:
                failed.append(info.key)
                self.events.emit("error", t0, ok=False, error=f"restore {info.key}: {exc}", path=info.key,
                                 op="restore")
        return failed

    # -- paths and mounts ---------------------------------------------------------------------------------

    def fs_dir(self, snap_id: int) -> Path:
        return self.root / "snapshots" / str(snap_id) / "fs"

    def serve_dir(self, snap_id: int) -> Path:
        """A remote layer's FUSE server files (spec, log, events, cache)."""
        return self.root / "snapshots" / str(snap_id) / "serve"

    def work_dir(self, snap_id: int) -> Path:
        return self.root / "snapshots" / str(snap_id) / "work"

    def _mounts(self, info: SnapshotInfo) -> list[Mount]:
        parents = self.store.chain(info.key)
        if not parents:
            flag = "ro" if info.kind == "view" else "rw"
            return [Mount("bind", str(self.fs_dir(info.id)), (flag, "rbind"))]
        if info.kind == "view" and len(parents) == 1:
            return [Mount("bind", str(self.fs_dir(parents[0].id)), ("ro", "rbind"))]
        options = ["index=off"]
        if info.kind == "active":
            options += [f"workdir={self.work_dir(info.id)}", f"upperdir={self.fs_dir(info.id)}"]
        options.append("lowerdir=" + ":".join(str(self.fs_dir(p.id)) for p in parents))
        return [Mount("overlay", "overlay", tuple(options))]

    # -- the API ------------------------------------------------------------------------------------------

    def _create(self, kind: str, key: str, parent: str, labels: Mapping[str, str]) -> list[Mount]:
        t0 = self.events.now()
        try:
            info = self.store.create(key, kind, parent, labels)
            try:
                self.fs_dir(info.id).mkdir(parents=True, mode=0o755)
                if kind == "active":
                    self.work_dir(info.id).mkdir(mode=0o711)
                mounts = self._mounts(info)
            except BaseException:
                self.store.remove(key)
                shutil.rmtree(self.fs_dir(info.id).parent, ignore_errors=True)
                raise
        except Exception as exc:
            self.events.emit("mount", t0, ok=False, error=str(exc), path=key, op=kind)
            raise
        self.events.emit("mount", t0, path=key, op="Prepare" if kind == "active" else "View", parent=parent)
        return mounts

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new active (writable) snapshot ``key`` on committed ``parent``; its mounts.

        With the remote-snapshotter labels (:mod:`.remote`) the layer is mounted here and committed as
        the target, and SnapshotExists tells containerd so; if that fails the Prepare is a plain one
        (containerd then downloads and unpacks the layer itself), as upstream falls back."""
        labels = dict(labels or {})
        req = RemoteRequest.from_labels(labels) if self.remote is not None else None
        if req is not None:
            with contextlib.suppress(SnapshotNotFound):
                if self.store.get(req.target).kind == "committed":
                    raise SnapshotExists(f"target snapshot {req.target!r} already exists")
            mounts = self._create("active", key, parent, labels)
            self._prepare_remote(key, labels, req)  # raises SnapshotExists when the layer is mounted
            return mounts
        return self._create("active", key, parent, labels)

    def _prepare_remote(self, key: str, labels: dict[str, str], req: RemoteRequest) -> None:
        assert self.remote is not None
        info = self.store.get(key)
        dest, t0 = self.fs_dir(info.id), self.events.now()
        try:
            how = self.remote.mount(req, dest, self.serve_dir(info.id))
        except Exception as exc:
            self.events.emit("error", t0, ok=False, error=f"{type(exc).__name__}: {exc}", layer=req.layer,
                             path=key, op="remote", fallback="containerd")
            with contextlib.suppress(Exception):
                self.remote.unmount(dest)
            shutil.rmtree(dest, ignore_errors=True)  # nothing partial left looking like the layer
            shutil.rmtree(self.serve_dir(info.id), ignore_errors=True)
            dest.mkdir(mode=0o755)
            return
        size, inodes = (0, 0) if how == "lazy" else disk_usage(dest)
        try:
            self.store.commit(req.target, key, {**labels, LABEL_HOW: how}, size=size, inodes=inodes)
        except BaseException:
            # e.g. another Prepare of the same layer committed the target first: this copy goes entirely
            self.remote.unmount(dest)
            with contextlib.suppress(SnapshotNotFound):
                self.remove(key)
            raise
        self.events.emit("apply", t0, layer=req.layer, path=req.target, nbytes=size, op="Commit", how=how)
        raise SnapshotExists(f"target snapshot {req.target!r} already exists (mounted {how})")

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new read-only view ``key`` of committed ``parent``; its mounts."""
        return self._create("view", key, parent, labels or {})

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view."""
        info = self.store.get(key)
        if info.kind == "committed":
            raise SnapshotPrecondition(f"snapshot {key!r} is committed: it has no mounts (view or prepare on it)")
        return self._mounts(info)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> SnapshotInfo:
        """Active ``key`` becomes committed ``name``: read-only, a possible parent."""
        t0 = self.events.now()
        info = self.store.get(key)
        size, inodes = disk_usage(self.fs_dir(info.id))
        done = self.store.commit(name, key, labels or {}, size=size, inodes=inodes)
        self.events.emit("apply", t0, path=name, nbytes=size, op="Commit", key=key)
        return done

    def remove(self, key: str) -> None:
        """Forget ``key`` and delete its directory (not if it has children)."""
        t0 = self.events.now()
        info = self.store.remove(key)
        if self.remote is not None:
            # a lazy layer, or an active snapshot whose remote mount a crash interrupted (not yet labelled)
            self.remote.unmount(self.fs_dir(info.id))
        self._remove_dir(info.id)
        self.events.emit("unmount", t0, path=key, op="Remove")

    def _remove_dir(self, snap_id: int) -> None:
        d = self.root / "snapshots" / str(snap_id)
        if not d.exists():
            return
        umount_tree(d)
        # renamed first so a crash halfway leaves no half-deleted snapshot that looks whole (Cleanup ends it)
        trash = self.root / "snapshots" / f"rm-{snap_id}"
        os.replace(d, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def stat(self, key: str) -> SnapshotInfo:
        return self.store.get(key)

    def update(self, key: str, labels: Mapping[str, str], fieldpaths: Sequence[str] | None = None) -> SnapshotInfo:
        return self.store.update(key, labels, list(fieldpaths or []))

    def usage(self, key: str) -> tuple[int, int]:
        """(bytes, inodes) the snapshot itself holds: measured for an active one, kept from Commit otherwise."""
        info = self.store.get(key)
        if info.kind == "active":
            return disk_usage(self.fs_dir(info.id))
        return info.size, info.inodes

    def walk(self, filters: Sequence[str] = ()) -> list[SnapshotInfo]:
        match = matcher(filters)
        return [info for info in self.store.all() if match(info)]

    def cleanup(self) -> list[str]:
        """Delete directories no snapshot owns (left by a crash or an interrupted Remove). Returns their names."""
        t0 = self.events.now()
        known = {str(i) for i in self.store.ids()}
        gone = []
        for d in sorted((self.root / "snapshots").iterdir()):
            if d.name not in known:
                umount_tree(d)  # a lazy layer of a snapshot whose record is gone
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
        self.events.emit("unmount", t0, op="Cleanup", removed=len(gone))
        return gone


__all__ = ["Mount", "SnapshotNotFound", "Snapshotter", "disk_usage"]
