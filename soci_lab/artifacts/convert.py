"""The v2 "SOCI-enabled image": how ``soci convert`` rewrites an image index around a SOCI index (pure).

Given the image as found (an image index with the chosen platform entry, or a bare manifest) and the
rewritten image manifest (:func:`soci_lab.ztoc.index.annotate_image_manifest`), :func:`soci_enabled_index`
returns the OCI image index to push under the image's tag:

- the chosen entry is replaced by the rewritten manifest (new digest, same platform); its descriptor's
  annotations become the manifest's annotations — ``com.amazon.soci.index-digest`` among them — as
  upstream's ``Convert`` sets them (what the old descriptor carried is replaced, not merged);
- the SOCI index's descriptor (``artifactType`` v2, the platform,
  ``com.amazon.soci.image-manifest-digest``) takes the place of an existing SOCI index entry for the same
  platform, or is appended (upstream's ``addSociIndexes``);
- a Docker manifest list becomes an OCI image index (``mediaType`` rewritten); a bare manifest is wrapped
  in a new index holding it and its SOCI index.

The image manifest points at its SOCI index by annotation, and the SOCI index descriptor points back at
the manifest by annotation, never by ``subject``: no digest cycle.
"""

from __future__ import annotations

from dataclasses import replace

from ..oci import Descriptor, ImageConfig, Index, Manifest, Platform
from ..oci import mediatypes as mt
from ..ztoc.index import ANNOTATION_IMAGE_MANIFEST_DIGEST, SOCI_INDEX_V1, SOCI_INDEX_V2


def platform_of(config: ImageConfig) -> Platform:
    """The platform an image config declares, normalized as containerd's ``ConfigPlatform`` does (upstream
    ``soci convert`` puts that on a bare manifest's entries): ``os`` lower-cased (``macos`` → ``darwin``),
    architecture aliases resolved (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, …), redundant variants
    dropped (``arm64`` ``v8``, ``amd64`` ``v1``), ``os.version`` kept, ``os.features`` sorted without
    repeats."""
    doc = config.doc
    os_name = (config.os or "linux").lower()
    os_name = "darwin" if os_name == "macos" else os_name
    declared = doc.get("variant")
    variant = declared if isinstance(declared, str) else ""
    arch, variant = _normalize_arch(config.architecture or "amd64", variant)
    os_version = doc.get("os.version") if isinstance(doc.get("os.version"), str) else None
    features = doc.get("os.features")
    feats = tuple(sorted({f for f in features if isinstance(f, str)})) if isinstance(features, list) else ()
    return Platform(os_name, arch, variant or None, os_version or None, feats)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's ``normalizeArch``."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(variant, variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant


def is_soci_index_entry(desc: Descriptor) -> bool:
    """Whether an image-index entry is a SOCI index rather than an image.

    ``artifactType`` says so; tools built on an image-spec older than 1.1 (skopeo 1.9 among them) drop that
    field when they copy an index, so the ``com.amazon.soci.image-manifest-digest`` annotation, which only
    SOCI index entries carry, counts too.
    """
    return desc.artifact_type in (SOCI_INDEX_V1, SOCI_INDEX_V2) or ANNOTATION_IMAGE_MANIFEST_DIGEST in desc.annotations


def image_entries(index: Index) -> Index:
    """``index`` without its SOCI index entries (so platform selection can only pick an image)."""
    return Index(index.media_type, tuple(d for d in index.manifests if not is_soci_index_entry(d)),
                 annotations=dict(index.annotations))


def _same_platform(a: Platform | None, b: Platform | None) -> bool:
    return a is not None and b is not None and (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)


def soci_enabled_index(
    top: Index | None,
    chosen: Descriptor | None,
    annotated: Manifest,
    platform: Platform,
    soci_descriptor: Descriptor,
) -> Index:
    """The image index that makes the image SOCI-enabled (see the module docstring).

    ``top``/``chosen``: the image index REF named and the entry that was indexed (both None for a bare
    manifest). ``annotated``: the rewritten image manifest. ``soci_descriptor``: from
    :func:`soci_lab.ztoc.index.index_descriptor_v2`.
    """
    data = annotated.to_bytes()
    if top is None or chosen is None:
        image_entry = Descriptor(mt.OCI_MANIFEST, annotated.digest, len(data),
                                 annotations=dict(annotated.annotations), platform=platform)
        return Index(mt.OCI_INDEX, (image_entry, soci_descriptor))
    # upstream updates the entry's digest, size, annotations and media type and keeps the rest
    image_entry = replace(chosen, media_type=mt.OCI_MANIFEST, digest=annotated.digest, size=len(data),
                          annotations=dict(annotated.annotations),
                          platform=chosen.platform if chosen.platform is not None else platform)
    entries: list[Descriptor] = []
    replaced = False
    for e in top.manifests:
        if e.digest == chosen.digest:
            entries.append(image_entry)
        elif is_soci_index_entry(e) and _same_platform(e.platform, soci_descriptor.platform):
            if not replaced:  # the old SOCI index of this platform is replaced where it stood
                entries.append(soci_descriptor)
                replaced = True
        else:
            entries.append(e)
    if not replaced:
        entries.append(soci_descriptor)
    return Index(mt.OCI_INDEX, tuple(entries), annotations=dict(top.annotations), subject=top.subject,
                 artifact_type=top.artifact_type)


__all__ = ["image_entries", "is_soci_index_entry", "platform_of", "soci_enabled_index"]
