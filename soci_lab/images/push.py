"""Pushing a freshly built image to a registry through ``soci_lab.remote``.

Layers go first (from their staged files, a few at once), then the config, then the manifest under the
tag: a registry never holds a tag whose manifest names a blob it has not received. Each blob's digest and
size are checked locally by the client before upload.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._sync import run_sync
from ..oci import Descriptor, ImageConfig, Manifest, Reference

if TYPE_CHECKING:
    from ..events import EventRecorder

#: layer uploads in flight at once
PUSH_CONCURRENCY = 3


async def apush_image_files(
    ref: Reference,
    blobs: Sequence[tuple[Descriptor, Path | None]],
    config: ImageConfig,
    manifest: Manifest,
    *,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
) -> Descriptor:
    """Upload ``blobs`` (descriptor, file), the config and the manifest to ``ref``; returns the manifest's
    descriptor as the registry stored it. With ``events``, each layer upload is a ``push`` event (and
    every HTTP request an ``http_request`` event)."""
    from ..remote import RegistryClient

    limiter = anyio.CapacityLimiter(PUSH_CONCURRENCY)
    async with RegistryClient(ref, creds=creds, insecure=insecure, events=events) as rc:

        async def one(desc: Descriptor, path: Path | None) -> None:
            async with limiter:
                if path is None:
                    raise ValueError(f"layer {desc.digest} has no staged file to push")
                step = (
                    events.step("push", layer=str(desc.digest), nbytes=desc.size)
                    if events is not None
                    else contextlib.nullcontext()
                )
                with step:
                    await rc.push_blob(ref.repository, path, desc.digest, desc.size)

        async with anyio.create_task_group() as tg:
            for desc, path in blobs:
                tg.start_soon(one, desc, path)
        await rc.push_blob(ref.repository, config.to_bytes(), manifest.config.digest, manifest.config.size)
        return await rc.push_manifest(ref.repository, manifest.to_bytes(), manifest.media_type, ref.tag)


def push_image_files(
    ref: Reference,
    blobs: Sequence[tuple[Descriptor, Path | None]],
    config: ImageConfig,
    manifest: Manifest,
    *,
    insecure: bool = False,
    creds: str | None = None,
    events: EventRecorder | None = None,
) -> Descriptor:
    """``apush_image_files`` for synchronous callers (runs its own event loop; call it from a worker
    thread when an event loop is already running, e.g. in a notebook)."""
    return run_sync(
        lambda: apush_image_files(ref, blobs, config, manifest, insecure=insecure, creds=creds, events=events)
    )
