"""Image models of real images, for the simulator: from a JSON file, a ``synthetic:`` spec, an OCI layout
or a registry.

The simulator itself never reads a registry or a layout (``sim/`` imports no real data-path room:
architecture.md, "Rules of the house"); this module is where a real image becomes a
:class:`soci_lab.sim.ImageModel` — by reading its SOCI index and zTOCs (``artifacts``, ``remote``, ``ztoc``)
and handing them to :mod:`soci_lab.sim.ztoc_adapter`. ``soci-lab simulate --image`` and
:func:`soci_lab.compare.compare` both use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .oci import Descriptor, OCILayout
    from .sim import ImageModel
    from .sim.ztoc_adapter import LayerSource

__all__ = ["image_from_layout", "image_from_registry", "is_registry_ref", "load_image"]


def is_registry_ref(text: str) -> bool:
    """Whether ``--image`` names a registry image: not a file, not ``oci:``/``synthetic:``, and a REF that
    names its registry (``HOST[:PORT]/REPO…``, as docs/cli.md writes REF), so that a mistyped file name
    (``models/img``) is reported as a missing file rather than looked up on Docker Hub."""
    from .errors import InvalidInput
    from .oci import Reference

    if text.startswith(("oci:", "synthetic:")) or text.endswith(".json") or Path(text).exists():
        return False
    try:
        ref = Reference.parse(text)
    except InvalidInput:
        return False
    return ref.registry != "docker.io" or text.startswith("docker.io/")


def load_image(
    text: str,
    *,
    span_size: int = 4 << 20,
    min_layer_size: int = 10 << 20,
    insecure: bool = False,
    creds: str | None = None,
) -> ImageModel:
    """An image model from a JSON file, a ``synthetic:`` spec, an OCI layout ``oci:PATH[:TAG]`` or a
    registry reference ``HOST[:PORT]/REPO[:TAG|@DIGEST]``.

    For a layout or a registry image, a SOCI index of the image (v2 annotation, else v1 referrers) gives
    the spans and file tables of the layers it indexes, from their zTOCs; without an index every layer's
    zTOC is built here with ``soci_lab.ztoc`` at ``span_size`` (deterministic, so the geometry is what
    ``soci-lab index create`` gives), and layers smaller than ``min_layer_size`` keep their file table but
    no spans, as SOCI skips them.
    """
    from .errors import SimulationError
    from .sim import ImageModel, SyntheticSpec, generate

    if text.startswith("synthetic:"):
        return generate(SyntheticSpec.parse(text))
    if text.startswith("oci:"):
        return image_from_layout(text[4:], span_size=span_size, min_layer_size=min_layer_size)
    path = Path(text)
    if path.exists():
        return ImageModel.load(path)
    if is_registry_ref(text):
        return image_from_registry(text, span_size=span_size, min_layer_size=min_layer_size, insecure=insecure,
                                   creds=creds)
    raise SimulationError(f"{text}: no such image-model file (a registry image is HOST[:PORT]/REPO[:TAG])")


def image_from_registry(
    ref: str, *, span_size: int = 4 << 20, min_layer_size: int = 10 << 20, insecure: bool = False,
    creds: str | None = None,
) -> ImageModel:
    """The image model of a registry image, read from the registry.

    Manifests, the config and the SOCI index with its zTOCs are fetched (small documents); a layer blob
    is fetched only when nothing describes it otherwise — a layer the index skipped (for its file table)
    or every layer of an image without an index (to build its zTOC at ``span_size``, as ``index create``
    would). Fetched blobs live in a temporary directory that is gone when this returns.
    """
    from ._sync import run_sync

    return run_sync(_image_from_registry, ref, span_size, min_layer_size, insecure, creds)


async def _image_from_registry(ref: str, span_size: int, min_layer_size: int, insecure: bool,
                               creds: str | None) -> ImageModel:
    import tempfile

    from .artifacts.create import resolve_ref
    from .artifacts.fetch import fetch_registry_artifacts
    from .artifacts.sources import open_source
    from .config import Config
    from .errors import NoIndex
    from .oci import OCILayout, Reference
    from .remote import RegistryClient, select_first_policy
    from .sim.ztoc_adapter import LayerSource, from_ztocs

    reference = Reference.parse(ref)
    config = Config()
    config.pull_modes.soci_v1.enable = True  # inspection: find a v1 index as well as a v2 one
    config.pull_modes.soci_v2.enable = True
    async with RegistryClient(reference, creds=creds, insecure=insecure) as client:
        src = open_source(reference, client)
        resolved = await resolve_ref(src, reference)
        with tempfile.TemporaryDirectory(prefix="soci-lab-sim-") as tmp:
            layout = OCILayout(tmp)
            try:
                artifacts = await fetch_registry_artifacts(
                    src, resolved.manifest_descriptor, config=config, explicit_index_digest=None, events=None,
                    local_store=layout,
                    policy=select_first_policy, max_concurrency=8,
                )
            except NoIndex:
                artifacts = None
            layers = []
            for d in resolved.manifest.layers:
                key = str(d.digest)
                if artifacts is not None and artifacts.has_ztoc(key):
                    layer = LayerSource.from_ztoc(key, artifacts.ztoc_for(key),
                                                  ztoc_size=artifacts.ztoc_descriptor_for(key).size)
                    layer.compressed_size = d.size
                else:
                    await src.fetch_blob_into(d, layout)
                    if artifacts is not None:  # the index skipped it: a local layer
                        layer = _unindexed_layer(layout, d)
                    else:
                        layer = _layer_built_here(layout, d, span_size, min_layer_size)
                    layout.delete_blob(d.digest)
                layers.append(layer)
    index_size = artifacts.index_descriptor.size if artifacts is not None else 2_000
    model = from_ztocs(str(reference), layers, manifest_size=resolved.manifest_descriptor.size,
                       config_size=resolved.manifest.config.size, index_size=index_size)
    model.image_index_size = resolved.top_descriptor.size if resolved.top is not None else 0
    return model


def _layer_built_here(layout: OCILayout, d: Descriptor, span_size: int, min_layer_size: int) -> LayerSource:
    """A layer of an image without a SOCI index: its zTOC built at ``span_size`` as ``index create``
    would; under ``min_layer_size`` it keeps its file table but no spans (SOCI skips small layers)."""
    from .errors import UnsupportedCompression
    from .sim.ztoc_adapter import LayerSource
    from .ztoc.ztoc import build_ztoc, ztoc_to_flatbuffer

    try:
        z = build_ztoc(layout.blob_path(d.digest), media_type=d.media_type, span_size=span_size)
    except UnsupportedCompression:  # e.g. single-frame zstd: no spans, but the file table still counts
        return _unindexed_layer(layout, d)
    src = LayerSource.from_ztoc(str(d.digest), z, ztoc_size=len(ztoc_to_flatbuffer(z)))
    src.compressed_size = d.size
    if d.size < min_layer_size:  # SOCI builds no zTOC for small layers
        src.zinfo = None
        src.ztoc_size = 0
    return src


def image_from_layout(spec: str, *, span_size: int = 4 << 20, min_layer_size: int = 10 << 20) -> ImageModel:
    """The image model of ``PATH[:TAG]`` (an OCI image layout; TAG defaults to the only/first one).

    A SOCI v2 image (the tag names an image index whose manifest carries ``com.amazon.soci.index-digest``)
    is described exactly by its own index: the zTOCs stored in the layout give the spans and file tables,
    their sizes what a lazy mount fetches. Otherwise every layer's zTOC is built here at ``span_size``.
    """
    from .oci.layout import OCILayout
    from .oci.manifest import Index, Manifest, parse_manifest_or_index
    from .sim.ztoc_adapter import LayerSource, from_ztocs
    from .ztoc.index import ANNOTATION_SOCI_INDEX_DIGEST, SociIndex
    from .ztoc.ztoc import ztoc_from_flatbuffer

    root, _, tag = spec.partition(":")
    if not Path(root).is_dir() and ":" in spec:  # a path with a colon in it
        root, tag = spec, ""
    layout = OCILayout(root, create=False)
    if not tag:
        tags = layout.tags()
        tag = tags[0] if tags else layout.index().manifests[0].digest
    desc = layout.resolve(tag)
    doc = parse_manifest_or_index(layout.read_blob(desc.digest), desc.media_type)
    image_index_size = 0
    if isinstance(doc, Index):
        image_index_size = desc.size
        desc = doc.select()
        doc = Manifest.from_bytes(layout.read_blob(desc.digest), desc.media_type)
    soci_digest = doc.annotations.get(ANNOTATION_SOCI_INDEX_DIGEST)
    index_size = 2_000
    ztocs: dict[str, Any] = {}
    if soci_digest and layout.has(soci_digest):
        raw_index = layout.read_blob(soci_digest)
        index_size = len(raw_index)
        ztocs = SociIndex.from_bytes(raw_index).ztoc_descriptors()
    layers = []
    for d in doc.layer_descriptors():
        if soci_digest:  # the index decides which layers are lazy
            zd = ztocs.get(str(d.digest))
            if zd is None:
                layers.append(_unindexed_layer(layout, d))
                continue
            z = ztoc_from_flatbuffer(layout.read_blob(zd.digest))
            src = LayerSource.from_ztoc(str(d.digest), z, ztoc_size=zd.size)
            src.compressed_size = d.size
            layers.append(src)
            continue
        layers.append(_layer_built_here(layout, d, span_size, min_layer_size))
    model = from_ztocs(
        f"oci:{spec}", layers, manifest_size=desc.size, config_size=doc.config.size, index_size=index_size
    )
    model.image_index_size = image_index_size
    return model


def _unindexed_layer(layout: OCILayout, d: Descriptor) -> LayerSource:
    """A layer without spans: sizes and file table from decompressing the blob once."""
    import gzip

    import zstandard

    from .sim.ztoc_adapter import LayerSource
    from .ztoc.toc import TarScanner

    mt = d.media_type
    with layout.open_blob(d.digest) as raw:
        if "zstd" in mt:
            stream: Any = zstandard.ZstdDecompressor().stream_reader(raw)
            compression = "zstd"
        elif "gzip" in mt:
            stream, compression = gzip.GzipFile(fileobj=raw), "gzip"
        else:
            stream, compression = raw, "none"
        scanner = TarScanner()
        while chunk := stream.read(1 << 20):
            scanner.feed(chunk)
        size = scanner.finish()
    return LayerSource(str(d.digest), compression, d.size, size, toc=scanner.entries)
