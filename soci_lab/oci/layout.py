"""The OCI image layout as soci_lab's local content store.

``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``, readable by skopeo and umoci. Writes are atomic
and verified: bytes go to a private file under ``.ingest/`` (same filesystem), are hashed as they arrive,
and are renamed into ``blobs/`` only when they match their digest, so a blob path that exists always holds
the right bytes. Two writers of one blob each write their own temporary file; the second rename replaces
identical content, which is harmless. ``index.json`` updates take an exclusive ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ContentNotFound, DigestMismatch, InvalidLayout, InvalidManifest, SizeMismatch
from . import jsondoc
from . import mediatypes as mt
from .descriptor import Descriptor
from .digest import Digest, DigestVerifier
from .manifest import Index, Manifest, canonical_json

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"


class BlobWriter:
    """A blob being written: ``write`` chunks, then ``commit`` (verify + rename) or ``abort``."""

    def __init__(self, layout: OCILayout, digest: Digest, size: int | None) -> None:
        self.layout = layout
        self.digest = Digest(digest)
        self.verifier = DigestVerifier(self.digest, size)
        layout.ingest_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_path = layout.ingest_dir / f"{self.digest.hex[:16]}-{secrets.token_hex(6)}"
        self._f: BinaryIO | None = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hash_part(data)
        self.store_part(data)

    def hash_part(self, data: bytes | bytearray | memoryview) -> None:
        """Verify-as-you-go half of :meth:`write` (may run on another thread than :meth:`store_part`)."""
        self.verifier.update(data)

    def store_part(self, data: bytes | bytearray | memoryview) -> None:
        """The file half of :meth:`write`."""
        assert self._f is not None, "blob writer is closed"
        self._f.write(data)

    def commit(self) -> Digest:
        assert self._f is not None, "blob writer is closed"
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            self.verifier.check(f"blob {self.digest}")
            final = self.layout.blob_path(self.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp_path, final)
        except BaseException:
            self.abort()
            raise
        return self.digest

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class OCILayout:
    """A directory holding an OCI image layout; created on first use when ``create`` is true."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True) -> None:
        self.root = Path(root)
        marker = self.root / "oci-layout"
        if not marker.exists():
            if not create:
                raise InvalidLayout(f"{self.root} is not an OCI image layout (no oci-layout file)")
            (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            self._atomic_write(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
            if not (self.root / "index.json").exists():
                self._atomic_write(self.root / "index.json", canonical_json(_empty_index()))
        else:
            try:
                version = jsondoc.loads_object(marker.read_bytes(), str(marker)).get("imageLayoutVersion")
            except InvalidManifest:
                version = None
            if not isinstance(version, str):
                raise InvalidLayout(f"{marker} is not a valid oci-layout file")

    # --- blobs ------------------------------------------------------------------------------------

    @property
    def ingest_dir(self) -> Path:
        return self.root / ".ingest"

    def blob_path(self, digest: str) -> Path:
        d = Digest(digest)
        return self.root / "blobs" / d.algorithm / d.hex

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise ContentNotFound(f"blob {digest} is not in {self.root}") from None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise ContentNotFound(f"blob {digest} is not in {self.root}") from None

    def read_blob(self, digest: str, verify: bool = True) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read()
        if verify and Digest.from_bytes(data, Digest(digest).algorithm) != digest:
            raise DigestMismatch(f"blob {digest} in {self.root} does not match its digest (corrupted store)")
        return data

    def writer(self, digest: str, size: int | None = None) -> BlobWriter:
        """A streaming, verified writer for one blob (use as a context manager)."""
        return BlobWriter(self, Digest(digest), size)

    def write_blob(self, data: bytes, digest: str | None = None, size: int | None = None) -> Digest:
        """Store ``data``; when ``digest``/``size`` are given they are checked first."""
        if size is not None and len(data) != size:
            raise SizeMismatch(f"blob {digest or ''} is {len(data)} bytes, expected {size}".replace("  ", " "))
        d = Digest(digest) if digest else Digest.from_bytes(data)
        if self.has(d):
            return d
        with self.writer(d, len(data)) as w:
            w.write(data)
        return d

    def import_file(self, path: str | os.PathLike[str], digest: str, size: int | None = None) -> Digest:
        """Store the file at ``path`` under ``digest`` after hashing it (copied, the source is kept)."""
        d = Digest(digest)
        if self.has(d):
            return d
        with open(path, "rb") as src, self.writer(d, size) as w:
            while chunk := src.read(1 << 20):
                w.write(chunk)
        return d

    def delete_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def blobs(self) -> Iterator[Digest]:
        for algdir in sorted((self.root / "blobs").iterdir()):
            for f in sorted(algdir.iterdir()):
                with contextlib.suppress(Exception):
                    yield Digest(f"{algdir.name}:{f.name}")

    # --- index.json ---------------------------------------------------------------------------------

    def index(self) -> Index:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            raise InvalidLayout(f"{self.root} has no index.json") from None
        doc = jsondoc.loads_object(data, f"{self.root}/index.json", error=InvalidLayout) if data.strip() else {}
        doc.setdefault("mediaType", mt.OCI_INDEX)  # older layouts omit it
        return Index.from_bytes(canonical_json(doc))

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[list[Descriptor]]:
        lock_path = self.root / ".index.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = list(self.index().manifests)
            yield entries
            doc = _empty_index()
            doc["manifests"] = [d.to_dict() for d in entries]
            self._atomic_write(self.root / "index.json", canonical_json(doc))

    def tag(self, descriptor: Descriptor, tag: str | None) -> None:
        """Add ``descriptor`` to index.json, named ``tag`` (replacing what had that name), or unnamed."""
        with self._locked_index() as entries:
            if tag is not None:
                entries[:] = [d for d in entries if d.annotations.get(REF_NAME) != tag]
                descriptor = descriptor.with_annotations(**{REF_NAME: tag})
            elif any(d.digest == descriptor.digest and REF_NAME not in d.annotations for d in entries):
                return
            entries.append(descriptor)

    def untag(self, tag: str) -> None:
        with self._locked_index() as entries:
            entries[:] = [d for d in entries if d.annotations.get(REF_NAME) != tag]

    def tags(self) -> list[str]:
        return [d.annotations[REF_NAME] for d in self.index().manifests if REF_NAME in d.annotations]

    def resolve(self, tag_or_digest: str) -> Descriptor:
        """The index.json entry named ``tag_or_digest`` (a tag, or a digest of a stored manifest)."""
        entries = self.index().manifests
        for d in entries:
            if d.annotations.get(REF_NAME) == tag_or_digest or d.digest == tag_or_digest:
                return d
        if tag_or_digest.startswith(("sha256:", "sha512:")) and self.has(tag_or_digest):
            data = self.read_blob(tag_or_digest)
            kind = jsondoc.loads_object(data, f"blob {tag_or_digest}").get("mediaType") or mt.OCI_MANIFEST
            return Descriptor(kind, Digest(tag_or_digest), len(data))
        raise ContentNotFound(f"{tag_or_digest!r} is not in {self.root} (tags: {', '.join(self.tags()) or 'none'})")

    def put_document(self, doc: Manifest | Index, tag: str | None = None) -> Descriptor:
        """Store a manifest or index blob; tag it in index.json when ``tag`` is given."""
        data = doc.to_bytes()
        desc = Descriptor(doc.media_type, self.write_blob(data), len(data))
        if tag is not None:
            self.tag(desc, tag)
        return desc

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _empty_index() -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
