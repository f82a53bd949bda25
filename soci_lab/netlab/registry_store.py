"""The embedded registry's storage: one OCI image layout per repository, under ``<root>/<repo>/``.

Why one layout per repository: each repository directory is then a plain OCI layout that skopeo, umoci
and ``soci_lab.oci.OCILayout`` read directly (``oci:<root>/<repo>:<tag>``), and an existing layout can be
served by copying or linking it under the root. Cross-repository mounts hard-link the blob file, so a
mount costs no copy. A repository exists once its directory holds an ``oci-layout`` file; pushing to a
new name creates it. Layouts elsewhere can be served in place under a name of their own (``layouts=``,
``--layout NAME=DIR``): nothing is copied, and pushes to that name write into that layout.

Every manifest the registry accepts is recorded in its repository's ``index.json``: under its tag
(``org.opencontainers.image.ref.name``) when pushed by tag, as an unnamed entry when pushed by digest,
and always as an unnamed entry when it has a ``subject`` (so a referrer survives its tag moving). The
referrers API scans these entries; what each manifest says about itself is cached by digest.

Uploads (POST/PATCH/PUT) stream into ``<repo>/.ingest/upload-<uuid>`` while being hashed; the final PUT
compares the digest and only then renames the file into ``blobs/``, so a visible blob is always verified.
The file is open only while a request appends to it, so abandoned sessions hold no descriptor; a session
idle for ``upload_idle_timeout`` (default an hour) is cancelled when another starts.
Everything here runs on the registry's event-loop thread, except ``finish_upload`` (fsync, and re-hashing
for sha512), which the registry runs in a worker thread; it touches only its own upload, which it first
removes from the session table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import SociLabError
from ..oci import Descriptor, Digest, OCILayout, is_digest, parse_manifest_or_index
from ..oci import mediatypes as mt
from ..oci.layout import REF_NAME
from ..oci.manifest import MAX_MANIFEST_SIZE, Index, Manifest
from .registry_errors import RegistryHTTPError

#: distribution's repository name grammar
REPO_NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
#: an upload session untouched for this long (seconds) is cancelled when the next one starts
UPLOAD_IDLE_TIMEOUT = 3600.0
#: path components that would collide with a layout's own entries
_RESERVED_COMPONENTS = frozenset({"blobs"})


def check_repo_name(name: str) -> None:
    """Raise NAME_INVALID unless ``name`` is a valid repository name that maps to a safe directory."""
    if len(name) > 255 or not REPO_NAME_RE.fullmatch(name) or set(name.split("/")) & _RESERVED_COMPONENTS:
        raise RegistryHTTPError("NAME_INVALID", detail={"name": name})


def parse_digest(value: str, code: str = "DIGEST_INVALID") -> Digest:
    """``value`` as a Digest, or a distribution error with ``code``."""
    try:
        return Digest(value)
    except SociLabError as exc:
        raise RegistryHTTPError(code, str(exc), detail={"digest": value}) from None


@dataclass
class Upload:
    """One blob upload session: a private file being appended to and hashed.

    The file is open only while a request is appending to it (:meth:`release` closes it when the request
    ends), so sessions a client abandons hold no file descriptor; they hold their partial file until they
    have been idle for the store's ``upload_idle_timeout``.
    """

    uuid: str
    repo: str
    path: Path
    offset: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    last_used: float = field(default_factory=time.monotonic)
    file: BinaryIO | None = None

    def append(self, data: bytes) -> None:
        if self.file is None:
            self.file = open(self.path, "ab")  # noqa: SIM115 - closed by release()
        self.file.write(data)
        self.sha256.update(data)
        self.offset += len(data)
        self.last_used = time.monotonic()

    def release(self) -> None:
        """Close the file until the next request appends (the session stays)."""
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def sync(self) -> None:
        """Flush and fsync what was appended (the file need not be open)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.release()


@dataclass(frozen=True)
class _ManifestInfo:
    """What a stored manifest says about itself, for the referrers API."""

    subject: str | None
    descriptor: Descriptor


