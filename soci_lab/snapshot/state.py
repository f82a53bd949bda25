"""The state directory of one mounted image, and the record that lets another process unmount it.

Layout (every path the Filesystem creates lives under it, so removing it leaves nothing behind)::

    <state>/
      .soci-lab-state            the marker: soci-lab made this directory (or was given it empty) and owns
                                 what it puts in it
      mount.json                 the MountRecord: mountpoint, mode, serving pid, layer mounts and their pids
      events.jsonl               the parent's events up to ready (a --background mount writes them here)
      totals.json                written by a serving process asked to stop by ``umount`` (final numbers)
      content/                   local OCI layout: the SOCI index, zTOCs and prefetch artifacts (verified)
      unpack/                    scratch of the eager pullers (wiped at start, as upstream's <root>/unpack)
      mask/                      a top lower layer whiteing out the FUSE layers' ``.soci-snapshotter`` dirs
      upper/, work/              the overlay's writable layer (``writable=True`` mounts, e.g. ``run``)
      layers/<alg>_<hex>/
        fs/                      an unpacked layer (local, parallel or sequential)
        mnt/                     a FUSE mount point (lazy)
        serve/                   the FUSE server's spec, log and span caches
        events.jsonl             the FUSE server's events (written when it stops)

Layer directories use ``<alg>_<hex>`` rather than the digest's ``<alg>:<hex>``: overlayfs separates lower
directories with ``:``. Without ``--state-dir`` the state lives in :func:`default_state_dir` (a key of
the mountpoint's real path under :func:`state_root`); with one, a pointer file in :data:`STATE_ROOT` names it,
so ``umount MOUNTPOINT`` always finds it.

A state directory is soci-lab's alone: :meth:`StateDir.create` makes it (or takes an *empty* one it was
given) and leaves the marker in it; a directory that is not empty and has no marker is refused, so a
mistyped ``--state-dir`` never becomes a directory soci-lab later empties. :meth:`StateDir.remove` deletes
only the entries soci-lab makes (:data:`OWN_ENTRIES`), and the directory itself only when soci-lab made it;
without the marker it deletes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .removal import remove_tree

#: where state directories (and pointers to the ones given with --state-dir) live by default; the
#: environment variable ``SOCI_LAB_STATE_ROOT`` moves it (read at each use: tests set it per session)
STATE_ROOT = Path("/var/tmp/soci-lab")


def state_root() -> Path:
    """:data:`STATE_ROOT`, or ``$SOCI_LAB_STATE_ROOT`` when set."""
    env = os.environ.get("SOCI_LAB_STATE_ROOT")
    return Path(env) if env else STATE_ROOT


RECORD = "mount.json"
PARENT_EVENTS = "events.jsonl"
TOTALS = "totals.json"
UMOUNT_REQUEST = "umount-requested"
SERVER_LOG = "server.log"
#: the file that says soci-lab made (or was given empty) this state directory; JSON ``{"created_root"}``
MARKER = ".soci-lab-state"
#: every name soci-lab creates at the top of a state directory: cleanup deletes these and nothing else
OWN_ENTRIES = frozenset(
    {
        MARKER,
        RECORD,
        RECORD + ".tmp",
        PARENT_EVENTS,
        TOTALS,
        UMOUNT_REQUEST,
        SERVER_LOG,
        "content",
        "unpack",
        "sequential",
        "mask",
        "upper",
        "work",
        "layers",
        "l",
        "empty",
        "rootfs",
    }
)


def mount_key(mountpoint: str | os.PathLike[str]) -> str:
    """A short stable name for a mountpoint (its real path hashed)."""
    return hashlib.sha256(os.path.realpath(os.fspath(mountpoint)).encode()).hexdigest()[:16]


def default_state_dir(mountpoint: str | os.PathLike[str]) -> Path:
    """``STATE_ROOT/<key of the mountpoint>``."""
    return state_root() / mount_key(mountpoint)


def pointer_path(mountpoint: str | os.PathLike[str]) -> Path:
    return state_root() / f"{mount_key(mountpoint)}.json"


def layer_dirname(digest: str) -> str:
    """``sha256_<hex>``: a digest as a directory name overlayfs accepts."""
    return str(digest).replace(":", "_")


@dataclass
class ProcessRef:
    """A process we started: its pid and the kernel's start time (so a recycled pid is never signalled)."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, process_start_time(pid) or 0)

    def alive(self) -> bool:
        """Whether this very process still exists (not a zombie, not a recycled pid)."""
        st = process_start_time(self.pid)
        if st is None or st != self.start_time:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class LayerRecord:
    """One layer of a mounted image as the record keeps it (``mount_id``: its FUSE mount's, once up)."""

    digest: str
    how: str  # lazy | local | parallel | sequential
    path: str  # the directory given to overlayfs (a FUSE mountpoint or an unpacked tree)
    process: ProcessRef | None = None  # the FUSE server of a lazy layer
    events_path: str | None = None
    bytes_fetched: int = 0
    fallback: str | None = None  # why a layer meant to be lazy went local
    ready_at: float | None = None  # parent clock when its FUSE server said ready (aligns its events)
    mount_id: int | None = None  # a lazy layer's FUSE mount in /proc/self/mountinfo, once it is up


