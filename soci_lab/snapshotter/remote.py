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

When ``[pull_modes]`` make an image ``parallel``, its layers go through one daemon-wide
:class:`~soci_lab.unpack.ParallelPuller`, as upstream's ``MountParallel``: the first Prepare of the image
starts every layer from it up downloading and unpacking (the puller's slots and job state machine), each
Prepare waits for its layer's verified tree and renames it into the snapshot (``rebase``). The image's
registry client stays open until its last layer is in place. That needs one event loop for the daemon's
life (the gRPC server's handlers are threads): :class:`RemoteLayers` runs one in a thread of its own
(an anyio blocking portal) and every mount is a call into it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

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


class ImageSources:
    """One :class:`~soci_lab.unpack.BlobSource` for the daemon's puller over the images being pulled: a
    layer's requests go to the source (registry client and repository) of the image that asked for it."""

    def __init__(self) -> None:
        self._by_layer: dict[str, Any] = {}

    def add(self, layers: list[Any], source: Any) -> None:
        for spec in layers:
            self._by_layer[spec.digest] = source

    def remove(self, layers: list[Any], source: Any) -> None:
        for spec in layers:
            if self._by_layer.get(spec.digest) is source:
                del self._by_layer[spec.digest]

    def _source(self, layer: Any) -> Any:
        try:
            return self._by_layer[layer.digest]
        except KeyError:
            raise SociLabError(f"layer {layer.digest} belongs to no image being pulled") from None

    async def probe(self, layer: Any) -> Any:
        return await self._source(layer).probe(layer)

    async def fetch(self, layer: Any, sink: Any) -> int:
        return int(await self._source(layer).fetch(layer, sink))

    async def fetch_range(self, layer: Any, lower: int, upper: int, sink: Any) -> int:
        return int(await self._source(layer).fetch_range(layer, lower, upper, sink))


@dataclass
class ParallelImage:
    """An image whose layers the daemon's puller is pulling: its open registry client (``stack``), its
    layers (unique, in order) and those still to be claimed by a Prepare."""

    key: str
    layers: list[Any]
    source: Any
    stack: contextlib.AsyncExitStack
    remaining: set[str] = field(default_factory=set)
    claiming: set[str] = field(default_factory=set)


class RemoteLayers:
    """Mounts remote layers under the snapshotter's root; one :class:`Filesystem` context per manifest.

    Its coroutines run on one event loop in a thread of its own (started on first use, ended by
    :meth:`close`), shared by every Prepare: the parallel puller and its background downloads live there."""

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
        self._portal: Any = None
        self._portal_cm: Any = None
        #: the daemon's ParallelPuller (entered on the loop when an image is first pulled in parallel)
        self.puller: Any = None
        self._serving: Any = None
        self.sources = ImageSources()
        #: images being pulled in parallel, by manifest digest
        self.parallel: dict[str, ParallelImage] = {}

    #: what a remote Prepare runs (resolve, discovery, a lazy or local mount, the puller), imported by warm()
    PREIMPORTS = ("soci_lab.snapshot.filesystem", "soci_lab.lazy.mount", "soci_lab.lazy.prefetch", "soci_lab.remote",
                  "soci_lab.artifacts", "soci_lab.unpack", "soci_lab.unpack.fetch", "soci_lab.oci.layout")

    def warm(self) -> None:
        """Make the first Prepare as fast as the next: import what a remote Prepare runs, start the event
        loop, and start the lazy layer servers' forker (in the background) and, in parallel mode, the puller
        with its apply workers. The daemon is long-lived; its mounts should not pay its start-up (the first
        Prepare of a fresh daemon spent 2.8 s importing and starting the loop)."""
        import importlib

        from ..lazy import mount, zygote

        if mount.USE_ZYGOTE:
            threading.Thread(target=zygote.warm, name="zygote-warm", daemon=True).start()
        for name in self.PREIMPORTS:
            importlib.import_module(name)
        self._loop()
        if self.config.pull_modes.parallel_pull_unpack.enable:  # its apply workers, started once
            self._loop().call(self._the_puller)

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

    # -- the daemon's event loop ---------------------------------------------------------------------------

    def _loop(self) -> Any:
        """The blocking portal of the daemon's event loop (started on first use), with the task that owns
        the loop's long-lived work (the puller) running in it."""
        with self._lock:
            if self._portal is None:
                cm = anyio.from_thread.start_blocking_portal()
                portal = cm.__enter__()
                self._serving, _ = portal.start_task(self._serve)
                self._portal, self._portal_cm = portal, cm
            return self._portal

    async def _serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """The loop's root task, until :meth:`close`: the puller's task runs in its task group."""
        self._closing = anyio.Event()
        self._puller_lock = anyio.Lock()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await self._closing.wait()
            for held in list(self.parallel.values()):
                await self._release(held)

    def close(self) -> None:
        """End the event loop: images still being pulled in parallel are cancelled, the puller closed.
        Lazy layers stay mounted (their servers are processes of their own)."""
        with self._lock:
            portal, cm = self._portal, self._portal_cm
            self._portal = self._portal_cm = None
        if portal is None:
            return
        try:
            portal.call(self._closing.set)
            self._serving.result(timeout=60)
        finally:
            cm.__exit__(None, None, None)

    def mount(self, req: RemoteRequest, dest: Path, serve_dir: Path) -> str:
        """Mount layer ``req.layer`` at ``dest`` (an empty directory): returns ``lazy``, ``parallel`` or
        ``local``. Runs on the daemon's event loop; the calling thread waits."""
        return str(self._loop().call(self._mount, req, dest, serve_dir))

    async def _mount(self, req: RemoteRequest, dest: Path, serve_dir: Path) -> str:
        t0 = self.events.now()
        await self._forget_finished()
        held = self.parallel.get(req.manifest) if req.manifest else None
        if held is not None and req.layer in held.remaining and req.layer not in held.claiming:
            how = await self._mount_parallel(held, req, dest)
        else:
            fs = self._filesystem(req)
            stack = contextlib.AsyncExitStack()
            kept = False
            try:
                image = await stack.enter_async_context(fs.open_image(req.pinned_ref))
                spec = next((s for s in image.layers if s.digest == req.layer), None)
                if spec is None:
                    raise SociLabError(f"layer {req.layer} is not in image {req.pinned_ref}")
                plan = await self._plan(fs, image, req)
                how = next((p.how for p in plan.layers if p.digest == req.layer), "local")
                if how == "lazy":
                    await self._mount_lazy(fs, image, plan, spec, dest, serve_dir)
                elif how == "parallel" and image.key not in self.parallel:
                    held = await self._hold(image, req, stack)
                    kept = True  # the image's client now belongs to ``held``
                    how = await self._mount_parallel(held, req, dest)
                else:
                    # sequential (or a layer of a parallel image pulled twice at once): this layer alone,
                    # in containerd's order, as upstream's MountLocal
                    await self._mount_local(image, spec, dest, serve_dir)
                    how = "local"
            finally:
                if not kept:
                    await stack.aclose()
        self.events.emit("mount", t0, layer=req.layer, path=str(dest), how=how, op="remote")
        return how

    # -- parallel images: the daemon's ParallelPuller -------------------------------------------------------

    async def _the_puller(self) -> Any:
        """The daemon's ParallelPuller, started once (its apply workers too) and kept until :meth:`close`."""
        async with self._puller_lock:
            if self.puller is None:
                await self._tg.start(self._run_puller)
        return self.puller

    async def _run_puller(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        from ..unpack import ParallelPuller

        ppu = self.config.pull_modes.parallel_pull_unpack
        async with ParallelPuller(self.state_dir / "parallel", self.sources, config=ppu, recorder=self.events,
                                  require_enabled=False) as puller:
            self.puller = puller
            task_status.started()
            try:
                await self._closing.wait()
            finally:
                self.puller = None

    async def _hold(self, image: Any, req: RemoteRequest, stack: contextlib.AsyncExitStack) -> ParallelImage:
        """Register ``image`` with the puller's sources; the layers from ``req.layer`` up are its to pull."""
        from ..snapshot.filesystem import unique_layers
        from ..unpack import RegistryBlobSource

        await self._the_puller()
        layers = unique_layers(image.layers)
        index = next(i for i, s in enumerate(layers) if s.digest == req.layer)
        source = RegistryBlobSource(image.client, image.ref.repository)
        held = ParallelImage(image.key, layers, source, stack, {s.digest for s in layers[index:]})
        self.sources.add(layers, source)
        self.parallel[image.key] = held
        return held

    async def _mount_parallel(self, held: ParallelImage, req: RemoteRequest, dest: Path) -> str:
        """Upstream's ``MountParallel``: the first call starts the image's pull; each waits for its layer's
        verified tree and renames it to ``dest``."""
        puller = await self._the_puller()
        index = next(i for i, s in enumerate(held.layers) if s.digest == req.layer)
        held.claiming.add(req.layer)
        try:
            await puller.mount_parallel(held.key, held.layers, index, dest)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(held)
            raise
        finally:
            held.claiming.discard(req.layer)
        held.remaining.discard(req.layer)
        if not held.remaining:
            await self._release(held)
        return "parallel"

    async def _release(self, held: ParallelImage) -> None:
        """The image is done (or failed): drop its jobs, its source and close its registry client."""
        if self.parallel.get(held.key) is not held:
            return
        del self.parallel[held.key]
        if self.puller is not None:
            self.puller.clean_image(held.key)
        self.sources.remove(held.layers, held.source)
        with contextlib.suppress(Exception):
            await held.stack.aclose()

    async def _forget_finished(self) -> None:
        """Release images whose jobs the puller no longer has (expired: nobody asked for their layers)."""
        if self.puller is None or self.puller.jobs is None:
            return
        live = {img.key for img in self.puller.jobs.images()}
        for held in list(self.parallel.values()):
            if held.key not in live and not held.claiming:
                await self._release(held)

    async def _mount_lazy(self, fs: Any, image: Any, plan: Any, spec: Any, dest: Path, serve_dir: Path) -> None:
        """A FUSE layer server at ``dest``, built as ``soci-lab mount`` builds one (:meth:`Filesystem.lazy_spec`,
        :meth:`Filesystem.serve_options`: zTOC trust by where it was found, prefetch, policy)."""
        from ..lazy.mount import LayerMount

        lazy = await anyio.to_thread.run_sync(fs.lazy_spec, image, spec, plan.artifacts)
        options = fs.serve_options(plan, spec.digest, serve_dir, serve_dir / "events.jsonl")
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
