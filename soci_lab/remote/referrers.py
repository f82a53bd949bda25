"""Referrers: which artifacts (SOCI v1 indexes, signatures…) point at a manifest through ``subject``.

Two sources, as oras-go has them: the OCI 1.1 referrers API (``GET /v2/<repo>/referrers/<digest>``,
an image index, filtered server-side by ``artifactType`` when the registry says so in
``OCI-Filters-Applied``, else filtered here), and, for registries without the API (they answer 404 to
that endpoint — distribution 2.8), the referrers tag schema: an image index tagged ``<alg>-<hex>`` listing
the referrers, kept up to date by whoever pushes a referrer (:func:`add_to_referrers_tag`).

The seed's names: ``OCIArtifactClient`` (``all_referrers``, ``select_referrer``), ``IndexSelectionPolicy``,
``select_first_policy``, ``ReferrersCaller``, ``ReferrersClient``, and ``NoReferrers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import InvalidManifest, NoReferrers, NotFound
from ..oci import Descriptor, Digest, Index, mediatypes
from .links import next_link

if TYPE_CHECKING:
    from .client import RegistryClient

MAX_REFERRERS_PAGES = 100


def referrers_tag(digest: str) -> str:
    """The tag-schema tag of a subject: ``<alg>-<ref>``, alg truncated to 32 and ref to 64 characters."""
    d = Digest(digest)
    return f"{d.algorithm[:32]}-{d.hex[:64]}"


@dataclass(frozen=True)
class ReferrersResult:
    """Referrers of one subject, and where they came from (``"api"`` or ``"tag"``)."""

    descriptors: list[Descriptor]
    via: str


def _filter(descs: list[Descriptor], artifact_type: str | None) -> list[Descriptor]:
    return descs if artifact_type is None else [d for d in descs if d.artifact_type == artifact_type]


async def list_referrers(
    client: RegistryClient, repo: str, subject: str | Descriptor, artifact_type: str | None = None
) -> ReferrersResult:
    """Referrers of ``subject`` in ``repo`` whose ``artifactType`` is ``artifact_type`` (all when None)."""
    digest = subject.digest if isinstance(subject, Descriptor) else Digest(subject)
    if client._referrers_api is not False:
        found = await _from_api(client, repo, digest, artifact_type)
        if found is not None:
            return ReferrersResult(found, "api")
    try:
        fetched = await client.get_manifest(repo, referrers_tag(digest))
    except NotFound:
        return ReferrersResult([], "tag")
    if not isinstance(fetched.doc, Index):
        raise InvalidManifest(f"referrers tag {referrers_tag(digest)} of {repo} is not an image index")
    return ReferrersResult(_filter(list(fetched.doc.manifests), artifact_type), "tag")


async def _from_api(
    client: RegistryClient, repo: str, digest: Digest, artifact_type: str | None
) -> list[Descriptor] | None:
    """Referrers through the API, all pages; None when the registry has no referrers API (404)."""
    url: str | None = client.url(f"/v2/{repo}/referrers/{digest}")
    params = [("artifactType", artifact_type)] if artifact_type else None
    found: list[Descriptor] = []
    for page_no in range(MAX_REFERRERS_PAGES):
        if url is None:
            break
        ex = await client.transport.send("GET", url, params=params, scopes=(f"repository:{repo}:pull",),
                                         ok=(200, 404), headers={"Accept": mediatypes.OCI_INDEX},
                                         read_limit=4 << 20, what=f"referrers of {repo}@{digest}")
        if ex.status == 404:
            if page_no == 0:
                client._referrers_api = False
                return None
            raise NotFound(f"referrers of {repo}@{digest}: a next page vanished", status=404)
        client._referrers_api = True
        page = list(Index.from_bytes(ex.content).manifests)
        applied = {f.strip() for f in ex.headers.get("OCI-Filters-Applied", "").split(",")}
        found += page if "artifactType" in applied else _filter(page, artifact_type)
        url = next_link(ex.headers.get("Link"), ex.url)
        params = None
    return found


async def add_to_referrers_tag(client: RegistryClient, repo: str, subject: Descriptor, entry: Descriptor) -> None:
    """Add ``entry`` to the tag-schema index of ``subject`` (creating it), as oras does without the API.

    Not atomic across clients: two pushers racing can lose one entry (the tag schema has no compare-and-swap).
    """
    tag = referrers_tag(subject.digest)
    try:
        fetched = await client.get_manifest(repo, tag)
        if not isinstance(fetched.doc, Index):
            raise InvalidManifest(f"referrers tag {tag} of {repo} is not an image index")
        entries = list(fetched.doc.manifests)
    except NotFound:
        entries = []
    if any(e.digest == entry.digest for e in entries):
        return
    entries.append(entry)
    index = Index(media_type=mediatypes.OCI_INDEX, manifests=tuple(entries))
    await client.put_manifest(repo, index.to_bytes(), mediatypes.OCI_INDEX, tag)


# --- the seed's client face ---------------------------------------------------------------------------


@runtime_checkable
class ReferrersCaller(Protocol):
    """Anything that lists referrers of a descriptor filtered by artifact type (a ``Repository``, a mock)."""

    async def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]: ...


class IndexSelectionPolicy(Protocol):
    """Chooses one referrer from a non-empty list (the seed's ``IndexSelectionPolicy`` func type)."""

    def __call__(self, descs: list[Descriptor]) -> Descriptor: ...


def select_first_policy(descs: list[Descriptor]) -> Descriptor:
    """The seed's ``SelectFirstPolicy``: the first descriptor returned ("selection process is undefined")."""
    return descs[0]


@runtime_checkable
class ReferrersClient(Protocol):
    """What the artifact-discovery code needs: pick one referrer of a descriptor."""

    async def select_referrer(
        self, desc: Descriptor, artifact_type: str = ..., policy: IndexSelectionPolicy = ...
    ) -> Descriptor: ...


class OCIArtifactClient:
    """Finds SOCI v1 indexes (or any artifact type) among a manifest's referrers (the seed's client)."""

    def __init__(self, inner: ReferrersCaller) -> None:
        self.inner = inner

    async def all_referrers(
        self, desc: Descriptor, artifact_type: str = mediatypes.SOCI_INDEX_V1
    ) -> list[Descriptor]:
        """Every referrer of ``desc`` with ``artifact_type`` (default: SOCI index v1)."""
        return list(await self.inner.referrers(desc, artifact_type))

    async def select_referrer(
        self,
        desc: Descriptor,
        artifact_type: str = mediatypes.SOCI_INDEX_V1,
        policy: IndexSelectionPolicy = select_first_policy,
    ) -> Descriptor:
        """One referrer chosen by ``policy``; ``NoReferrers`` when there is none."""
        descs = await self.all_referrers(desc, artifact_type)
        if not descs:
            raise NoReferrers(f"no existing referrers of {desc.digest} with artifact type {artifact_type}")
        return policy(descs)


__all__ = [
    "IndexSelectionPolicy",
    "OCIArtifactClient",
    "ReferrersCaller",
    "ReferrersClient",
    "ReferrersResult",
    "add_to_referrers_tag",
    "list_referrers",
    "referrers_tag",
    "select_first_policy",
]

