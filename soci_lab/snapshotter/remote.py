"""Remote (lazy) layers: the remote-snapshotter protocol on top of the Filesystem room's lazy layer server.

containerd's unpacker (and ``soci-lab image rpull``) prepares each layer with the label
``containerd.io/snapshot.ref`` = the layer's chain ID (the snapshot it wants committed) and, passed
through by containerd's metadata layer, labels under ``containerd.io/snapshot/``:

* ``containerd.io/snapshot/cri.image-ref`` — the image reference (registry/repo:tag);
* ``containerd.io/snapshot/cri.manifest-digest`` — the manifest being pulled;
* ``containerd.io/snapshot/cri.layer-digest`` — the layer (compressed blob digest);
* ``containerd.io/snapshot/remote/soci.index.digest`` — optional: the SOCI index to use (skips discovery).

When they are there, Prepare does not hand containerd an empty directory to unpack into: the layer is
mounted here (``lazy``: a FUSE server from :mod:`soci_lab.lazy.mount` serving spans on demand; ``local``:
a layer the SOCI index leaves unindexed, downloaded and applied by :mod:`soci_lab.unpack`, as upstream's
``MountLocal``), committed as the target, and Prepare answers AlreadyExists, so containerd skips that
layer's download. The image is resolved and its SOCI artifacts discovered through
:class:`soci_lab.snapshot.Filesystem` (once per manifest) — the same data path as ``soci-lab mount``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..config import Config
from ..errors import SociLabError
from ..events import EventRecorder

LABEL_TARGET = "containerd.io/snapshot.ref"
LABEL_IMAGE_REF = "containerd.io/snapshot/cri.image-ref"
LABEL_MANIFEST = "containerd.io/snapshot/cri.manifest-digest"
LABEL_LAYER = "containerd.io/snapshot/cri.layer-digest"
LABEL_INDEX = "containerd.io/snapshot/remote/soci.index.digest"
#: set on a snapshot this module mounted: ``lazy`` or ``local`` (a restart re-attaches the lazy ones)
LABEL_HOW = "containerd.io/snapshot/remote/soci-lab.how"


@dataclass(frozen=True)
class RemoteRequest:
    """What the labels of one Prepare ask for."""

    target: str
    image_ref: str
    layer: str
    manifest: str = ""
    index: str = ""

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> RemoteRequest | None:
        """The request, or None when the labels do not ask for a remote layer (a plain Prepare)."""
        target, ref, layer = labels.get(LABEL_TARGET), labels.get(LABEL_IMAGE_REF), labels.get(LABEL_LAYER)
        if not (target and ref and layer):
            return None
        return cls(target, ref, layer, labels.get(LABEL_MANIFEST, ""), labels.get(LABEL_INDEX, ""))

    @property
    def pinned_ref(self) -> str:
        """The image ref pinned to the manifest digest when the labels name one."""
        if not self.manifest:
            return self.image_ref
        name = self.image_ref.split("@", 1)[0]
        tail = name.rsplit("/", 1)[-1]
        if ":" in tail:
            name = name[: len(name) - len(tail)] + tail.split(":", 1)[0]
        return f"{name}@{self.manifest}"


class RemoteLayers:
    """Mounts remote layers under the snapshotter's root; one :class:`Filesystem` context per manifest."""

    def __init__(self, state_dir: Path, *, config: Config | None = None, insecure: bool = False,
                 events: EventRecorder | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.config = config or Config()
        self.insecure = insecure
        self.events = events if events is not None else EventRecorder(strategy="snapshotter")
        self._lock = threading.Lock()
        #: LayerMount per snapshot directory
        self.mounts: dict[str, Any] = {}
        self._plans: dict[tuple[str, str], Any] = {}

    def warm(self) -> None:
        """Start the lazy layer servers' pre-warmed process now (in the background), so the first lazy
        Prepare does not pay an interpreter's start-up: the daemon is long-lived, its mounts should not be."""
        from ..lazy import mount, zygote

        if mount.USE_ZYGOTE:
            threading.Thread(target=zygote.warm, name="zygote-warm", daemon=True).start()

    def _filesystem(self, req: RemoteRequest) -> Any:
        from ..snapshot import Filesystem

        return Filesystem(self.state_dir, config=self.config, insecure=self.insecure, events=self.events,
                          explicit_index_digest=req.index or None, owns_state_dir=False)

    async def _plan(self, fs: Any, image: Any, req: RemoteRequest) -> Any:
        """The image's plan (pull mode, per-layer how, SOCI artifacts), made once per manifest and index:
        containerd prepares an image's layers one by one, discovery need not run for each."""
        key = (str(image.manifest_descriptor.digest), req.index)
        with self._lock:
            plan = self._plans.get(key)
        if plan is None:
            plan = await fs.prepare(image)  # the [pull_modes] of the config decide, as for ``soci-lab mount``
            if plan.artifacts is None:  # no index found (or discovery failed): ask again next layer
                return plan
            with self._lock:
                self._plans[key] = plan
                while len(self._plans) > 16:  # images pulled long ago need not stay planned
                    self._plans.pop(next(iter(self._plans)))
        return plan

    def mount(self, req: RemoteRequest, dest: Path, serve_dir: Path) -> str:
        """Mount layer ``req.layer`` at ``dest`` (an empty directory): returns ``lazy`` or ``local``."""
        return anyio.run(self._mount, req, dest, serve_dir)

    async def _mount(self, req: RemoteRequest, dest: Path, serve_dir: Path) -> str:
        fs = self._filesystem(req)
        t0 = self.events.now()
        async with fs.open_image(req.pinned_ref) as image:
            spec = next((s for s in image.layers if s.digest == req.layer), None)
            if spec is None:
                raise SociLabError(f"layer {req.layer} is not in image {req.pinned_ref}")
            plan = await self._plan(fs, image, req)
            how = next((p.how for p in plan.layers if p.digest == req.layer), "local")
            if how == "lazy":
                await self._mount_lazy(fs, image, plan.artifacts, spec, dest, serve_dir)
            else:
                await self._mount_local(image, spec, dest, serve_dir)
                how = "local"
        self.events.emit("mount", t0, layer=req.layer, path=str(dest), how=how, op="remote")
        return how

    async def _mount_lazy(self, fs: Any, image: Any, arts: Any, spec: Any, dest: Path, serve_dir: Path) -> None:
        from ..lazy.mount import LayerMount, LazyLayerSpec, ServeOptions
        from ..lazy.prefetch import lazy_policy
        from ..oci.layout import OCILayout

        ztoc = OCILayout(fs.state.content).read_blob(str(arts.ztoc_descriptor_for(spec.digest).digest))
        lazy = LazyLayerSpec(digest=spec.digest, ztoc=ztoc, blob_size=spec.size, registry=image.ref.api_host,
                             repository=image.ref.repository, insecure=self.insecure)
        pf_desc = arts.index.prefetch_descriptors().get(spec.digest)
        prefetch = arts.prefetch_for(spec.digest)
        options = ServeOptions(
            config=self.config,
            policy=lazy_policy(self.config, arts.index.annotations, pf_desc.annotations if pf_desc else None),
            prefetch_ranges=[(s.start_span, s.end_span, s.priority) for s in prefetch.spans] if prefetch else [],
            cache_dir=None if self.config.filesystem_cache_type == "memory" else str(serve_dir / "cache"),
            events_path=str(serve_dir / "events.jsonl"),
            run_id=self.events.run_id,
        )
        m = LayerMount(lazy, dest, options, work_dir=serve_dir)
        try:
            await anyio.to_thread.run_sync(m.start, 60.0)
        except BaseException:
            with contextlib.suppress(Exception):
                m.unmount()
            raise
        with self._lock:
            self.mounts[str(dest)] = m

    async def _mount_local(self, image: Any, spec: Any, dest: Path, serve_dir: Path) -> None:
        from ..unpack import RegistryBlobSource, apply_layer_async
        from ..unpack.fetch import download_layer

        serve_dir.mkdir(parents=True, exist_ok=True)
        blob = serve_dir / "blob"
        try:
            await download_layer(RegistryBlobSource(image.client, image.ref.repository), spec, blob,
                                 image=str(image.manifest_descriptor.digest), recorder=self.events)
            await apply_layer_async(blob, dest, media_type=spec.media_type, expected_digest=spec.digest,
                                    expected_diff_id=spec.diff_id, recorder=self.events, layer=spec.digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                blob.unlink()

    def unmount(self, dest: Path) -> None:
        """Stop the FUSE server of the layer at ``dest`` (if this process mounted one) or detach a stale mount."""
        from ..lazy.mount import force_unmount, is_mounted

        with self._lock:
            m = self.mounts.pop(str(dest), None)
        if m is not None:
            with contextlib.suppress(Exception):
                m.unmount()
        if is_mounted(dest):
            force_unmount(dest)
