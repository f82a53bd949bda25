"""Pushing blobs and manifests (distribution spec "push" and "cross-repository mount").

Blob uploads: ``POST /v2/<repo>/blobs/uploads/`` opens a session (``202`` + ``Location``); a monolithic
upload finishes it with one ``PUT <location>?digest=…`` carrying the bytes; a chunked upload sends
``PATCH`` requests with ``Content-Range: <start>-<end>`` and then an empty ``PUT``. A cross-repository
mount (``POST …?mount=<digest>&from=<repo>``) answers ``201`` when the registry linked the blob, or ``202``
with an ordinary upload session when it declined — then the bytes are uploaded through that session.

Upload requests are never repeated in place: a PATCH or PUT that failed half-way may have been partly
applied, which spoils the session (distribution then answers DIGEST_INVALID or 416). Instead a retryable
failure (connection error, 429, 5xx, a spoiled session) starts a new session, with the same jittered
backoff and budget as every other request, after checking whether the blob arrived after all.

Manifests with a ``subject`` pushed to a registry without the referrers API (no ``OCI-Subject`` header in
the answer) also update the referrers tag-schema index of the subject, as oras does, so the artifact can
be discovered (v1 SOCI indexes on distribution 2.8).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from ..errors import (
    DigestMismatch,
    InvalidInput,
    RegistryError,
    RegistryUnreachable,
    SizeMismatch,
    TooManyRetries,
    TruncatedBody,
)
from ..oci import Descriptor, Digest, Manifest, parse_manifest_or_index
from .retry import is_retryable_status
from .transport import RetryBudget

if TYPE_CHECKING:
    from .client import RegistryClient

OCTET_STREAM = "application/octet-stream"
_READ = 1 << 20


def _scopes(repo: str, mount_from: str | None = None) -> tuple[str, ...]:
    scopes = (f"repository:{repo}:pull,push",)
    return scopes + ((f"repository:{mount_from}:pull",) if mount_from and mount_from != repo else ())


def _hash_file(path: Path, algorithm: str) -> tuple[Digest, int]:
    h = hashlib.new(algorithm)
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            h.update(chunk)
            n += len(chunk)
    return Digest(f"{algorithm}:{h.hexdigest()}"), n


def _location(response_url: str, headers: httpx.Headers, what: str) -> httpx.URL:
    loc = headers.get("Location")
    if not loc:
        raise RegistryError(f"{what}: the registry gave no upload Location")
    return httpx.URL(response_url).join(loc)


async def _file_body(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        left = length
        while left > 0:
            chunk = await f.read(min(_READ * 4, left))
            if not chunk:
                raise SizeMismatch(f"{path} shrank while it was being uploaded")
            left -= len(chunk)
            yield chunk


async def mount_blob(client: RegistryClient, repo: str, digest: str, from_repo: str) -> bool:
    """Ask the registry to link ``digest`` from ``from_repo``; True if it did (201), False if it declined."""
    d = Digest(digest)
    url = await _start_upload(client, repo, d, from_repo)
    if url is None:
        return True
    # declined: cancel the session it opened instead
    with contextlib.suppress(RegistryError):  # an abandoned session is garbage-collected by the registry
        await client.transport.send("DELETE", str(url), scopes=_scopes(repo), ok=(200, 202, 204, 404),
                                    what=f"cancel of upload to {repo}")
    return False


async def _start_upload(
    client: RegistryClient, repo: str, d: Digest | None, mount_from: str | None
) -> httpx.URL | None:
    """Open an upload session; with ``mount_from``, try a mount first. None means "mounted, done"."""
    params: list[tuple[str, str]] | None = None
    if mount_from and d is not None:
        params = [("mount", str(d)), ("from", mount_from)]
    ex = await client.transport.send(
        "POST", client.url(f"/v2/{repo}/blobs/uploads/"), params=params, scopes=_scopes(repo, mount_from),
        ok=(201, 202), content=b"", what=f"upload to {repo}",
    )
    if ex.status == 201 and params:
        return None
    if ex.status == 201:
        raise RegistryError(f"upload to {repo}: the registry answered 201 to an upload start", status=201)
    return _location(ex.url, ex.headers, f"upload to {repo}")


async def push_blob(
    client: RegistryClient,
    repo: str,
    data_or_path: bytes | bytearray | memoryview | str | os.PathLike[str],
    digest: str | None = None,
    size: int | None = None,
    *,
    chunk_size: int | None = None,
    mount_from: str | None = None,
    skip_existing: bool = True,
) -> Descriptor:
    """Upload one blob from bytes or a file; returns ``Descriptor(application/octet-stream, digest, size)``.

    The digest (and size) are checked locally before anything is sent, so a mismatch is a clear
    ``DigestMismatch`` rather than a registry's 400. ``chunk_size`` switches to PATCH chunks of that size.
    """
    if isinstance(data_or_path, bytes | bytearray | memoryview):
        data: bytes | None = bytes(data_or_path)
        path = None
        actual = Digest.from_bytes(bytes(data_or_path), Digest(digest).algorithm if digest else "sha256")
        total = len(data_or_path)
    else:
        data, path = None, Path(data_or_path)
        if not path.is_file():
            raise InvalidInput(f"blob file {path} does not exist")
        actual, total = await anyio.to_thread.run_sync(_hash_file, path, Digest(digest).algorithm if digest else
                                                       "sha256")
    if digest is not None and Digest(digest) != actual:
        raise DigestMismatch(f"blob to push does not match its digest: expected {digest}, got {actual}")
    if size is not None and size != total:
        raise SizeMismatch(f"blob {actual} is {total} bytes, expected {size}")
    if chunk_size is not None and chunk_size <= 0:
        raise InvalidInput(f"chunk size must be positive, not {chunk_size}")
    desc = Descriptor(OCTET_STREAM, actual, total)
    if skip_existing and await client.blob_exists(repo, actual):
        return desc

    def body(start: int, length: int):
        if data is not None:
            return data[start : start + length]
        assert path is not None
        return lambda: _file_body(path, start, length)

    what = f"upload of {actual} to {repo}"
    budget = RetryBudget(client.transport.policy)
    while True:
        try:
            location = await _start_upload(client, repo, actual, mount_from)
            if location is None:
                return desc
            await _upload(client, repo, location, actual, total, chunk_size, body, what, budget)
            return desc
        except RegistryError as exc:
            if not _worth_a_new_session(exc):
                raise
            reason = str(exc).rpartition(": ")[2] or type(exc).__name__
            await budget.spend("PUT", client.url(f"/v2/{repo}/blobs/uploads/"), reason, exc.status, None)
            if await client.blob_exists(repo, actual):  # the failed answer hid a finished upload
                return desc


#: distribution error codes that mean "this upload session is spoiled", e.g. by a half-applied earlier attempt
_SPOILED = frozenset({"BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "RANGE_INVALID"})


def _worth_a_new_session(exc: RegistryError) -> bool:
    if isinstance(exc, RegistryUnreachable | TooManyRetries | TruncatedBody):
        return True
    if exc.status is not None and is_retryable_status(exc.status):
        return True
    return exc.status in (400, 404, 416) and exc.code in _SPOILED


async def _upload(client: RegistryClient, repo: str, location: httpx.URL, actual: Digest, total: int,
                  chunk_size: int | None, body, what: str, budget: RetryBudget) -> None:
    """Send the bytes through one session: one PUT, or PATCH chunks then an empty PUT.

    A monolithic PUT is never repeated in place (half-applied, it spoils the session: the caller starts a
    new one). A failed PATCH is followed by a status query (``GET <location>`` → ``Range: 0-<end>``) and the
    upload resumes from what the registry holds; the final empty PUT may be repeated.
    """
    once = replace(client.transport.policy, max_retries=0)
    if chunk_size is None:
        await _put(client, repo, location, actual, body(0, total), total, what, RetryBudget(once))
        return
    offset = 0
    while offset < total:
        n = min(chunk_size, total - offset)
        try:
            ex = await client.transport.send(
                "PATCH", str(location), content=body(offset, n), scopes=_scopes(repo), ok=(202, 204),
                headers={"Content-Type": OCTET_STREAM, "Content-Length": str(n),
                         "Content-Range": f"{offset}-{offset + n - 1}"},
                what=what, budget=RetryBudget(once),
            )
        except RegistryError as exc:
            if not _worth_a_new_session(exc):
                raise
            await budget.spend("PATCH", str(location), str(exc).rpartition(": ")[2], exc.status, None)
            offset, location = await _upload_status(client, repo, location, what)
            continue
        location = _location(ex.url, ex.headers, what) if ex.headers.get("Location") else location
        got = ex.headers.get("Range")
        if got and got.partition("-")[2].isdigit() and int(got.partition("-")[2]) != offset + n - 1:
            raise RegistryError(f"{what}: registry holds bytes {got}, expected 0-{offset + n - 1}", status=416,
                                code="RANGE_INVALID")
        offset += n
    await _put(client, repo, location, actual, b"", 0, what, budget)


async def _upload_status(client: RegistryClient, repo: str, location: httpx.URL, what: str) -> tuple[int, httpx.URL]:
    """How many bytes the session holds (``Range: 0-<end>``), and its current location.

    ``0-0`` is ambiguous in distribution (no byte, or one byte): then the session is given up.
    """
    ex = await client.transport.send("GET", str(location), scopes=_scopes(repo), ok=(204,), what=what)
    got = ex.headers.get("Range", "")
    start, _, end = got.partition("-")
    if start != "0" or not end.isdigit() or int(end) == 0:
        raise RegistryError(f"{what}: cannot tell how much the upload session holds (Range {got!r})", status=416,
                            code="BLOB_UPLOAD_INVALID")
    new_location = _location(ex.url, ex.headers, what) if ex.headers.get("Location") else location
    return int(end) + 1, new_location


async def _put(client: RegistryClient, repo: str, location: httpx.URL, d: Digest, content, length: int,
               what: str, budget: RetryBudget) -> None:
    url = location.copy_merge_params({"digest": str(d)})
    ex = await client.transport.send(
        "PUT", str(url), content=content, scopes=_scopes(repo), ok=(201, 204),
        headers={"Content-Type": OCTET_STREAM, "Content-Length": str(length)}, what=what, budget=budget,
    )
    echoed = ex.headers.get("Docker-Content-Digest")
    if echoed and echoed != d:
        raise DigestMismatch(f"{what}: registry stored {echoed}")


def referrer_descriptor(doc_bytes: bytes, media_type: str) -> Descriptor:
    """The descriptor a referrers list shows for a pushed manifest: artifactType and annotations included."""
    doc = parse_manifest_or_index(doc_bytes, media_type)
    artifact_type = doc.artifact_type or (doc.config.media_type if isinstance(doc, Manifest) else None)
    return Descriptor(media_type, Digest.from_bytes(doc_bytes), len(doc_bytes),
                      annotations=dict(doc.annotations), artifact_type=artifact_type)


async def push_manifest(
    client: RegistryClient, repo: str, doc_bytes: bytes, media_type: str, tag_or_digest: str | None = None
) -> Descriptor:
    """PUT a manifest or index; with a ``subject`` on a registry lacking the referrers API, update the
    subject's referrers tag-schema index too."""
    from .referrers import add_to_referrers_tag

    desc, headers = await client.put_manifest(repo, doc_bytes, media_type, tag_or_digest)
    doc = parse_manifest_or_index(doc_bytes, media_type)
    if doc.subject is not None and not headers.get("OCI-Subject"):
        await add_to_referrers_tag(client, repo, doc.subject, referrer_descriptor(doc_bytes, media_type))
    return desc
