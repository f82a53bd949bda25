"""The store's SQLite database: Hermes's three tables (hermes.md §4.4), on the standard library's sqlite3.

``image_artifacts``
    one row per (image digest ref, platform, acceleration key): where the build stands (``Building``,
    ``Ready``, ``Failed``, with the error) and, once Ready, the SOCI index (digest, media type, size,
    ``soci_version`` — always ``v1`` here, as Hermes builds).
``artifact_blobs``
    content-addressed blobs (index manifests, zTOCs, prefetch artifacts), shared between artifacts.
``artifact_layers``
    per Ready artifact, image layer → zTOC digest and size (cascade-deleted with its artifact).

:meth:`StoreDB.put_ready` re-hashes every blob it is given — empty content, or content that does not hash
to its digest, is refused with :class:`~soci_lab.errors.StoreError` before anything is written — and
writes the Ready row, the blobs and the layer rows in one transaction. One connection (WAL,
``synchronous=NORMAL``, foreign keys on), serialised by a lock, so the server loop and build threads may
both use it. Nothing is ever evicted (Hermes has no GC either). Every access first checks that the file at
``path`` is still the one opened (device and inode): a database deleted or replaced under a serving store
makes every request fail with that one line (500) instead of builds that report Ready and vanish on restart.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..oci import Digest

BUILDING, READY, FAILED = "Building", "Ready", "Failed"
STATUSES = (BUILDING, READY, FAILED)
#: ``GET /v1/artifacts`` lists at most this many rows
LIST_LIMIT = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_image_ref TEXT NOT NULL,
    image_digest_ref TEXT NOT NULL,
    image_manifest_digest TEXT NOT NULL DEFAULT '',
    image_config_digest TEXT NOT NULL DEFAULT '',
    platform TEXT NOT NULL,
    acceleration_key TEXT NOT NULL DEFAULT '',
    index_digest TEXT NOT NULL DEFAULT '',
    index_media_type TEXT NOT NULL DEFAULT '',
    index_size INTEGER NOT NULL DEFAULT 0,
    soci_version TEXT NOT NULL DEFAULT 'v1',
    span_size INTEGER NOT NULL DEFAULT 0,
    min_layer_size INTEGER NOT NULL DEFAULT 0,
    build_status TEXT NOT NULL,
    build_started_at TEXT NOT NULL DEFAULT '',
    build_finished_at TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (image_digest_ref, platform, acceleration_key)
);
CREATE INDEX IF NOT EXISTS image_artifacts_status ON image_artifacts (build_status);
CREATE TABLE IF NOT EXISTS artifact_blobs (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_layers (
    image_artifact_id INTEGER NOT NULL REFERENCES image_artifacts (id) ON DELETE CASCADE,
    layer_digest TEXT NOT NULL,
    ztoc_digest TEXT NOT NULL,
    ztoc_size INTEGER NOT NULL,
    PRIMARY KEY (image_artifact_id, layer_digest)
);
"""


