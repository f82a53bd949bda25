"""Finding an image's SOCI index, in upstream's order (``findSociIndexDesc`` in soci-snapshotter's ``fs``).

1. An explicit index digest (the ``containerd.io/snapshot/remote/soci.index.digest`` label; nerdctl's
   ``--soci-index-digest``) wins, whatever the pull modes say.
2. Both ``[pull_modes.soci_v1]`` and ``[pull_modes.soci_v2]`` disabled → :class:`AllLazyPullModesDisabled`.
3. SOCI v2 (enabled by default): the image manifest's ``com.amazon.soci.index-digest`` annotation (the
   manifest is read from the local store when it holds it, else from the registry, verified by digest).
4. SOCI v1 (disabled by default since v0.10): the manifest's referrers with artifact type
   ``application/vnd.amazon.soci.index.v1+json`` (referrers API, or the tag schema where there is none),
   one chosen by the :data:`IndexSelectionPolicy` — :func:`select_first_policy` by default.
5. Nothing → :class:`NoIndex` naming what each step saw.

As upstream, only "not there" moves on to the next step (a manifest without the annotation, no referrer
of the type); a step that *fails* — the manifest cannot be fetched, the referrers cannot be listed — ends
discovery with :class:`NoIndex` carrying that failure (upstream wraps it in ``ErrNoIndex`` the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..errors import AllLazyPullModesDisabled, DigestMismatch, NoIndex, NoReferrers, SociLabError
from ..oci import Descriptor, Digest, Manifest, OCILayout, parse_manifest_or_index
from ..remote import IndexSelectionPolicy, OCIArtifactClient, select_first_policy
from ..ztoc.index import ANNOTATION_SOCI_INDEX_DIGEST, SOCI_INDEX_V1, SOCI_INDEX_V2
from .sources import ArtifactSource


@dataclass(frozen=True)
class IndexLocation:
    """Where the SOCI index is: its digest, what is known of it, and which step found it.

    ``via`` is ``"explicit"``, ``"v2"``, ``"v1"`` (or ``"hermes"`` from the external store).
    ``size``/``artifact_type`` are None when the step that found it does not say.
    """

    digest: Digest
    via: str
    size: int | None = None
    artifact_type: str | None = None


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


async def image_manifest_bytes(
    source: ArtifactSource, image_manifest_desc: Descriptor, local_store: OCILayout | None
) -> bytes:
    """The image manifest's bytes: from the local store when it holds them (verified), else the source."""
    if local_store is not None and local_store.has(image_manifest_desc.digest):
        try:
            return local_store.read_blob(image_manifest_desc.digest)
        except DigestMismatch:
            local_store.delete_blob(image_manifest_desc.digest)  # damaged copy: fetch it again below
    _desc, data = await source.get_document(str(image_manifest_desc.digest), expected=image_manifest_desc)
    return data


async def find_soci_index_desc(
    source: ArtifactSource,
    image_manifest_desc: Descriptor,
    *,
    config: Config,
    explicit_index_digest: str | None = None,
    local_store: OCILayout | None = None,
    policy: IndexSelectionPolicy = select_first_policy,
) -> IndexLocation:
    """Locate the SOCI index of the image whose manifest is ``image_manifest_desc`` (module docstring)."""
    if explicit_index_digest:
        return IndexLocation(Digest(explicit_index_digest), "explicit")
    modes = config.pull_modes
    if not modes.soci_v1.enable and not modes.soci_v2.enable:
        raise AllLazyPullModesDisabled(
            "both SOCI v1 and v2 pull modes are disabled and no SOCI index digest was given"
        )
    seen: list[str] = []
    if modes.soci_v2.enable:
        try:
            doc = parse_manifest_or_index(await image_manifest_bytes(source, image_manifest_desc, local_store))
        except SociLabError as exc:
            raise NoIndex(f"SOCI v2: could not fetch image manifest {image_manifest_desc.digest}: "
                          f"{_one_line(exc)}") from exc
        value = doc.annotations.get(ANNOTATION_SOCI_INDEX_DIGEST) if isinstance(doc, Manifest) else None
        if value:
            try:
                return IndexLocation(Digest(value), "v2", artifact_type=SOCI_INDEX_V2)
            except SociLabError as exc:
                raise NoIndex(f"unable to parse SOCI index digest {value[:100]!r}: {_one_line(exc)}") from exc
        seen.append(f"v2: the image manifest has no {ANNOTATION_SOCI_INDEX_DIGEST} annotation")
    else:
        seen.append("v2: disabled")
    if modes.soci_v1.enable:
        try:
            chosen = await OCIArtifactClient(source).select_referrer(image_manifest_desc, SOCI_INDEX_V1, policy)
            return IndexLocation(chosen.digest, "v1", chosen.size, chosen.artifact_type or SOCI_INDEX_V1)
        except NoReferrers:
            seen.append("v1: no referrer of type " + SOCI_INDEX_V1)
        except SociLabError as exc:
            raise NoIndex(f"SOCI v1: cannot fetch list of referrers: {_one_line(exc)}") from exc
    else:
        seen.append("v1: disabled")
    raise NoIndex(f"no SOCI index found for image manifest {image_manifest_desc.digest} ({'; '.join(seen)})")


__all__ = ["IndexLocation", "find_soci_index_desc", "image_manifest_bytes"]
