"""``build_image``: directories in, an OCI image out — into an OCI layout or pushed to a registry.

One layer per directory, bottom first. Each layer is tarred deterministically (``tarwriter``), compressed
(``compress``) and hashed twice while it streams: the tar bytes give the diffID, the compressed bytes the
layer digest. Compressed layers are staged in a private temporary directory, then stored through the
verified ``OCILayout`` writer or pushed; the manifest is tagged only after every blob it names is in place,
so a failed build leaves no tag pointing at missing or unverified content. Layers are built in parallel
worker threads (zlib, zstd and hashlib release the GIL on large buffers).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidReference, LayerSourceError
from ..oci import Descriptor, Digest, ImageConfig, Manifest, OCILayout, Platform, Reference
from ..oci import mediatypes as mt
from .compress import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_GZIP_LEVEL,
    DEFAULT_ZSTD_LEVEL,
    check_compression,
    make_compressor,
)
from .config import RuntimeConfig, image_config, image_manifest
from .tarwriter import write_tree_tar

if TYPE_CHECKING:
    from ..events import EventRecorder

log = logging.getLogger(__name__)

#: size of the buffered writes to a staged layer file
_STAGE_BUFFER = 1 << 20


@dataclass(frozen=True)
class LayerSpec:
    """One layer to build: its directory, and optionally what its history entry says."""

    path: Path
    created_by: str | None = None

    @classmethod
    def of(cls, item: str | os.PathLike[str] | LayerSpec) -> LayerSpec:
        return item if isinstance(item, LayerSpec) else cls(Path(item))

    @property
    def history_text(self) -> str:
        return self.created_by or f"soci-lab image build --layer {self.path.name or self.path}"


@dataclass(frozen=True)
class BuiltLayer:
    """A built layer: its descriptor (compressed digest and size), diffID and what went into it."""

    descriptor: Descriptor
    diff_id: Digest
    source: Path
    uncompressed_size: int
    entries: int
    content_bytes: int
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    staged: Path | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.descriptor.digest),
            "diff_id": str(self.diff_id),
            "size": self.descriptor.size,
            "media_type": self.descriptor.media_type,
            "uncompressed_size": self.uncompressed_size,
            "entries": self.entries,
            "source": str(self.source),
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class BuildResult:
    """What ``build_image`` made and where it put it."""

    ref: Reference
    manifest: Manifest
    config: ImageConfig
    layers: tuple[BuiltLayer, ...]

    @property
    def digest(self) -> Digest:
        """The manifest digest."""
        return self.manifest.digest

    @property
    def manifest_descriptor(self) -> Descriptor:
        return self.manifest.descriptor()

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "digest": str(self.digest),
            "media_type": self.manifest.media_type,
            "size": len(self.manifest.to_bytes()),
            "config_digest": str(self.manifest.config.digest),
            "layers": [layer.to_json() for layer in self.layers],
        }


def build_layer(
    source: str | os.PathLike[str],
    stage_dir: str | os.PathLike[str],
    *,
    compression: str = "gzip",
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    frame_size: int = DEFAULT_FRAME_SIZE,
    on_skip: Callable[[str, str], None] | None = None,
) -> BuiltLayer:
    """Tar and compress one directory into a file under ``stage_dir``; returns the layer and that file."""
    name = check_compression(compression)
    t0 = time.monotonic()
    fd, tmp = tempfile.mkstemp(prefix="layer-", suffix=".tmp", dir=stage_dir)
    staged = Path(tmp)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb", buffering=_STAGE_BUFFER) as f:

            def out(chunk: bytes) -> None:
                nonlocal size
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)

            comp = make_compressor(name, out, gzip_level=gzip_level, zstd_level=zstd_level, frame_size=frame_size)
            stats = write_tree_tar(source, comp.write, on_skip=on_skip)
            comp.finish()
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    assert stats.diff_id is not None
    desc = Descriptor(mt.layer_media_type(name), Digest(f"sha256:{digest.hexdigest()}"), size)
    return BuiltLayer(
        descriptor=desc,
        diff_id=stats.diff_id,
        source=Path(source),
        uncompressed_size=stats.size,
        entries=stats.entries,
        content_bytes=stats.content_bytes,
        skipped=tuple(stats.skipped),
        seconds=time.monotonic() - t0,
        staged=staged,
    )


def _check_sources(specs: Sequence[LayerSpec]) -> None:
    if not specs:
        raise LayerSourceError("an image needs at least one layer directory")
    for spec in specs:
        try:
            st = os.stat(spec.path)
        except FileNotFoundError:
            raise LayerSourceError(f"layer directory {spec.path} does not exist") from None
        except OSError as exc:
            raise LayerSourceError(f"layer directory {spec.path}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise LayerSourceError(f"layer source {spec.path} is not a directory")


def _default_skip_warning(name: str, reason: str) -> None:
    log.warning("skipped %s: %s", name, reason)


def build_image(
    layers: Sequence[str | os.PathLike[str] | LayerSpec],
    ref: str | Reference,
    *,
    compression: str = "gzip",
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    span_size: int = DEFAULT_FRAME_SIZE,
    platform: Platform | None = None,
    runtime: RuntimeConfig | None = None,
    created: str | None = None,
    jobs: int | None = None,
    insecure: bool = False,
    creds: str | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    events: EventRecorder | None = None,
) -> BuildResult:
    """Build an image from ``layers`` (directories, bottom first) and store it at ``ref``.

    ``ref`` is ``oci:PATH[:TAG]`` (an OCI image layout, created if needed) or ``HOST[:PORT]/REPO[:TAG]``
    (pushed through ``soci_lab.remote``). ``compression`` is ``gzip`` (``gzip_level``), ``zstd`` (one
    frame per ``span_size`` uncompressed bytes, ``zstd_level``) or ``none``. ``platform`` defaults to the
    host's; ``created`` (RFC 3339) to ``SOURCE_DATE_EPOCH`` or the epoch. ``jobs`` layers are built at
    once (default: up to the CPU count). ``on_skip(name, reason)`` hears of entries left out (sockets);
    by default they are logged as warnings. ``events`` records the push (``push`` per layer,
    ``http_request`` per request). Returns the manifest, config and layers.
    """
    reference = Reference.parse(ref) if isinstance(ref, str) else ref
    if reference.digest is not None:
        raise InvalidReference(f"cannot build into {reference}: a build names a tag, its digest is not known yet")
    name = check_compression(compression)
    specs = [LayerSpec.of(x) for x in layers]
    _check_sources(specs)
    skip = on_skip or _default_skip_warning
    workers = max(1, min(jobs or (os.cpu_count() or 1), len(specs)))

    layout = OCILayout(reference.layout_path) if reference.layout_path is not None else None
    stage_parent = None
    if layout is not None:
        layout.ingest_dir.mkdir(parents=True, exist_ok=True)
        stage_parent = layout.ingest_dir  # same file system as the blobs
    with tempfile.TemporaryDirectory(prefix="soci-lab-build-", dir=stage_parent) as stage:

        def one(spec: LayerSpec) -> BuiltLayer:
            return build_layer(
                spec.path,
                stage,
                compression=name,
                gzip_level=gzip_level,
                zstd_level=zstd_level,
                frame_size=span_size,
                on_skip=lambda n, why: skip(f"{spec.path}/{n}", why),
            )

        if workers == 1:
            built = [one(s) for s in specs]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="soci-lab-build") as pool:
                built = list(pool.map(one, specs))

        config = image_config(
            [b.diff_id for b in built],
            [s.history_text for s in specs],
            platform=platform,
            runtime=runtime,
            created=created,
        )
        manifest = image_manifest(config, [b.descriptor for b in built])
        if layout is not None:
            _store_in_layout(layout, built, config, manifest, reference.tag)
        else:
            _push_to_registry(reference, built, config, manifest, insecure=insecure, creds=creds, events=events)
    # the staged files are gone with the staging directory
    return BuildResult(reference, manifest, config, tuple(replace(b, staged=None) for b in built))


def _store_in_layout(
    layout: OCILayout, built: Sequence[BuiltLayer], config: ImageConfig, manifest: Manifest, tag: str | None
) -> None:
    for layer in built:
        assert layer.staged is not None
        layout.import_file(layer.staged, layer.descriptor.digest, layer.descriptor.size)
    layout.write_blob(config.to_bytes(), manifest.config.digest, manifest.config.size)
    layout.put_document(manifest, tag)


def _push_to_registry(
    ref: Reference,
    built: Sequence[BuiltLayer],
    config: ImageConfig,
    manifest: Manifest,
    *,
    insecure: bool,
    creds: str | None,
    events: EventRecorder | None,
) -> None:
    from .push import push_image_files

    blobs = [(b.descriptor, b.staged) for b in built]
    push_image_files(ref, blobs, config, manifest, insecure=insecure, creds=creds, events=events)