def now() -> str:
    """UTC time with microseconds (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ArtifactKey:
    """What identifies one artifact row."""

    image_digest_ref: str
    platform: str
    acceleration_key: str = ""


@dataclass(frozen=True)
class ArtifactInfo:
    """The image side of an artifact row (known once the build resolved the image)."""

    source_image_ref: str
    image_manifest_digest: str = ""
    image_config_digest: str = ""
    span_size: int = 0
    min_layer_size: int = 0


@dataclass(frozen=True)
class StoredBlob:
    """A blob to keep: digest, media type and content."""

    digest: str
    media_type: str
    content: bytes


def verify_blob(blob: StoredBlob) -> None:
    """Refuse empty content or content that does not hash to its digest (Hermes's ``verifyBlob``)."""
    if not blob.content:
        raise StoreError(f"blob {blob.digest} is empty")
    try:
        want = Digest(blob.digest)
    except Exception as exc:
        raise StoreError(f"blob digest {blob.digest!r} is malformed: {exc}") from None
    got = Digest.from_bytes(blob.content, want.algorithm)
    if got != want:
        raise StoreError(f"blob {want} hashes to {got}; refused")


class StoreDB:
    """The artifact database at ``path`` (created with its tables if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            st = os.stat(self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store database {self.path}: {exc}") from None
        self._identity = (st.st_dev, st.st_ino)
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`StoreError` when the database file is no longer the one opened (deleted, or replaced
        by another file): SQLite would go on writing into the unlinked inode, and every build reported Ready
        from then on would vanish when the store restarts. Called before every read and write."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(f"the store database {self.path} was deleted while the store was serving; "
                             "nothing more is kept — restart the store") from None
        except OSError as exc:
            raise StoreError(f"the store database {self.path} cannot be checked: {exc.strerror}") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(f"the store database {self.path} was replaced by another file while the store was "
                             "serving — restart the store")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self.check()
            return self._conn.execute(sql, args).fetchall()

    # --- status -----------------------------------------------------------------------------------

    def get(self, key: ArtifactKey) -> dict[str, Any] | None:
        """The row of ``key`` as a dict, or None."""
        rows = self._query("SELECT * FROM image_artifacts WHERE image_digest_ref=? AND platform=? AND "
                           "acceleration_key=?", (key.image_digest_ref, key.platform, key.acceleration_key))
        return dict(rows[0]) if rows else None

    def has_ready(self, key: ArtifactKey) -> bool:
        """Whether ``key`` has a Ready artifact."""
        row = self.get(key)
        return row is not None and row["build_status"] == READY

    def mark_building(self, key: ArtifactKey, info: ArtifactInfo) -> bool:
        """Upsert ``key`` as Building; False (nothing changed) when it is already Ready."""
        t = now()
        with self._lock:
            self.check()
            cur = self._conn.execute(
                "INSERT INTO image_artifacts (source_image_ref, image_digest_ref, image_manifest_digest, "
                "image_config_digest, platform, acceleration_key, span_size, min_layer_size, build_status, "
                "build_started_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (image_digest_ref, platform, acceleration_key) DO UPDATE SET "
                "source_image_ref=excluded.source_image_ref, image_manifest_digest=excluded.image_manifest_digest, "
                "image_config_digest=excluded.image_config_digest, span_size=excluded.span_size, "
                "min_layer_size=excluded.min_layer_size, build_status=excluded.build_status, "
                "build_started_at=excluded.build_started_at, build_finished_at='', error='', "
                "updated_at=excluded.updated_at WHERE image_artifacts.build_status != 'Ready'",
                (info.source_image_ref, key.image_digest_ref, info.image_manifest_digest, info.image_config_digest,
                 key.platform, key.acceleration_key, info.span_size, info.min_layer_size, BUILDING, t, t, t),
            )
            return cur.rowcount > 0

    def mark_failed(self, key: ArtifactKey, info: ArtifactInfo, error: str) -> None:
        """Record a failed build of ``key`` (a Ready row stays Ready)."""
        t = now()
        with self._lock:
            self.check()
            self._conn.execute(
                "INSERT INTO image_artifacts (source_image_ref, image_digest_ref, image_manifest_digest, "
                "image_config_digest, platform, acceleration_key, build_status, build_started_at, "
                "build_finished_at, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (image_digest_ref, platform, acceleration_key) DO UPDATE SET "
                "build_status=excluded.build_status, build_finished_at=excluded.build_finished_at, "
                "error=excluded.error, updated_at=excluded.updated_at "
                "WHERE image_artifacts.build_status != 'Ready'",
                (info.source_image_ref, key.image_digest_ref, info.image_manifest_digest, info.image_config_digest,
                 key.platform, key.acceleration_key, FAILED, t, t, error, t, t),
            )

    def put_ready(
        self,
        key: ArtifactKey,
        info: ArtifactInfo,
        index: StoredBlob,
        blobs: Iterable[StoredBlob],
        layers: Iterable[tuple[str, str, int]],
    ) -> int:
        """Verify the index and every blob, then in one transaction: the Ready row (index digest, media type,
        size), the blobs and the ``(layer digest, zTOC digest, zTOC size)`` rows. Returns the row id."""
        blobs = list(blobs)
        for blob in (index, *blobs):
            verify_blob(blob)
        t = now()
        with self._lock:
            self.check()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO image_artifacts (source_image_ref, image_digest_ref, image_manifest_digest, "
                    "image_config_digest, platform, acceleration_key, index_digest, index_media_type, index_size, "
                    "soci_version, span_size, min_layer_size, build_status, build_started_at, build_finished_at, "
                    "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,'v1',?,?,?,?,?,?,?) "
                    "ON CONFLICT (image_digest_ref, platform, acceleration_key) DO UPDATE SET "
                    "source_image_ref=excluded.source_image_ref, "
                    "image_manifest_digest=excluded.image_manifest_digest, "
                    "image_config_digest=excluded.image_config_digest, index_digest=excluded.index_digest, "
                    "index_media_type=excluded.index_media_type, index_size=excluded.index_size, "
                    "span_size=excluded.span_size, min_layer_size=excluded.min_layer_size, "
                    "build_status=excluded.build_status, build_finished_at=excluded.build_finished_at, error='', "
                    "updated_at=excluded.updated_at",
                    (info.source_image_ref, key.image_digest_ref, info.image_manifest_digest,
                     info.image_config_digest, key.platform, key.acceleration_key, index.digest, index.media_type,
                     len(index.content), info.span_size, info.min_layer_size, READY, t, t, t, t),
                )
                row_id = conn.execute(
                    "SELECT id FROM image_artifacts WHERE image_digest_ref=? AND platform=? AND acceleration_key=?",
                    (key.image_digest_ref, key.platform, key.acceleration_key),
                ).fetchone()[0]
                conn.executemany(
                    "INSERT OR REPLACE INTO artifact_blobs (digest, media_type, size, content, created_at) "
                    "VALUES (?,?,?,?,?)",
                    [(b.digest, b.media_type, len(b.content), b.content, t) for b in (index, *blobs)],
                )
                conn.execute("DELETE FROM artifact_layers WHERE image_artifact_id=?", (row_id,))
                conn.executemany(
                    "INSERT INTO artifact_layers (image_artifact_id, layer_digest, ztoc_digest, ztoc_size) "
                    "VALUES (?,?,?,?)", [(row_id, *layer) for layer in layers],
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"cannot store the artifact of {key.image_digest_ref}: {exc}") from None
        return int(row_id)

    # --- serving ----------------------------------------------------------------------------------

    def resolve(self, image: str, platform: str, keys: Sequence[str]) -> dict[str, Any] | None:
        """The first Ready row of ``image``/``platform`` among ``keys`` in order (a key ending in ``:`` is a
        prefix: the most recently updated Ready row with such a key)."""
        for key in keys:
            if key.endswith(":"):
                rows = self._query(
                    "SELECT * FROM image_artifacts WHERE image_digest_ref=? AND platform=? AND build_status=? AND "
                    "substr(acceleration_key, 1, ?)=? ORDER BY updated_at DESC, id DESC LIMIT 1",
                    (image, platform, READY, len(key), key))
            else:
                rows = self._query(
                    "SELECT * FROM image_artifacts WHERE image_digest_ref=? AND platform=? AND build_status=? AND "
                    "acceleration_key=?", (image, platform, READY, key))
            if rows:
                return dict(rows[0])
        return None

    def layers(self, artifact_id: int) -> list[dict[str, Any]]:
        """The zTOC rows of an artifact, ordered by layer digest."""
        rows = self._query("SELECT layer_digest, ztoc_digest, ztoc_size FROM artifact_layers WHERE "
                           "image_artifact_id=? ORDER BY layer_digest", (artifact_id,))
        return [dict(r) for r in rows]

    def get_blob(self, digest: str) -> tuple[str, bytes] | None:
        """``(media type, content)`` of a blob, or None."""
        rows = self._query("SELECT media_type, content FROM artifact_blobs WHERE digest=?", (digest,))
        return (rows[0]["media_type"], bytes(rows[0]["content"])) if rows else None

    def list_artifacts(self, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """The most recently updated rows, newest first."""
        rows = self._query("SELECT * FROM image_artifacts ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]


def artifact_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``GET /v1/artifacts`` shows it (Hermes's ``Artifact`` JSON)."""
    return {
        "id": row["id"],
        "sourceImageRef": row["source_image_ref"],
        "imageDigestRef": row["image_digest_ref"],
        "imageManifestDigest": row["image_manifest_digest"],
        "imageConfigDigest": row["image_config_digest"],
        "platform": row["platform"],
        "accelerationKey": row["acceleration_key"],
        "indexDigest": row["index_digest"],
        "indexMediaType": row["index_media_type"],
        "indexSize": row["index_size"],
        "status": row["build_status"],
        "error": row["error"],
    }


__all__ = [
    "BUILDING",
    "FAILED",
    "READY",
    "STATUSES",
    "ArtifactInfo",
    "ArtifactKey",
    "StoreDB",
    "StoredBlob",
    "artifact_json",
    "verify_blob",
]