class RepositoryStore:
    """Repositories as OCI layouts under ``root`` (created when missing)."""

    def __init__(
        self, root: str | os.PathLike[str], layouts: Mapping[str, str | os.PathLike[str]] | None = None,
        upload_idle_timeout: float = UPLOAD_IDLE_TIMEOUT,
    ) -> None:
        self.root = Path(root)
        self.upload_idle_timeout = upload_idle_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        self._layouts: dict[str, OCILayout] = {}
        for name, path in (layouts or {}).items():  # existing layouts served in place, under their own name
            check_repo_name(name)
            self._layouts[name] = OCILayout(path, create=False)
        self._extra = frozenset(self._layouts)
        self._uploads: dict[str, Upload] = {}
        self._info: dict[str, _ManifestInfo] = {}

    # --- repositories -----------------------------------------------------------------------------

    def layout(self, name: str, create: bool = False) -> OCILayout:
        """The repository's layout; NAME_UNKNOWN when it does not exist and ``create`` is false."""
        check_repo_name(name)
        layout = self._layouts.get(name)
        if layout is not None:
            return layout
        path = self.root / name
        if not (path / "oci-layout").is_file():
            if not create:
                raise RegistryHTTPError("NAME_UNKNOWN", detail={"name": name})
            path.mkdir(parents=True, exist_ok=True)
        layout = OCILayout(path, create=True)
        self._layouts[name] = layout
        return layout

    def repositories(self) -> list[str]:
        """Every repository under the root, sorted (the catalog)."""
        names = []
        for marker in self.root.rglob("oci-layout"):
            name = marker.parent.relative_to(self.root).as_posix()
            if REPO_NAME_RE.fullmatch(name):
                names.append(name)
        return sorted({*names, *self._extra})

    # --- blobs --------------------------------------------------------------------------------------

    def blob_path(self, name: str, digest: str) -> Path:
        """The file holding blob ``digest`` of repository ``name`` (BLOB_UNKNOWN when absent)."""
        layout = self.layout(name)
        d = parse_digest(digest)
        path = layout.blob_path(d)
        if not path.is_file():
            raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": d})
        return path

    def has_blob(self, name: str, digest: str) -> bool:
        try:
            return self.layout(name).has(digest)
        except RegistryHTTPError:
            return False

    def mount(self, name: str, source: str, digest: str) -> bool:
        """Make blob ``digest`` of ``source`` visible in ``name`` (a hard link); False when it cannot."""
        d = parse_digest(digest)
        try:
            src = self.layout(source).blob_path(d)
        except RegistryHTTPError:
            return False
        if not src.is_file():
            return False
        layout = self.layout(name, create=True)
        self._publish(layout, src, d, link=True)
        return True

    def delete_blob(self, name: str, digest: str) -> None:
        path = self.blob_path(name, digest)
        path.unlink()

    @staticmethod
    def _publish(layout: OCILayout, src: Path, digest: Digest, link: bool) -> None:
        """Move (or hard-link) a verified file into ``layout``'s blobs, atomically."""
        final = layout.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not link:
            os.replace(src, final)
            return
        layout.ingest_dir.mkdir(parents=True, exist_ok=True)
        tmp = layout.ingest_dir / f"mount-{secrets.token_hex(8)}"
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem under the root: copy instead
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, final)

    # --- uploads ------------------------------------------------------------------------------------

    def start_upload(self, name: str) -> Upload:
        layout = self.layout(name, create=True)
        layout.ingest_dir.mkdir(parents=True, exist_ok=True)
        self.expire_uploads()
        uuid = secrets.token_hex(16)
        path = layout.ingest_dir / f"upload-{uuid}"
        path.touch(exist_ok=False)
        upload = Upload(uuid, name, path)
        self._uploads[uuid] = upload
        return upload

    def get_upload(self, name: str, uuid: str) -> Upload:
        upload = self._uploads.get(uuid)
        if upload is None or upload.repo != name:
            raise RegistryHTTPError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uuid})
        upload.last_used = time.monotonic()
        return upload

    def expire_uploads(self, now: float | None = None) -> int:
        """Cancel sessions idle for longer than ``upload_idle_timeout`` (their partial files go); how many."""
        now = time.monotonic() if now is None else now
        idle = [u for u in self._uploads.values()
                if u.file is None and now - u.last_used > self.upload_idle_timeout]
        for upload in idle:
            self.cancel_upload(upload)
        return len(idle)

    @property
    def open_uploads(self) -> int:
        """Upload sessions in progress."""
        return len(self._uploads)

    def finish_upload(self, upload: Upload, digest: str) -> Digest:
        """Verify the uploaded bytes against ``digest`` and publish them; the session ends either way."""
        self._uploads.pop(upload.uuid, None)
        try:
            d = parse_digest(digest)
            upload.sync()
            upload.close()
            if d.algorithm == "sha256":
                actual = f"sha256:{upload.sha256.hexdigest()}"
            else:
                with open(upload.path, "rb") as f:
                    actual = Digest.from_file(f, d.algorithm)
            if actual != d:
                raise RegistryHTTPError(
                    "DIGEST_INVALID", f"uploaded content has digest {actual}, not {d}", detail={"digest": d}
                )
            self._publish(self.layout(upload.repo), upload.path, d, link=False)
            return d
        finally:
            upload.close()
            with contextlib.suppress(FileNotFoundError):
                upload.path.unlink()

    def cancel_upload(self, upload: Upload) -> None:
        self._uploads.pop(upload.uuid, None)
        upload.close()
        with contextlib.suppress(FileNotFoundError):
            upload.path.unlink()

    def close(self) -> None:
        """Abandon every open upload (their partial files are removed)."""
        for upload in list(self._uploads.values()):
            self.cancel_upload(upload)

    # --- manifests ----------------------------------------------------------------------------------

    def put_manifest(
        self, name: str, reference: str, data: bytes, content_type: str | None
    ) -> tuple[Descriptor, str | None]:
        """Validate and store a manifest or index; tag it when ``reference`` is a tag.

        Returns the stored descriptor and the digest of the document's ``subject`` (None without one).
        """
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryHTTPError("SIZE_INVALID", f"manifest is larger than {MAX_MANIFEST_SIZE} bytes")
        ctype = (content_type or "").split(";")[0].strip()
        known = mt.MANIFEST_TYPES | mt.INDEX_TYPES
        try:
            doc = parse_manifest_or_index(data, ctype if ctype in known else None)
        except SociLabError as exc:
            raise RegistryHTTPError("MANIFEST_INVALID", str(exc)) from None
        if ctype in known and ctype != doc.media_type:
            raise RegistryHTTPError("MANIFEST_INVALID", f"sent as {ctype} but the document is {doc.media_type}")
        tag: str | None = None
        if is_digest(reference):
            want = Digest(reference)
            actual = Digest.from_bytes(data, want.algorithm)
            if actual != want:
                raise RegistryHTTPError(
                    "DIGEST_INVALID", f"manifest digest is {actual}, not {want}", detail={"digest": want}
                )
            digest = want
        elif ":" in reference or not TAG_RE.fullmatch(reference):
            raise RegistryHTTPError("TAG_INVALID", detail={"tag": reference})
        else:
            tag = reference
            digest = Digest.from_bytes(data)
        layout = self.layout(name, create=True)
        missing = [str(d.digest) for d in _children(doc) if not layout.has(d.digest)]
        if missing:
            raise RegistryHTTPError("MANIFEST_BLOB_UNKNOWN", detail={"digests": missing})
        layout.write_blob(data, digest, len(data))
        desc = Descriptor(doc.media_type, digest, len(data))
        layout.tag(desc, tag)
        if tag is not None and doc.subject is not None:
            layout.tag(desc, None)
        return desc, (str(doc.subject.digest) if doc.subject is not None else None)

    def get_manifest(self, name: str, reference: str) -> tuple[Descriptor, Path]:
        """The descriptor (media type as stored) and file of a manifest, by tag or digest."""
        layout = self.layout(name)
        if is_digest(reference):
            d = Digest(reference)
            path = layout.blob_path(d)
            if not path.is_file():
                raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"reference": reference})
            for entry in layout.index().manifests:
                if entry.digest == d:
                    return Descriptor(entry.media_type, d, entry.size), path
            info = self._manifest_info(layout, Descriptor(mt.OCI_MANIFEST, d, path.stat().st_size))
            if info is None:
                raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"reference": reference})
            return Descriptor(info.descriptor.media_type, d, info.descriptor.size), path
        if not TAG_RE.fullmatch(reference):
            raise RegistryHTTPError("TAG_INVALID", detail={"tag": reference})
        for entry in layout.index().manifests:
            if entry.annotations.get(REF_NAME) == reference:
                path = layout.blob_path(entry.digest)
                if path.is_file():
                    return Descriptor(entry.media_type, entry.digest, entry.size), path
        raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"tag": reference})

    def delete_manifest(self, name: str, reference: str) -> None:
        """Delete a tag, or a manifest by digest (its index entries and its blob)."""
        layout = self.layout(name)
        if not is_digest(reference):
            if reference not in layout.tags():
                raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"tag": reference})
            layout.untag(reference)
            return
        d = Digest(reference)
        if not layout.has(d):
            raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"reference": reference})
        with layout._locked_index() as entries:
            entries[:] = [e for e in entries if e.digest != d]
        layout.delete_blob(d)

    def tags(self, name: str) -> list[str]:
        return sorted(set(self.layout(name).tags()))

    def referrers(self, name: str, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Descriptors of the manifests in ``name`` whose ``subject`` is ``subject``."""
        layout = self.layout(name)
        d = parse_digest(subject)
        out: list[Descriptor] = []
        seen: set[str] = set()
        for entry in layout.index().manifests:
            if entry.digest in seen:
                continue
            seen.add(entry.digest)
            info = self._manifest_info(layout, entry)
            if info is None or info.subject != d:
                continue
            if artifact_type is not None and info.descriptor.artifact_type != artifact_type:
                continue
            out.append(info.descriptor)
        return out

    def _manifest_info(self, layout: OCILayout, entry: Descriptor) -> _ManifestInfo | None:
        info = self._info.get(entry.digest)
        if info is not None:
            return info
        try:
            doc = json.loads(layout.blob_path(entry.digest).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        subject = doc.get("subject")
        subject_digest = subject.get("digest") if isinstance(subject, dict) else None
        media_type = doc.get("mediaType") or entry.media_type
        artifact_type = doc.get("artifactType")
        config = doc.get("config")
        if not artifact_type and isinstance(config, dict) and media_type in mt.MANIFEST_TYPES:
            artifact_type = config.get("mediaType")  # the spec: config.mediaType stands in for artifactType
        annotations = doc.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
        descriptor = Descriptor(
            media_type,
            entry.digest,
            layout.blob_path(entry.digest).stat().st_size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        )
        info = _ManifestInfo(subject_digest if isinstance(subject_digest, str) else None, descriptor)
        self._info[entry.digest] = info
        return info


def _children(doc: Manifest | Index) -> list[Descriptor]:
    """The blobs and manifests a document needs present in the same repository (not foreign layers)."""
    if isinstance(doc, Index):
        return list(doc.manifests)
    return [doc.config, *(d for d in doc.layers if not d.urls)]
