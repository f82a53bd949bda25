"""The snapshotter's bookkeeping: which snapshots exist, their kind, parent, labels and directory.

containerd's snapshot model (``snapshots.Snapshotter`` in containerd 1.6): a snapshot is *active*
(writable, made by ``Prepare``), a *view* (read-only, ``View``) or *committed* (``Commit`` turns an active
one into a read-only parent under a new name). Keys are unique across all three; a committed snapshot
may parent others; a snapshot with children cannot be removed. This module keeps that state machine in a
small SQLite database in the snapshotter's root (``metadata.db``), so a restarted daemon finds what it
served. Each snapshot has a numeric id naming its directory ``snapshots/<id>`` (as containerd's overlayfs
snapshotter has), which stays the same when an active snapshot is committed.

Errors mirror containerd's ``errdefs`` (the gRPC layer maps them to status codes): :class:`SnapshotNotFound`,
:class:`SnapshotExists`, :class:`SnapshotPrecondition`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput, SociLabError

KINDS = ("view", "active", "committed")
#: containerd's limit on one label (key + value), checked by its snapshotters alike
MAX_LABEL_BYTES = 4096


class SnapshotNotFound(SociLabError):
    """No snapshot has this key (containerd: ``errdefs.ErrNotFound``)."""


class SnapshotExists(SociLabError):
    """A snapshot with this key already exists (containerd: ``errdefs.ErrAlreadyExists``)."""


class SnapshotPrecondition(SociLabError):
    """The operation does not apply to the snapshot as it is (containerd: ``errdefs.ErrFailedPrecondition``)."""


@dataclass(slots=True)
class SnapshotInfo:
    """One snapshot as containerd's ``snapshots.Info`` describes it, plus its directory id."""

    key: str
    kind: str
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    id: int = 0
    size: int = 0
    inodes: int = 0


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as containerd accepts them: strings, each key+value at most 4096 bytes."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidInput(f"snapshot label {key!r}: keys and values must be non-empty strings")
        if len(key.encode()) + len(value.encode()) > MAX_LABEL_BYTES:
            raise InvalidInput(f"snapshot label {key!r} is longer than {MAX_LABEL_BYTES} bytes")
        out[key] = value
    return out


class MetaStore:
    """The snapshot table in ``ROOT/metadata.db``; every method is one transaction, safe across threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL,"
            " kind TEXT NOT NULL, parent TEXT NOT NULL, labels TEXT NOT NULL, created REAL NOT NULL,"
            " updated REAL NOT NULL, size INTEGER NOT NULL DEFAULT 0, inodes INTEGER NOT NULL DEFAULT 0)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: tuple) -> SnapshotInfo:
        return SnapshotInfo(
            id=row[0], key=row[1], kind=row[2], parent=row[3], labels=json.loads(row[4]),
            created=row[5], updated=row[6], size=row[7], inodes=row[8],
        )

    _COLS = "id, key, kind, parent, labels, created, updated, size, inodes"

    def _get(self, db: sqlite3.Connection, key: str) -> SnapshotInfo:
        row = db.execute(f"SELECT {self._COLS} FROM snapshots WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise SnapshotNotFound(f"snapshot {key!r} not found")
        return self._row(row)

    def get(self, key: str) -> SnapshotInfo:
        """The snapshot named ``key`` (SnapshotNotFound if none)."""
        with self._lock:
            return self._get(self._db, key)

    def chain(self, key: str) -> list[SnapshotInfo]:
        """``key``'s parents, nearest first (not ``key`` itself)."""
        with self._lock:
            out: list[SnapshotInfo] = []
            parent = self._get(self._db, key).parent
            while parent:
                info = self._get(self._db, parent)
                out.append(info)
                parent = info.parent
            return out

    def create(self, key: str, kind: str, parent: str = "", labels: Mapping[str, str] | None = None) -> SnapshotInfo:
        """Add an active or view snapshot on ``parent`` (which must be committed)."""
        if kind not in ("active", "view"):
            raise InvalidInput(f"a new snapshot is active or a view, not {kind!r}")
        if not key:
            raise InvalidInput("snapshot key must not be empty")
        labels = check_labels(labels or {})
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                raise SnapshotExists(f"snapshot {key!r} already exists")
            if parent and self._get(db, parent).kind != "committed":
                raise SnapshotPrecondition(f"parent {parent!r} is not a committed snapshot")
            db.execute(
                "INSERT INTO snapshots (key, kind, parent, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, parent, json.dumps(labels, sort_keys=True), now, now),
            )
            return self._get(db, key)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None, *, size: int = 0,
               inodes: int = 0) -> SnapshotInfo:
        """Turn active ``key`` into committed ``name`` (same directory); labels replace the active's."""
        if not name:
            raise InvalidInput("committed snapshot name must not be empty")
        labels = check_labels(labels or {})
        with self._tx() as db:
            info = self._get(db, key)
            if info.kind != "active":
                raise SnapshotPrecondition(f"snapshot {key!r} is a {info.kind} snapshot, only an active one commits")
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise SnapshotExists(f"snapshot {name!r} already exists")
            db.execute(
                "UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, updated = ?, size = ?, inodes = ?"
                " WHERE id = ?",
                (name, json.dumps(labels, sort_keys=True), time.time(), size, inodes, info.id),
            )
            return self._get(db, name)

    def update(self, key: str, labels: Mapping[str, str], fieldpaths: list[str] | None = None) -> SnapshotInfo:
        """Set labels: all of them (no field paths, or ``labels``), or only ``labels.K`` named ones."""
        labels = check_labels(labels)
        with self._tx() as db:
            info = self._get(db, key)
            new = dict(info.labels)
            if not fieldpaths:
                new = labels
            else:
                for path in fieldpaths:
                    if path == "labels":
                        new = dict(labels)
                    elif path.startswith("labels."):
                        name = path[len("labels."):]
                        if name in labels:
                            new[name] = labels[name]
                        else:
                            new.pop(name, None)
                    else:
                        raise InvalidInput(f"cannot update field {path!r} of a snapshot (only labels)")
            db.execute(
                "UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
                (json.dumps(check_labels(new), sort_keys=True), time.time(), info.id),
            )
            return self._get(db, key)

    def remove(self, key: str) -> SnapshotInfo:
        """Drop ``key`` (not if it has children). Returns what was removed; its directory is the caller's."""
        with self._tx() as db:
            info = self._get(db, key)
            if db.execute("SELECT 1 FROM snapshots WHERE parent = ?", (key,)).fetchone():
                raise SnapshotPrecondition(f"snapshot {key!r} has children, remove them first")
            db.execute("DELETE FROM snapshots WHERE id = ?", (info.id,))
            return info

    def all(self) -> list[SnapshotInfo]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLS} FROM snapshots ORDER BY id").fetchall()
        return [self._row(r) for r in rows]

    def ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}
