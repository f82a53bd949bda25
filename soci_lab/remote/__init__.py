"""The async registry client (httpx on anyio; runs under asyncio and trio).

``RegistryClient`` talks the distribution API to one registry host: ping, token/Basic auth, manifests,
blobs (verified, streaming, resumable), ranged reads (``get_content_with_range``), push (monolithic,
chunked, cross-repository mount), tags, referrers (API with tag-schema fallback) and image resolution.
Every HTTP request becomes an ``http_request`` event, every whole-blob download a ``blob_download`` event.

Public API, in short (``rc = RegistryClient("host:port" | "host/repo:tag" | Reference, creds=…,
insecure=…, config=HTTPConfig(…), events=EventRecorder(…), ssl_context=…)``, an async context manager)::

    await rc.ping()
    await rc.get_manifest(repo_or_ref, tag_or_digest=None, expected=desc) -> FetchedManifest
    await rc.head_manifest(repo, ref) -> Descriptor;   await rc.put_manifest(repo, data, media_type, ref)
    await rc.resolve_image(ref, platform=None) -> ResolvedImage(manifest, config, index, …)
    await rc.head_blob(repo, digest) -> BlobInfo;       await rc.blob_exists(repo, digest) -> bool
    await rc.get_blob(repo, desc_or_digest, size=None) -> bytes                      (verified, in memory)
    await rc.fetch_blob(repo, desc_or_digest, size=None, layout=OCILayout | path=…)  (verified, streamed)
    await rc.get_content_with_range(url, lower, upper) -> bytes;   rc.blob_url(repo, digest)
    await rc.read_blob_range(repo, digest, lower, upper) -> bytes
    await rc.fetch_range_into(repo, digest, lower, upper, async_sink) -> int          (resumes after breaks)
    await rc.push_blob(repo, data_or_path, digest=None, size=None, chunk_size=None, mount_from=None)
    await rc.mount_blob(repo, digest, from_repo) -> bool
    await rc.push_manifest(repo, doc_bytes, media_type, tag_or_digest=None) -> Descriptor
    await rc.list_tags(repo);   await rc.referrers(repo, subject, artifact_type=None)
    rc.repository(repo) -> Repository (the same methods without ``repo``; a ReferrersCaller)
    BlobReader(rc, repo)   the one seam other rooms read blobs through (remote/blobs.py)

The seed's names: ``GetContentWithRange`` → :func:`get_content_with_range` / ``RegistryClient.
get_content_with_range``; ``OCIArtifactClient`` (``all_referrers``, ``select_referrer``),
``IndexSelectionPolicy``, ``SelectFirstPolicy`` → :func:`select_first_policy`, ``ReferrersCaller``,
``ReferrersClient``, ``ErrNoReferrers`` → :class:`soci_lab.errors.NoReferrers`. Copying images between
registries and layouts lives in :mod:`soci_lab.images` (``copy_image``), built on this client.
"""

from .auth import Challenge, Credentials, load_credentials, parse_www_authenticate
from .blobs import BlobReader, RangeReader
from .client import BlobInfo, FetchedManifest, RegistryClient, Repository, ResolvedImage
from .ranges import check_range, get_content_with_range, parse_content_range
from .referrers import (
    IndexSelectionPolicy,
    OCIArtifactClient,
    ReferrersCaller,
    ReferrersClient,
    ReferrersResult,
    add_to_referrers_tag,
    list_referrers,
    referrers_tag,
    select_first_policy,
)
from .retry import RetryPolicy, is_retryable_status, parse_retry_after, redact_url
from .transport import RetryBudget, Transport

__all__ = [
    "BlobInfo",
    "BlobReader",
    "Challenge",
    "Credentials",
    "FetchedManifest",
    "IndexSelectionPolicy",
    "OCIArtifactClient",
    "RangeReader",
    "ReferrersCaller",
    "ReferrersClient",
    "ReferrersResult",
    "RegistryClient",
    "Repository",
    "ResolvedImage",
    "RetryBudget",
    "RetryPolicy",
    "Transport",
    "add_to_referrers_tag",
    "check_range",
    "get_content_with_range",
    "is_retryable_status",
    "list_referrers",
    "load_credentials",
    "parse_content_range",
    "parse_retry_after",
    "parse_www_authenticate",
    "redact_url",
    "referrers_tag",
    "select_first_policy",
]
