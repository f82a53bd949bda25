"""The async registry client (httpx on anyio; runs under asyncio and trio).

``RegistryClient`` talks the distribution API to one registry host: ping, token/Basic auth, manifests,
blobs (verified, streaming, resumable), ranged reads (``get_content_with_range``), push (monolithic,
chunked, cross-repository mount), tags, referrers (API with tag-schema fallback), image resolution, and
``copy_image`` between registries and OCI layouts. Every HTTP request becomes an ``http_request`` event.
"""

from .auth import Challenge, Credentials, load_credentials, parse_www_authenticate
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
    "Challenge",
    "Credentials",
    "FetchedManifest",
    "IndexSelectionPolicy",
    "OCIArtifactClient",
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
