"""Eager pulls: the parallel pull/unpack mode and the sequential (containerd 1.6) baseline.

What the other rooms call:

* :class:`ParallelPuller` — ``async with ParallelPuller(root, source, config=cfg.pull_modes.parallel_pull_unpack,
  content=layout, recorder=rec) as p:`` then ``await p.mount_parallel(image_key, layers, i, mountpoint)`` per
  layer in order (upstream's ``MountParallel``), or ``await p.pull(image_key, layers, mountpoints)``;
  ``p.clean_image(image_key)`` on snapshot removal.
* :class:`SequentialPuller` — ``await SequentialPuller(root, source, content=layout).pull(image_key, layers,
  mountpoints)``.
* :class:`LayerSpec` (``LayerSpec.from_descriptor(desc, diff_id)``), :class:`RegistryBlobSource` (over
  :class:`soci_lab.remote.RegistryClient`), :class:`LocalFileSource`.
* :func:`ztoc_span_decompressors` — the ``span_decompressor=`` hook of :class:`ParallelPuller` from the zTOCs one
  has: a big gzip layer with a zTOC is inflated span-parallel from its checkpoints (:mod:`.spanpar`).
* :func:`apply_layer` / :func:`apply_layer_async` — apply one blob file into an empty directory with
  verification and overlay whiteout conversion (also what the lazy mode needs for small, unindexed layers).

Modules: :mod:`.jobs` (state machine), :mod:`.storage` (job directories), :mod:`.resources` (limits),
:mod:`.source` (blob sources), :mod:`.fetch` (chunked download), :mod:`.schedule` (which layer gets an unpack
slot, and which may be applied while it downloads), :mod:`.decompress`, :mod:`.chunkstream`,
:mod:`.tarapply` (safe untar), :mod:`.archive` (decompress + verify + apply on two threads),
:mod:`.spanpar` (zTOC span-parallel inflate), :mod:`.applyproc` (apply in worker processes, used by the
parallel puller), :mod:`.parallel`, :mod:`.sequential`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it. Imported on first use (PEP 562), so that an apply worker
#: process, which needs only :mod:`.archive`, does not pay ~0.2 s importing the span-parallel inflater,
#: flatbuffers and numpy at every start (``python -X importtime -c "import soci_lab.unpack.applyproc"``).
_EXPORTS = {
    "LayerApplyResult": "archive",
    "apply_layer": "archive",
    "apply_layer_async": "archive",
    "SpanDecompressor": "decompress",
    "ImageUnpackJob": "jobs",
    "LayerUnpackJob": "jobs",
    "LayerUnpackJobStatus": "jobs",
    "UnpackJobs": "jobs",
    "LayerOutcome": "parallel",
    "ParallelPuller": "parallel",
    "LayerUnpackResourceController": "resources",
    "UnpackQueue": "schedule",
    "SemaphoreWithNil": "resources",
    "SequentialPuller": "sequential",
    "BlobProbe": "source",
    "BlobSource": "source",
    "ContentStore": "source",
    "LayerSpec": "source",
    "LocalFileSource": "source",
    "RegistryBlobSource": "source",
    "image_layer_specs": "source",
    "ZtocSpanDecompressor": "spanpar",
    "ztoc_span_decompressors": "spanpar",
    "LayerUnpackDiskStorage": "storage",
    "LayerUnpackJobStorage": "storage",
    "ApplyOptions": "tarapply",
    "ApplyStats": "tarapply",
    "DevicePolicy": "tarapply",
    "OverlayOpaqueType": "tarapply",
    "TarApplier": "tarapply",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .archive import LayerApplyResult, apply_layer, apply_layer_async
    from .decompress import SpanDecompressor
    from .jobs import ImageUnpackJob, LayerUnpackJob, LayerUnpackJobStatus, UnpackJobs
    from .parallel import LayerOutcome, ParallelPuller
    from .resources import LayerUnpackResourceController, SemaphoreWithNil
    from .schedule import UnpackQueue
    from .sequential import SequentialPuller
    from .source import (
        BlobProbe,
        BlobSource,
        ContentStore,
        LayerSpec,
        LocalFileSource,
        RegistryBlobSource,
        image_layer_specs,
    )
    from .spanpar import ZtocSpanDecompressor, ztoc_span_decompressors
    from .storage import LayerUnpackDiskStorage, LayerUnpackJobStorage
    from .tarapply import ApplyOptions, ApplyStats, DevicePolicy, OverlayOpaqueType, TarApplier

__all__ = [
    "ApplyOptions",
    "ApplyStats",
    "BlobProbe",
    "BlobSource",
    "ContentStore",
    "DevicePolicy",
    "ImageUnpackJob",
    "LayerApplyResult",
    "LayerOutcome",
    "LayerSpec",
    "LayerUnpackDiskStorage",
    "LayerUnpackJob",
    "LayerUnpackJobStatus",
    "LayerUnpackJobStorage",
    "LayerUnpackResourceController",
    "LocalFileSource",
    "OverlayOpaqueType",
    "ParallelPuller",
    "RegistryBlobSource",
    "SemaphoreWithNil",
    "SequentialPuller",
    "SpanDecompressor",
    "TarApplier",
    "UnpackJobs",
    "UnpackQueue",
    "ZtocSpanDecompressor",
    "apply_layer",
    "apply_layer_async",
    "image_layer_specs",
    "ztoc_span_decompressors",
]
