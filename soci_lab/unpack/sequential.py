"""The sequential baseline: how containerd 1.6 pulls and unpacks an image.

containerd 1.6's ``Pull`` with unpack fetches layers with at most 3 concurrent whole-blob downloads (its
default ``max_concurrent_downloads``), in layer order, each a single GET into the content store, and
its unpacker applies the layers **one at a time, in order**, each as soon as it is fetched and the layer
below it is applied (each apply checks the diffID while streaming). This module reproduces that with the
same download, verify and apply code as the parallel mode, so the comparison measures the scheduling, not
two implementations.

Layers land at the mountpoints given; a layer is renamed there only once it is applied and verified.
Scratch space lives under ``<root>/sequential/unpack/<id>/`` (wiped at start, like the parallel mode's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..config import DecompressStream
from ..events import EventRecorder, NullRecorder
from .archive import apply_layer_async
from .fetch import download_layer
from .parallel import LayerOutcome, prepare_mountpoint
from .resources import LayerUnpackResourceController
from .source import BlobSource, ContentStore, LayerSpec
from .storage import LayerUnpackDiskStorage
from .tarapply import ApplyOptions

#: containerd 1.6's default max_concurrent_downloads.
CONTAINERD_MAX_CONCURRENT_DOWNLOADS = 3


class SequentialPuller:
    """containerd-1.6-like pull: ≤ 3 concurrent whole-layer downloads, in-order one-at-a-time unpack."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        source: BlobSource,
        *,
        max_concurrent_downloads: int = CONTAINERD_MAX_CONCURRENT_DOWNLOADS,
        content: ContentStore | None = None,
        options: ApplyOptions | None = None,
        recorder: EventRecorder | None = None,
        decompress_streams: dict[str, DecompressStream] | None = None,
    ) -> None:
        self.root = Path(root)
        self.source = source
        self.content = content
        self.options = options or ApplyOptions()
        self.recorder = recorder if recorder is not None else NullRecorder()
        self.decompress_streams = decompress_streams or {}
        self.resources = LayerUnpackResourceController(
            max_downloads=max_concurrent_downloads, max_downloads_per_image=max_concurrent_downloads
        )
        self.storage: LayerUnpackDiskStorage | None = None

    async def pull(
        self, image: str, layers: Sequence[LayerSpec], mountpoints: Sequence[str | os.PathLike[str]]
    ) -> list[LayerOutcome]:
        """Pull every layer of ``image``; layer ``i`` ends up at ``mountpoints[i]``."""
        if len(layers) != len(mountpoints):
            raise ValueError("pull needs one mountpoint per layer")
        if self.storage is None:
            self.storage = await anyio.to_thread.run_sync(LayerUnpackDiskStorage, self.root / "sequential")
        storage = self.storage
        ids = [storage.create() for _ in layers]
        fetched: list[anyio.Event] = [anyio.Event() for _ in layers]
        ingests: list[Path | None] = [None] * len(layers)
        hows = ["remote"] * len(layers)
        nbytes = [0] * len(layers)
        errors: list[BaseException | None] = [None] * len(layers)
        outcomes: list[LayerOutcome] = []

        async def fetch(i: int, layer: LayerSpec) -> None:
            try:
                if self.content is not None and await anyio.to_thread.run_sync(self.content.has, layer.digest):
                    ingests[i] = self.content.blob_path(layer.digest)
                    hows[i] = "local"
                    t = self.recorder.now()
                    self.recorder.emit("cache_hit", t, t, layer=layer.digest, nbytes=layer.size)
                else:
                    path = storage.job_path(ids[i]) / layer.digest
                    nbytes[i] = await download_layer(
                        self.source, layer, path, image=image, resources=self.resources, recorder=self.recorder
                    )
                    ingests[i] = path
            except Exception as exc:
                errors[i] = exc
            finally:
                fetched[i].set()

        try:
            async with anyio.create_task_group() as tg:
                for i, layer in enumerate(layers):
                    tg.start_soon(fetch, i, layer)
                for i, layer in enumerate(layers):
                    await fetched[i].wait()
                    if errors[i] is not None:
                        tg.cancel_scope.cancel()
                        raise errors[i]  # type: ignore[misc]
                    ingest = ingests[i]
                    assert ingest is not None
                    fs = storage.job_path(ids[i]) / "fs"
                    result = await apply_layer_async(
                        ingest,
                        fs,
                        media_type=layer.media_type,
                        expected_digest=layer.digest,
                        expected_diff_id=layer.diff_id,
                        options=self.options,
                        decompress_streams=self.decompress_streams,
                        recorder=self.recorder,
                        layer=layer.digest,
                    )
                    target = Path(mountpoints[i])

                    def rename(fs: Path = fs, target: Path = target) -> None:
                        prepare_mountpoint(target)
                        os.rename(fs, target)

                    await anyio.to_thread.run_sync(rename)
                    if hows[i] == "remote" and self.content is not None:
                        await anyio.to_thread.run_sync(self.content.import_file, ingest, layer.digest, layer.size)
                    outcomes.append(LayerOutcome(layer.digest, target, hows[i], nbytes[i], result))
        except BaseExceptionGroup as group:
            # downloads keep their errors in ``errors``: a group carries the unpack loop's one clear error
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        finally:
            for job_id in ids:
                storage.delete(job_id)
        return outcomes


__all__ = ["CONTAINERD_MAX_CONCURRENT_DOWNLOADS", "SequentialPuller"]