@dataclass
class MountRecord:
    """What ``umount`` needs: where things are mounted and which processes serve them."""

    mountpoint: str
    state_dir: str
    mode: str
    ref: str
    run_id: str
    owns_state_dir: bool
    server: ProcessRef | None = None  # the serving process (a --background supervisor or the foreground CLI)
    layers: list[LayerRecord] = field(default_factory=list)
    writable: bool = False
    ready_s: float | None = None
    spans_total: int = 0  # spans of the lazy layers (``umount --json``)
    #: the overlay's source name in /proc/self/mountinfo (unique to this mount, recorded before mounting)
    overlay_source: str | None = None
    overlay_id: int | None = None  # its mount id, once mounted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MountRecord:
        layers = []
        for lay in doc.get("layers", []):
            proc = lay.get("process")
            layers.append(LayerRecord(**{**lay, "process": ProcessRef(**proc) if proc else None}))
        server = doc.get("server")
        return cls(**{**doc, "layers": layers, "server": ProcessRef(**server) if server else None})


class StateDir:
    """Paths of one image's state directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    @property
    def content(self) -> Path:
        return self.root / "content"

    @property
    def unpack(self) -> Path:
        return self.root / "unpack"

    @property
    def mask(self) -> Path:
        return self.root / "mask"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    def layer(self, digest: str) -> Path:
        return self.layers / layer_dirname(digest)

    @property
    def record_path(self) -> Path:
        return self.root / RECORD

    @property
    def marker_path(self) -> Path:
        return self.root / MARKER

    def is_ours(self) -> bool:
        """Whether the marker says soci-lab made (or was given empty) this directory."""
        return self.marker_path.is_file() and not self.marker_path.is_symlink()

    def created_root(self) -> bool:
        """Whether soci-lab created the directory itself (then cleanup removes it too)."""
        try:
            return bool(json.loads(self.marker_path.read_text()).get("created_root"))
        except (OSError, ValueError, AttributeError):
            return False

    def create(self) -> StateDir:
        """Make the state directory, or take an empty one; refuse one that is not empty and not ours.

        Raises :class:`~soci_lab.errors.MountError` (nothing written) for a non-directory, a non-empty
        directory without the marker, and a directory whose record says another mount still uses it.
        """
        from ..errors import MountError

        root = self.root
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise MountError(f"state directory {root} is not a directory")
        if not root.exists():
            root.mkdir(mode=0o700, parents=True)
            self._write_marker(created_root=True)
            return self
        if self.is_ours():
            from .overlay import mounts_under

            record = self.read_record()
            busy = mounts_under(root)
            if busy:
                raise MountError(f"state directory {root} is in use: {busy[0]} is mounted in it")
            if record is not None and (record.server is not None and record.server.alive()):
                raise MountError(
                    f"state directory {root} is in use by the mount at {record.mountpoint}: "
                    f"run 'soci-lab umount {record.mountpoint}' first"
                )
            return self
        if any(root.iterdir()):
            raise MountError(
                f"state directory {root} is not empty and was not made by soci-lab: give a new or empty directory"
            )
        self._write_marker(created_root=False)
        return self

    def _write_marker(self, *, created_root: bool) -> None:
        fd = os.open(self.marker_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"created_root": created_root}, f)

    def write_record(self, record: MountRecord) -> None:
        tmp = self.root / (RECORD + ".tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, self.record_path)

    def read_record(self) -> MountRecord | None:
        try:
            return MountRecord.from_json(json.loads(self.record_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self, *, keep_root: bool = False, keep: tuple[str, ...] = ()) -> None:
        """Delete what soci-lab made here (:data:`OWN_ENTRIES`; names in ``keep`` stay), then the directory
        itself when soci-lab created it, nothing else asks to keep it (``keep_root``, ``keep``) and it is
        empty. A directory without the marker is not ours: nothing is deleted."""
        if not self.root.is_dir() or not self.is_ours():
            return
        created = self.created_root()
        for child in self.root.iterdir():
            if child.name not in OWN_ENTRIES or child.name in keep or child.name == MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                remove_tree(child, ignore_errors=True)  # any depth: iterative, fd-based
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
        if keep:
            return  # the marker stays with what is kept: a later cleanup still knows the directory is ours
        with contextlib.suppress(OSError):
            self.marker_path.unlink()
        if created and not keep_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()  # only when empty: whatever someone else put here stays


def write_pointer(mountpoint: str | os.PathLike[str], state_dir: str | os.PathLike[str]) -> None:
    """Remember where the state of ``mountpoint`` lives (only needed for a non-default state dir)."""
    state_root().mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"mountpoint": os.path.realpath(os.fspath(mountpoint)), "state_dir": os.fspath(state_dir)}
    pointer_path(mountpoint).write_text(json.dumps(doc))


def remove_pointer(mountpoint: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        pointer_path(mountpoint).unlink()
    with contextlib.suppress(OSError):
        state_root().rmdir()  # only when empty


def find_state_dir(mountpoint: str | os.PathLike[str]) -> StateDir | None:
    """The state directory of a mount made by ``soci-lab mount`` (pointer first, then the default place)."""
    try:
        doc = json.loads(pointer_path(mountpoint).read_text())
        candidate = StateDir(doc["state_dir"])
        if candidate.record_path.exists():
            return candidate
    except (OSError, ValueError, KeyError, TypeError):
        pass
    candidate = StateDir(default_state_dir(mountpoint))
    return candidate if candidate.record_path.exists() else None


__all__ = [
    "MARKER",
    "OWN_ENTRIES",
    "STATE_ROOT",
    "LayerRecord",
    "MountRecord",
    "ProcessRef",
    "StateDir",
    "default_state_dir",
    "find_state_dir",
    "layer_dirname",
    "mount_key",
    "pointer_path",
    "process_start_time",
    "remove_pointer",
    "state_root",
    "write_pointer",
]
