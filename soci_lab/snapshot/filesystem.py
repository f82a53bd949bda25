"""The Filesystem (upstream ``NewFilesystem``): from an image reference to a mounted, stacked rootfs.

Per image, :meth:`Filesystem.mount`:

1. resolves REF to one platform manifest (registry or ``oci:`` layout; ``get_sources`` may name mirrors
   tried in order) and its layers with their diffIDs;
2. for ``lazy``, runs discovery in upstream's order through :func:`soci_lab.artifacts.fetch_soci_artifacts`
   (Hermes store first when ``[external_artifact_store] enable``, then explicit digest, v2, v1) into the
   state directory's local store, and decides per layer (:mod:`.decide`);
3. prepares every layer concurrently, at most ``max_concurrency`` at a time (upstream's pre-resolver
   resolving the neighbours of the layer being mounted): a ``lazy`` layer is a FUSE mount served by a child
   process (:func:`soci_lab.lazy.mount`), which falls back to ``local`` when it cannot be mounted; a
   ``local`` layer is downloaded whole, verified (digest and diffID) and unpacked; an eager image goes to
   :class:`~soci_lab.unpack.ParallelPuller` (``MountParallel`` + ``rebase`` per layer) or
   :class:`~soci_lab.unpack.SequentialPuller`. Beyond upstream: when a ``parallel`` image has a gzip layer
   of at least ``span_parallel_min_layer_size`` compressed bytes, the same discovery as lazy mode looks for
   its SOCI index, and the layers it has zTOCs for inflate span-parallel from their checkpoints
   (:func:`~soci_lab.unpack.spanpar.ztoc_span_decompressors`); no index, or a failed discovery, changes
   nothing but that (the serial inflater);
4. stacks the layers with overlayfs at the mountpoint (:mod:`.overlay`), read-only unless ``writable``;
   every mount it makes (overlay and FUSE layers) is ``nosuid,nodev`` unless ``allow_setuid_and_devices``;
5. records ``mount`` (per layer and for the image) and one ``ready`` event when the rootfs is usable.

:meth:`MountedImage.unmount` (:mod:`.mounted`) takes it all down again and merges the FUSE servers' events.
A failed mount undoes what it did before raising. Nothing is left mounted, running or on disk.

Options are upstream's ``With…`` options as keywords: ``get_sources``, ``max_concurrency``,
``metadata_store``, ``overlay_opaque_type``, ``pull_modes``, ``resolve_handlers``; everything else comes
from the soci-style :class:`~soci_lab.config.Config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..config import Config, PullModesConfig
from ..errors import MountError, SociLabError
from ..events import EventRecorder
from ..oci import Descriptor, OCILayout, Reference
from .decide import ImagePlan, LayerPlan, decide
from .modes import resolve_mode
from .mounted import LayerState, MountedImage, first_error
from .overlay import make_mask_layer, mount_overlay
from .state import StateDir

if TYPE_CHECKING:
    import pandas as pd

    from ..remote import RegistryClient
    from ..unpack import BlobSource, LayerSpec
    from ..unpack.decompress import SpanDecompressor

#: how long one FUSE layer may take to come up (upstream's mount_timeout_sec is 30 s; this machine is shared)
DEFAULT_MOUNT_TIMEOUT = 60.0
#: compressed size from which a zTOC-backed gzip layer inflates span-parallel in a parallel mount (64 MiB)
SPAN_PARALLEL_MIN_LAYER_SIZE = 64 << 20
#: metadata stores upstream knows; the FUSE servers keep layer metadata in memory whatever is chosen
METADATA_STORES = ("memory", "db", "db-multi")


@dataclass
class ResolvedImage:
    """REF resolved to the manifest being mounted."""

    ref: Reference
    manifest_descriptor: Descriptor
    layers: list[LayerSpec]
    client: RegistryClient | None = None
    layout: OCILayout | None = None

    @property
    def key(self) -> str:
        """The image key of the unpack jobs (upstream: the manifest digest label)."""
        return str(self.manifest_descriptor.digest)


def unique_layers(layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    """Each layer once (first occurrence): an image may list one blob twice (e.g. an empty layer)."""
    seen: set[str] = set()
    out = []
    for spec in layers:
        if spec.digest not in seen:
            seen.add(spec.digest)
            out.append(spec)
    return out


def overlay_lowers(manifest_layers: Sequence[LayerSpec], prepared: Sequence[LayerState]) -> list[Path]:
    """The overlay's lower directories, top first, each prepared layer once at its top-most place.

    overlayfs refuses one directory twice; dropping a repeated layer's lower occurrences changes nothing,
    since the top-most copy provides the same entries with a higher priority.
    """
    path = {lay.plan.digest: lay.path for lay in prepared}
    seen: set[str] = set()
    out = []
    for spec in reversed(manifest_layers):
        if spec.digest not in seen:
            seen.add(spec.digest)
            out.append(path[spec.digest])
    return out


class Filesystem:
    """Mounts images the way soci-snapshotter's ``fs`` package does (see the module docstring).

    ``state_dir`` holds everything a mount creates (layout in :mod:`.state`). Keyword options:

    * ``config`` — a :class:`~soci_lab.config.Config` (``Config.from_toml(path)``); upstream defaults if None;
    * ``get_sources(ref) -> [Reference, …]`` — where to resolve REF from, tried in order (default ``[ref]``);
    * ``max_concurrency`` — layers prepared at once (default ``config.max_concurrency``; ≤ 0 unbounded);
    * ``metadata_store`` — ``memory``, ``db`` or ``db-multi`` (recorded; layer metadata is kept in memory);
    * ``overlay_opaque_type`` — ``trusted``, ``user`` or ``all`` for the FUSE layers' opaque directories;
    * ``pull_modes`` — a :class:`~soci_lab.config.PullModesConfig` replacing ``config.pull_modes``;
    * ``resolve_handlers`` — ``{name: handler(ref, layer_digest) -> {"blob_path": …} | None}``: the first
      handler answering gives a lazy layer its blob source (e.g. a local mirror file) instead of REF's registry;
    * ``explicit_index_digest`` — the SOCI index to use (upstream's snapshot label);
    * ``fallback`` — False: a lazy mount that cannot be lazy raises instead of going eager/local;
    * ``events`` — the run's :class:`~soci_lab.events.EventRecorder` (its strategy should be the mode);
    * ``allow_setuid_and_devices`` — mount without ``nosuid,nodev`` (default False: an image's setuid
      binaries and device nodes give nobody on the host privileges or device access);
    * ``span_parallel_min_layer_size`` — in ``parallel`` mode, gzip layers of at least this many compressed
      bytes that the image's SOCI index has zTOCs for inflate span-parallel (default 64 MiB, as
      :data:`~soci_lab.unpack.spanpar.DEFAULT_MIN_LAYER_SIZE`); ``None``: never, and no SOCI discovery in
      ``parallel`` mode (upstream's behaviour). Discovery only runs when some layer is that big.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        config: Config | None = None,
        get_sources: Callable[[Reference], Sequence[Reference]] | None = None,
        max_concurrency: int | None = None,
        metadata_store: str = "memory",
        overlay_opaque_type: str | None = None,
        pull_modes: PullModesConfig | None = None,
        resolve_handlers: Mapping[str, Callable[[Reference, str], Mapping[str, Any] | None]] | None = None,
        explicit_index_digest: str | None = None,
        fallback: bool = True,
        insecure: bool = False,
        creds: str | None = None,
        events: EventRecorder | None = None,
        mount_timeout: float = DEFAULT_MOUNT_TIMEOUT,
        owns_state_dir: bool = True,
        span_parallel_min_layer_size: int | None = SPAN_PARALLEL_MIN_LAYER_SIZE,
        allow_setuid_and_devices: bool = False,
    ) -> None:
        cfg = dataclasses.replace(config) if config is not None else Config()
        if pull_modes is not None:
            cfg.pull_modes = pull_modes
        if overlay_opaque_type is not None:
            cfg.overlay_opaque_type = overlay_opaque_type
        if max_concurrency is not None:
            cfg.max_concurrency = max_concurrency
        if metadata_store not in METADATA_STORES:
            raise MountError(f"metadata_store must be one of {', '.join(METADATA_STORES)}, not {metadata_store!r}")
        self.config = cfg
        self.state = StateDir(state_dir)
        self.get_sources = get_sources or (lambda ref: [ref])
        self.max_concurrency = cfg.max_concurrency
        self.metadata_store = metadata_store
        self.resolve_handlers = dict(resolve_handlers or {})
        self.explicit_index_digest = explicit_index_digest
        # one SOCI context per image manifest, Hermes first; keeps Hermes's cached error (hermes.md §2.4)
        from ..artifacts.hermes import SociContexts

        self.soci_contexts = SociContexts()
        self.fallback = fallback
        self.insecure = insecure
        self.creds = creds
        self.events = events if events is not None else EventRecorder()
        self.mount_timeout = mount_timeout
        self.owns_state_dir = owns_state_dir
        self.span_parallel_min_layer_size = span_parallel_min_layer_size
        self.allow_setuid_and_devices = allow_setuid_and_devices
        #: a hook for tests and experiments: called with each lazy LayerPlan before its FUSE mount
        self.before_lazy_mount: Callable[[LayerPlan], None] | None = None
        #: the image mounted from this state directory (one at a time), by image key
        self.images: dict[str, MountedImage] = {}

    # --- resolve and decide -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_image(self, ref: str | Reference) -> AsyncIterator[ResolvedImage]:
        """REF resolved (the first of ``get_sources`` that answers), with its client open for the block."""
        from ..remote import RegistryClient
        from ..unpack import image_layer_specs

        reference = Reference.parse(ref) if isinstance(ref, str) else ref
        last: BaseException | None = None
        for source in self.get_sources(reference):
            if source.is_layout:
                assert source.layout_path is not None
                layout = OCILayout(source.layout_path, create=False)
                from ..artifacts import LayoutSource, resolve_ref

                resolved = await resolve_ref(LayoutSource(layout), source)
                specs = image_layer_specs(resolved.manifest.layers, resolved.config.diff_ids)
                yield ResolvedImage(source, resolved.manifest_descriptor, specs, layout=layout)
                return
            client = RegistryClient(
                source, creds=self.creds, insecure=self.insecure, config=self.config.http, events=self.events
            )
            try:
                try:
                    image = await client.resolve_image(source)
                except SociLabError as exc:
                    last = exc
                    continue
                specs = image_layer_specs(image.layers, image.config.diff_ids)
                yield ResolvedImage(source, image.manifest_descriptor, specs, client=client)
                return
            finally:
                await client.aclose()
        raise last if last is not None else MountError(f"no source for {reference}")

    async def discover(self, image: ResolvedImage) -> Any:
        """SOCI artifacts of the image (fetched into the local store), or the exception discovery raised."""
        from ..artifacts import LayoutSource

        if not self.state.is_ours():
            self.state.create()  # claim it before writing in it (a foreign non-empty directory is refused)
        self.state.content.mkdir(parents=True, exist_ok=True)
        store = OCILayout(self.state.content)
        client: Any = image.client if image.client is not None else LayoutSource(image.layout)  # type: ignore[arg-type]
        try:
            return await self.soci_contexts.get(
                client,
                image.ref,
                image.manifest_descriptor,
                config=self.config,
                explicit_index_digest=self.explicit_index_digest,
                local_store=store,
                events=self.events,
            )
        except SociLabError as exc:
            return exc

    async def prepare(self, image: ResolvedImage, mode: str | None = None) -> ImagePlan:
        """The plan for ``image`` in ``mode`` (discovery included for lazy)."""
        concrete = resolve_mode(mode, self.config)
        discovery = await self.discover(image) if concrete == "lazy" else None
        return decide(concrete, self.config, unique_layers(image.layers), discovery, fallback=self.fallback)

    # --- mount ------------------------------------------------------------------------------------

    async def mount(
        self,
        ref: str | Reference,
        mountpoint: str | os.PathLike[str],
        mode: str | None = None,
        *,
        writable: bool = False,
        on_layer: Callable[[MountedImage], None] | None = None,
    ) -> MountedImage:
        """Mount REF's rootfs at ``mountpoint`` (an existing empty directory); see the module docstring.

        ``on_layer`` is called after each layer is in place (the CLI keeps its record current with it, so
        ``umount`` can clean up even a mount that was killed half-way).
        """
        rec = self.events
        t0 = rec.now()
        reference = Reference.parse(ref) if isinstance(ref, str) else ref
        concrete = resolve_mode(mode, self.config)
        target = Path(mountpoint).resolve()
        if not target.is_dir():
            raise MountError(f"mountpoint {target} is not a directory")
        live = [m for m in self.images.values() if not m._done]
        if live:
            raise MountError(
                f"{self.state.root} already serves {live[0].ref} at {live[0].mountpoint}: one image per "
                "state directory (use another Filesystem, or clean_image first)"
            )
        self.state.create()
        self.state.layers.mkdir(exist_ok=True)
        mounted = MountedImage(
            reference, concrete, target, self.state, rec, owns_state_dir=self.owns_state_dir, writable=writable
        )
        try:
            async with self.open_image(reference) as image:
                mounted.image_key = image.key
                mounted.plan = plan = await self.prepare(image, concrete)
                mounted.layers = [LayerState(p, self.state.layer(p.digest) / "fs") for p in plan.layers]
                if on_layer is not None:
                    on_layer(mounted)
                if plan.eager is not None:
                    await self._mount_eager(image, mounted, plan.eager)
                else:
                    await self._mount_lazy(image, mounted, on_layer)
            lowers = overlay_lowers(image.layers, mounted.layers)
            if mounted.lazy_layers:
                lowers.insert(0, make_mask_layer(self.state.mask))
            t_ov = rec.now()
            await anyio.to_thread.run_sync(
                lambda: mount_overlay(
                    target,
                    lowers,
                    base=self.state.root,
                    upper=self.state.upper if writable else None,
                    work=self.state.work if writable else None,
                    source=mounted.overlay_source,
                    allow_setuid_and_devices=self.allow_setuid_and_devices,
                )
            )
            mounted.mounted = True
            mounted.note_overlay_mounted()
            rec.emit("mount", t_ov, path=str(target), what="overlay", layers=len(lowers), writable=writable)
            mounted.ready_s = rec.now() - t0
            rec.emit("ready", t0, path=str(target), mode=concrete, hows=plan.count(), reason=plan.reason)
            if on_layer is not None:
                on_layer(mounted)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await anyio.to_thread.run_sync(lambda: mounted.unmount(remove=True))
            if isinstance(exc, Exception) and not isinstance(exc, SociLabError | OSError):
                raise MountError(f"mounting {reference} failed: {type(exc).__name__}: {exc}") from exc
            raise
        self.images[mounted.image_key] = mounted
        return mounted

    def unmount(self, image_key: str) -> pd.DataFrame:
        """Unmount the image mounted under ``image_key`` (its manifest digest); keeps its state directory."""
        try:
            mounted = self.images[image_key]
        except KeyError:
            raise MountError(f"image {image_key} is not mounted by this Filesystem") from None
        return mounted.unmount(remove=False)

    def clean_image(self, image_key: str) -> None:
        """Upstream's ``CleanImage`` (snapshot removal): unmount the image if needed and delete its state."""
        mounted = self.images.pop(image_key, None)
        if mounted is None:
            return
        if not mounted._done:
            mounted.unmount(remove=True)
        else:
            mounted.remove()

    def _limiter(self) -> anyio.CapacityLimiter | None:
        n = self.max_concurrency
        return anyio.CapacityLimiter(n) if n and n > 0 else None

    async def _mount_eager(self, image: ResolvedImage, mounted: MountedImage, how: str) -> None:
        from ..unpack import ParallelPuller, SequentialPuller

        source = self._blob_source(image)
        targets = [lay.path for lay in mounted.layers]
        specs = [lay.plan.layer for lay in mounted.layers]
        t0 = self.events.now()
        if how == "parallel":
            ppu = dataclasses.replace(self.config.pull_modes.parallel_pull_unpack, enable=True)
            spans = await self._span_decompressors(image, mounted)
            async with ParallelPuller(
                self.state.root, source, config=ppu, recorder=self.events, span_decompressor=spans
            ) as puller:
                outcomes = await puller.pull(image.key, specs, targets)
        else:
            outcomes = await SequentialPuller(self.state.root, source, recorder=self.events).pull(
                image.key, specs, targets
            )
        for lay, out in zip(mounted.layers, outcomes, strict=True):
            lay.bytes_fetched = out.bytes_fetched
            lay.uncompressed_size = out.apply.uncompressed_bytes if out.apply is not None else None
            self.events.emit("mount", t0, layer=lay.plan.digest, path=str(lay.path), how=how)

    async def _span_decompressors(
        self, image: ResolvedImage, mounted: MountedImage
    ) -> Callable[[LayerSpec], SpanDecompressor | None] | None:
        """The parallel puller's span-parallel hook from the image's zTOCs, or None (serial inflate).

        Discovery (as lazy mode runs it, into the state directory's local store) only happens when some
        gzip layer is at least ``span_parallel_min_layer_size`` bytes; whatever it raises means "no zTOCs".
        The artifacts found are kept in the plan (``plan.artifacts``), so a run reports the index it used.
        """
        from ..unpack.decompress import compression_of
        from ..unpack.spanpar import ztoc_span_decompressors

        min_size = self.span_parallel_min_layer_size
        if min_size is None:
            return None
        big = [
            s for s in unique_layers(image.layers) if s.size >= min_size and compression_of(s.media_type, b"") == "gzip"
        ]
        if not big:
            return None
        assert mounted.plan is not None
        arts = mounted.plan.artifacts if mounted.plan.artifacts is not None else await self.discover(image)
        if arts is None or isinstance(arts, BaseException):
            return None
        ztocs = {s.digest: arts.ztoc_for(s.digest) for s in big if arts.has_ztoc(s.digest)}
        if not ztocs:
            return None
        mounted.plan.artifacts = arts
        return ztoc_span_decompressors(ztocs, min_layer_size=min_size)

    async def _mount_lazy(
        self, image: ResolvedImage, mounted: MountedImage, on_layer: Callable[[MountedImage], None] | None
    ) -> None:
        limiter = self._limiter()
        assert mounted.plan is not None

        async def one(lay: LayerState) -> None:
            async with limiter if limiter is not None else contextlib.nullcontext():  # type: ignore[attr-defined]
                t0 = self.events.now()
                if lay.plan.how == "lazy":
                    try:
                        await self._mount_fuse(image, mounted, lay)
                    except SociLabError as exc:
                        # upstream: a failed remote mount is counted and the layer snapshotted locally
                        reason = f"{type(exc).__name__}: {(str(exc) or '-').splitlines()[0]}"
                        self.events.emit(
                            "error",
                            t0,
                            layer=lay.plan.digest,
                            ok=False,
                            error=reason,
                            op="fuse_mount",
                            fallback="local",
                        )
                        if not self.fallback:
                            raise
                        lay.plan.how, lay.plan.reason = "local", reason
                        lay.mount = None
                        lay.path = self.state.layer(lay.plan.digest) / "fs"
                if lay.plan.how == "local":
                    await self._mount_local(image, lay)
                self.events.emit(
                    "mount", t0, layer=lay.plan.digest, path=str(lay.path), how=lay.plan.how, reason=lay.plan.reason,
                    spawn=getattr(lay.mount, "spawn", None),
                )
                if on_layer is not None:
                    on_layer(mounted)

        try:
            async with anyio.create_task_group() as tg:
                for lay in mounted.layers:
                    tg.start_soon(one, lay)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    def _blob_source(self, image: ResolvedImage) -> BlobSource:
        from ..unpack import LocalFileSource, RegistryBlobSource

        if image.layout is not None:
            layout = image.layout
            return LocalFileSource({s.digest: layout.blob_path(s.digest) for s in image.layers})
        assert image.client is not None
        return RegistryBlobSource(image.client, image.ref.repository)

    async def _mount_local(self, image: ResolvedImage, lay: LayerState) -> None:
        """Upstream's ``MountLocal``: download the whole layer, verify digest and diffID, unpack it."""
        from ..unpack import apply_layer_async
        from ..unpack.fetch import download_layer

        d = self.state.layer(lay.plan.digest)
        d.mkdir(parents=True, exist_ok=True)
        fs = d / "fs"
        fs.mkdir(exist_ok=True)
        blob = d / "blob"
        with contextlib.suppress(FileNotFoundError):
            blob.unlink()
        spec = lay.plan.layer
        try:
            lay.bytes_fetched = await download_layer(
                self._blob_source(image), spec, blob, image=image.key, recorder=self.events
            )
            result = await apply_layer_async(
                blob,
                fs,
                media_type=spec.media_type,
                expected_digest=spec.digest,
                expected_diff_id=spec.diff_id,
                recorder=self.events,
                layer=spec.digest,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                blob.unlink()
        lay.path = fs
        lay.uncompressed_size = result.uncompressed_bytes

    def lazy_spec(self, image: ResolvedImage, layer: LayerSpec, arts: Any) -> Any:
        """The FUSE server's :class:`~soci_lab.lazy.mount.LazyLayerSpec` of ``layer``: the zTOC bytes from the
        local store, and the blob from a resolve handler, the layout, or REF's registry (also what the
        containerd snapshotter serves a lazy layer from)."""
        from ..lazy.mount import LazyLayerSpec

        digest = layer.digest
        ztoc_desc = arts.ztoc_descriptor_for(digest)
        ztoc = OCILayout(self.state.content).read_blob(str(ztoc_desc.digest))
        # a zTOC the mounted manifest names (v2 annotation, explicit index digest) is served at once and checked
        # in the background; a v1 referrer's or the artifact store's is checked before it serves
        # (lazy/layercheck.py: ztoc_origin, layer_check_mode)
        from ..lazy.layercheck import ztoc_origin

        origin = ztoc_origin(arts.found_via)
        # the zTOC as discovery parsed and validated it goes along: the server does not parse it again
        spec = LazyLayerSpec(
            digest=digest, ztoc=ztoc, blob_size=layer.size, ztoc_origin=origin, parsed_ztoc=arts.ztoc_for(digest),
        )
        for handler in self.resolve_handlers.values():
            answer = handler(image.ref, digest)
            if answer:
                fields = dict(answer)
                if "ztoc" in fields:  # another zTOC: the server parses that one
                    fields.setdefault("parsed_ztoc", None)
                return dataclasses.replace(spec, **fields)
        if image.layout is not None:
            spec.blob_path = str(image.layout.blob_path(digest))
        else:
            spec.registry = image.ref.api_host
            spec.repository = image.ref.repository
            spec.insecure = self.insecure
            # the credentials the eager path uses (explicit ones; else the server reads the auth files itself)
            spec.creds = image.client.transport.auth.creds if image.client is not None else None
        return spec

    def serve_options(self, plan: ImagePlan, digest: str, serve_dir: Path, events_path: Path) -> Any:
        """The FUSE server's :class:`~soci_lab.lazy.mount.ServeOptions` for lazy layer ``digest`` of ``plan``
        (its prefetch ranges and policy from the SOCI index, this Filesystem's config)."""
        from ..lazy.mount import ServeOptions
        from ..lazy.prefetch import lazy_policy

        arts = plan.artifacts
        assert arts is not None
        prefetch = arts.prefetch_for(digest)
        pf_desc = arts.index.prefetch_descriptors().get(digest)
        policy = lazy_policy(self.config, arts.index.annotations, pf_desc.annotations if pf_desc else None)
        return ServeOptions(
            config=self.config,
            policy=policy,
            prefetch_ranges=[(s.start_span, s.end_span, s.priority) for s in prefetch.spans] if prefetch else [],
            cache_dir=None if self.config.filesystem_cache_type == "memory" else str(serve_dir / "cache"),
            events_path=str(events_path),
            run_id=self.events.run_id,
            # upstream's background fetcher starts at most one span per period across all layers
            layer_count=max(1, sum(1 for p in plan.layers if p.how == "lazy")),
            allow_setuid_and_devices=self.allow_setuid_and_devices,
        )

    async def _mount_fuse(self, image: ResolvedImage, mounted: MountedImage, lay: LayerState) -> None:
        from ..lazy.mount import LayerMount

        assert mounted.plan is not None and mounted.plan.artifacts is not None
        arts = mounted.plan.artifacts
        digest = lay.plan.digest
        d = self.state.layer(digest)
        mnt, serve = d / "mnt", d / "serve"
        mnt.mkdir(parents=True, exist_ok=True)
        serve.mkdir(parents=True, exist_ok=True)
        if self.before_lazy_mount is not None:
            self.before_lazy_mount(lay.plan)
        spec = await anyio.to_thread.run_sync(self.lazy_spec, image, lay.plan.layer, arts)
        options = self.serve_options(mounted.plan, digest, serve, d / "events.jsonl")
        m = LayerMount(spec, mnt, options, work_dir=serve)  # spec and log stay in the state directory
        lay.mount = m
        lay.path = mnt
        ztoc = arts.ztoc_for(digest)
        lay.uncompressed_size = ztoc.uncompressed_archive_size
        lay.spans = ztoc.span_count
        try:
            await anyio.to_thread.run_sync(m.start, self.mount_timeout)
        except BaseException:
            lay.mount = None
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(m.unmount)
            raise
        lay.ready_at = self.events.now()
        from .overlay import mount_at

        info = await anyio.to_thread.run_sync(mount_at, mnt)
        lay.mount_id = info.mount_id if info is not None else None


def wait_for_signal(
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM), poll: float = 0.5, stop: Callable[[], bool] | None = None
) -> int:
    """Block the calling (main) thread until one of ``signals`` arrives; returns it."""
    got: list[int] = []
    old = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, lambda n, _f: got.append(n))
    try:
        while not got and not (stop is not None and stop()):
            time.sleep(poll)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return got[0] if got else 0


__all__ = [
    "DEFAULT_MOUNT_TIMEOUT",
    "SPAN_PARALLEL_MIN_LAYER_SIZE",
    "Filesystem",
    "LayerState",
    "MountedImage",
    "ResolvedImage",
    "overlay_lowers",
    "unique_layers",
    "wait_for_signal",
]
