"""The notebook face of soci_lab: pull an image in a mode and get a :class:`~soci_lab.run.Run` back.

::

    from soci_lab import lab
    run = lab.pull("127.0.0.1:5000/app:v1", "lazy")                  # mount → ready → unmount; a Run
    run = lab.pull(ref, "parallel", trace="startup.csv")             # replay a trace on the rootfs first
    run = lab.pull(ref, "sequential", cmd=["/app/start.sh"])         # or run a command chrooted in it
    run = await lab.apull(ref, "lazy")                               # from async code / a notebook loop
    with lab.mounted(ref, "/mnt/app", mode="lazy") as m:             # keep it mounted for a cell or two
        open("/mnt/app/etc/os-release").read()
    run = lab.lazy_read(ref, paths=["/usr/lib/python3/os.py"])       # no FUSE, no root: reads via the reader
    run = lab.run_container(ref, "lazy", readiness="line:^ready$")   # a real container (containerd + runc)

Everything sync here works from a notebook cell: the async work runs on a private event loop in a worker
thread when the caller's thread already runs one (Jupyter's), and the FUSE servers are child processes,
so a cell never hangs on them. Mounting needs root, ``/dev/fuse`` and overlayfs (:func:`can_mount` says
whether this machine has them); :func:`lazy_read` needs none of them: it serves file reads through
:class:`soci_lab.lazy.reader.LayerReader` over the registry in-process — the same span manager, header
verification, readahead and events as a FUSE server — and says so in the Run's provenance (``"lazy_path":
"reader"``). One difference remains: the reader sees the trace's read sizes, a FUSE server the kernel's
(whole pages, up to 128 KiB), so tiny reads near a span boundary can fetch one span fewer. Layers without
a zTOC are downloaded whole (``blob_download``, as upstream's local snapshot) and read from that copy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._sync import run_sync
from .config import Config
from .errors import MountError, SociLabError, WorkloadError
from .events import EventRecorder
from .oci import Reference
from .run import Run, collect_provenance
from .snapshot import Filesystem, MountedImage
from .snapshot.modes import MODES
from .snapshot.state import StateDir, state_root

if TYPE_CHECKING:
    from .lazy.spec import ServeOptions

T = TypeVar("T")

__all__ = ["alazy_read", "apull", "arun_container", "can_mount", "lazy_read", "mounted", "pull", "run_container"]


def _has_cap_sys_admin() -> bool:
    """Whether this process's effective capabilities include CAP_SYS_ADMIN (bit 21), which mount(2) needs."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return True  # cannot tell: let the mount itself say no


def can_mount() -> tuple[bool, str]:
    """Whether this process can mount images (root, /dev/fuse, overlayfs), and if not, why."""
    if os.geteuid() != 0:
        return False, "not root (mounting FUSE layers and overlayfs needs root)"
    if not _has_cap_sys_admin():
        return False, "no CAP_SYS_ADMIN (root without it, e.g. in a container, cannot mount)"
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse is missing"
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return False, "overlayfs is not available"
    except OSError:
        return False, "cannot read /proc/filesystems"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return False, f"pyfuse3 cannot be imported ({exc})"
    return True, "ok"


def _config(config: Config | str | os.PathLike[str] | None, artifact_store: str | None = None) -> Config:
    cfg = config if isinstance(config, Config) else Config.from_toml(Path(config)) if config is not None else Config()
    if artifact_store:
        import dataclasses

        cfg = dataclasses.replace(cfg)
        cfg.external_artifact_store = dataclasses.replace(
            cfg.external_artifact_store, enable=True, endpoint=artifact_store.rstrip("/")
        )
    return cfg


def _provenance(ref: str, mode: str, mounted: MountedImage | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"ref": str(ref), "mode": mode, **extra}
    if mounted is not None:
        doc["layers"] = mounted.layer_summary()
        if mounted.plan is not None and mounted.plan.reason:
            doc["fallback"] = mounted.plan.reason
        if mounted.plan is not None and mounted.plan.artifacts is not None:
            doc["soci_index"] = str(mounted.plan.artifacts.digest)
            doc["found_via"] = mounted.plan.artifacts.found_via
    return collect_provenance(**doc)


async def apull(
    ref: str,
    mode: str = "lazy",
    *,
    config: Config | str | os.PathLike[str] | None = None,
    trace: Any = None,
    cmd: Sequence[str] | None = None,
    readiness: str = "exit",
    timeout: float = 300.0,
    artifact_store: str | None = None,
    explicit_index_digest: str | None = None,
    fallback: bool = True,
    insecure: bool = False,
    creds: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    speed: float | None = None,
    keep_state: bool = False,
) -> Run:
    """Mount REF in ``mode``, optionally replay ``trace`` (a Trace or a CSV path) or run ``cmd`` chrooted
    in the rootfs, unmount, and return the Run (every event, the FUSE servers' included).

    A command runs under strace in every mode (:func:`soci_lab.workload.record_trace`), so its file
    accesses are ``file_read``/``file_op`` events of the workload in lazy, parallel and sequential runs
    alike (``files_read``, ``bytes_read``, ``fraction_read`` compare across modes); a lazy run's FUSE
    servers' own reads are kept too, with their ``layer`` set.

    ``keep_state``: leave the state directory's contents (unpacked layers, caches) after unmounting, for
    the caller to delete later — benchmarks do, because deleting a tree of many files right away slows
    the file creation of the pulls that follow on some file systems.

    On a machine that cannot mount (:func:`can_mount`: no root, ``/dev/fuse`` or overlayfs), a lazy pull
    without ``cmd`` is served by :func:`alazy_read` instead (``provenance["lazy_path"] == "reader"`` and
    ``provenance["cannot_mount"]`` says why); other modes raise :class:`~soci_lab.errors.MountError`."""
    if mode not in MODES:
        raise SociLabError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    cfg = _config(config, artifact_store)
    able, why = can_mount()
    if not able:
        if mode == "lazy" and cmd is None:  # the no-FUSE lazy path serves the same reads, and says so
            run = await alazy_read(ref, trace, config=cfg, insecure=insecure, creds=creds, run_id=run_id)
            run.provenance["cannot_mount"] = why
            return run
        raise MountError(f"cannot mount on this machine ({why}); lab.lazy_read serves lazy reads without FUSE")
    rec = EventRecorder(run_id, strategy=mode)
    owns = state_dir is None
    state = Path(state_dir) if state_dir is not None else state_root() / f"pull-{rec.run_id}"
    fs = Filesystem(
        state,
        config=cfg,
        events=rec,
        explicit_index_digest=explicit_index_digest,
        fallback=fallback,
        insecure=insecure,
        creds=creds,
        owns_state_dir=owns,
    )
    StateDir(state).create()  # claimed before anything is written in it (a foreign directory is refused)
    target = state / "rootfs"
    target.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"lazy_path": "fuse" if mode == "lazy" else None}
    try:
        m = await fs.mount(ref, target, mode, writable=cmd is not None)
    except BaseException:
        if owns:
            shutil.rmtree(state, ignore_errors=True)
        raise
    try:
        if trace is not None:
            from .workload import load_trace, replay_trace

            rows = load_trace(trace) if isinstance(trace, str | os.PathLike) else trace
            result = await anyio.to_thread.run_sync(
                functools.partial(replay_trace, target, rows, speed=speed, recorder=rec)
            )
            extra["replay"] = result.to_json()
        if cmd is not None:  # recorded the same way in every mode (strace), so lazy and eager rows compare
            from .workload import record_trace

            recording = await anyio.to_thread.run_sync(
                functools.partial(record_trace, target, list(cmd), readiness, timeout, recorder=rec, settle_s=0.0,
                                  raise_on_timeout=False)
            )
            extra["workload"] = recording.run.to_json()
            extra["accesses_recorded_by"] = "strace" + (" + mapped pages" if recording.mapped_pages else "")
    finally:
        with anyio.CancelScope(shield=True):
            frame = await anyio.to_thread.run_sync(functools.partial(m.unmount, remove=not keep_state))
    return Run.from_events(
        frame,
        run_id=rec.run_id,
        source="real",
        strategy=mode,
        config=cfg,
        provenance=_provenance(ref, mode, m, **extra),
        image_bytes=m.image_bytes(),
    )


def pull(ref: str, mode: str = "lazy", **kwargs: Any) -> Run:
    """:func:`apull` from sync code (a script or a notebook cell)."""
    return run_sync(apull, ref, mode, **kwargs)


@contextlib.contextmanager
def mounted(
    ref: str,
    mountpoint: str | os.PathLike[str] | None = None,
    *,
    mode: str = "lazy",
    config: Config | str | os.PathLike[str] | None = None,
    writable: bool = False,
    insecure: bool = False,
    state_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Iterator[MountedImage]:
    """Keep REF mounted for a ``with`` block (a notebook cell works); unmounted and cleaned up after.

    Without ``mountpoint`` the rootfs is mounted at ``<state>/rootfs`` (``m.mountpoint``). ``m.events()``
    holds every event once the block is over.
    """
    cfg = _config(config)
    rec = EventRecorder(strategy=mode)
    owns = state_dir is None
    state = Path(state_dir) if state_dir is not None else state_root() / f"mount-{rec.run_id}"
    StateDir(state).create()  # claimed before anything is written in it (a foreign directory is refused)
    target = Path(mountpoint) if mountpoint is not None else state / "rootfs"
    target.mkdir(parents=True, exist_ok=True)
    fs = Filesystem(state, config=cfg, events=rec, insecure=insecure, owns_state_dir=owns, **options)
    try:
        m = run_sync(fs.mount, ref, target, mode, writable=writable)
    except BaseException:
        if owns:
            shutil.rmtree(state, ignore_errors=True)
        raise
    try:
        yield m
    finally:
        m.unmount()


# --- the no-FUSE lazy path -------------------------------------------------------------------------------


class _UnionView:
    """The layers of an image as overlayfs would stack them, over in-process layer readers."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers  # bottom first: (digest, LayerTree, LayerReader)

    def _find(self, path: str) -> tuple[Any, Any] | None:
        """(reader, node) of ``path`` in the top-most layer that has it, honouring whiteouts and opaque dirs."""
        parts = [p for p in path.strip("/").split("/") if p]
        for _digest, tree, reader in reversed(self.layers):
            hidden_below = False
            for i in range(1, len(parts) + 1):
                node = tree.lookup("/".join(parts[:i]))
                if node is None:
                    continue
                if node.whiteout:
                    return None
                if i < len(parts) and node.opaque:
                    hidden_below = True
            node = tree.lookup("/".join(parts))
            if node is not None and not node.whiteout:
                return reader, node
            if hidden_below:
                return None
        return None

    def resolve(self, path: str, follow: bool = True) -> tuple[Any, Any] | None:
        """(reader, node) that an open of ``path`` inside the rootfs reaches (the final symlink too if
        ``follow``), by the walk the FUSE replay and the simulator use (:func:`soci_lab.rootwalk.walk`);
        None where it fails, or for the root."""
        from .rootwalk import walk

        def kind_of(p: str) -> str | None:
            found = self._find(p)
            if found is None:
                return None
            mode = found[1].mode
            return "dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "other"

        def link_of(p: str) -> str:
            found = self._find(p)
            return str(found[1].linkname) if found is not None else ""

        walked = walk(path, kind_of, link_of, follow_last=follow)
        if walked.error is not None or walked.path == "/":
            return None
        return self._find(walked.path)


async def _reader_layer(
    spec_digest: str, ztoc: Any, fetcher: Any, options: ServeOptions, rec: EventRecorder, *, remote: bool
) -> tuple[Any, Any]:
    """(tree, reader) of one layer, built as a FUSE server builds it (:func:`soci_lab.lazy.layer.build_layer`:
    the same fetch timeout, caches, readahead and gzip header check); a ``remote`` layer's span work is
    recorded, a local copy's is not (its bytes came over the network once, as a ``blob_download``, like
    upstream's local snapshot)."""
    from .events import NullRecorder
    from .lazy.layer import build_layer

    layer = build_layer(spec_digest, ztoc, fetcher, options, rec, span_events=None if remote else NullRecorder())
    await layer.check_header()  # as a FUSE server does before it mounts
    return layer.tree, layer.reader


async def alazy_read(
    ref: str,
    trace: Any = None,
    *,
    paths: Iterable[str] | None = None,
    config: Config | str | os.PathLike[str] | None = None,
    insecure: bool = False,
    creds: str | None = None,
    run_id: str | None = None,
) -> Run:
    """Lazy reads of REF's files without FUSE or root: see the module docstring and :func:`lazy_read`."""
    import tempfile

    from .artifacts import LayoutSource, fetch_soci_artifacts
    from .lazy.fetcher import FileRangeFetcher, RegistryRangeFetcher
    from .lazy.prefetch import lazy_policy
    from .lazy.spec import ServeOptions
    from .oci import OCILayout
    from .unpack.fetch import download_layer
    from .workload import Trace, TraceRow, load_trace
    from .ztoc import build_ztoc

    cfg = _config(config)
    rec = EventRecorder(run_id, strategy="lazy")
    t0 = rec.now()
    reference = Reference.parse(ref)
    fs = Filesystem(state_root() / "unused", config=cfg, events=rec, insecure=insecure, creds=creds)
    if trace is not None:
        rows = load_trace(trace) if isinstance(trace, str | os.PathLike) else trace
    else:
        rows = Trace(TraceRow(0.0, "read", p if p.startswith("/") else "/" + p, 0, 1 << 62) for p in paths or ())
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soci-lab-lazyread-") as tmp:
        async with fs.open_image(reference) as image:
            store = OCILayout(Path(tmp) / "content")
            src: Any = image.client if image.client is not None else LayoutSource(image.layout)  # type: ignore[arg-type]
            why: str | None = None
            try:
                arts = await fetch_soci_artifacts(
                    src, image.ref, image.manifest_descriptor, config=cfg, local_store=store, events=rec
                )
            except SociLabError as exc:
                arts, why = None, f"{type(exc).__name__}: {exc}"
            # served as the snapshot Filesystem serves a FUSE layer: the policy of the index, the config's
            # caches (directories unless filesystem_cache_type is "memory"), fetch timeout and retries
            options = ServeOptions(
                config=cfg,
                policy=lazy_policy(cfg, arts.index.annotations if arts else None),
                cache_dir=None if cfg.filesystem_cache_type == "memory" else str(Path(tmp) / "cache"),
            )
            layers = []
            blob_source = fs._blob_source(image)
            image_bytes = 0
            for spec in image.layers:
                lt = rec.now()
                if arts is not None and arts.has_ztoc(spec.digest):
                    z = arts.ztoc_for(spec.digest)
                    how = "lazy"
                    if image.layout is not None:
                        fetcher: Any = FileRangeFetcher(str(image.layout.blob_path(spec.digest)))
                    else:
                        assert image.client is not None
                        url = image.client.blob_url(image.ref.repository, spec.digest)
                        fetcher = RegistryRangeFetcher(image.client, url)
                else:  # upstream's MountLocal: the whole blob, then read from the local copy
                    how = "local"
                    blob = Path(tmp) / spec.digest.replace(":", "_")
                    await download_layer(blob_source, spec, blob, image=image.key, recorder=rec)
                    z = await anyio.to_thread.run_sync(
                        functools.partial(build_ztoc, blob, media_type=spec.media_type, layer_digest=spec.digest)
                    )
                    fetcher = FileRangeFetcher(str(blob))
                image_bytes += z.uncompressed_archive_size
                tree, reader = await _reader_layer(spec.digest, z, fetcher, options, rec, remote=how == "lazy")
                layers.append((spec.digest, tree, reader))
                rec.emit("mount", lt, layer=spec.digest, how=how, via="reader")
            rec.emit("ready", t0, mode="lazy", via="reader")
            view = _UnionView(layers)
            w0 = rec.now()
            async with anyio.create_task_group() as tg:  # readahead runs beside the reads, as in a server
                for _d, _t, layer_reader in layers:
                    layer_reader.task_group = tg
                for row in rows:
                    if row.op != "read":
                        continue
                    found = view.resolve(row.path)
                    if found is None:
                        failures.append(f"{row.path}: not found")
                        continue
                    reader, node = found
                    if not stat.S_ISREG(node.mode):
                        continue
                    try:
                        await reader.read(node, row.offset, min(row.size, max(0, node.size - row.offset)))
                    except SociLabError as exc:
                        failures.append(f"{row.path}: {exc}")
            rec.emit("workload", w0, ok=not failures, mode="lazy_read", rows=len(rows), failed=len(failures))
            for _d, _t, reader in layers:
                with contextlib.suppress(Exception):
                    aclose = getattr(reader.spans.fetcher, "aclose", None)
                    if aclose is not None:
                        await aclose()
    prov = collect_provenance(
        ref=str(ref),
        mode="lazy",
        lazy_path="reader",
        lazy_path_note="no FUSE: file reads served in-process by soci_lab.lazy.reader",
        fallback=why,
        read_failures=failures[:20],
    )
    return Run.from_events(
        rec.to_frame(),
        run_id=rec.run_id,
        source="real",
        strategy="lazy",
        config=cfg,
        provenance=prov,
        image_bytes=image_bytes,
    )


def lazy_read(ref: str, trace: Any = None, *, paths: Iterable[str] | None = None, **kwargs: Any) -> Run:
    """Serve the reads of ``trace`` (a Trace or CSV path), or read whole ``paths``, lazily from REF's registry
    without FUSE, overlayfs or root; returns the Run (``provenance["lazy_path"] == "reader"``)."""
    if trace is None and paths is None:
        raise WorkloadError("lazy_read needs a trace or paths to read")
    return run_sync(alazy_read, ref, trace, paths=paths, **kwargs)


# --- real containers: containerd 1.6 and the soci-lab snapshotter ---------------------------------------


def _container_run(
    ref: str, mode: str, cmd: Sequence[str] | None, readiness: str, timeout: float, insecure: bool,
    run_id: str | None, config: str | None,
) -> Run:
    import pandas as pd

    from .snapshotter.containers import PARALLEL_CONFIG, ContainerdStack, collect_events, run_container

    daemon_config = config if config is not None else PARALLEL_CONFIG if mode == "parallel" else None
    stack = ContainerdStack(config=daemon_config, insecure=insecure)
    with stack:
        rec = EventRecorder(run_id, strategy=mode)  # the run's clock starts with the pull, the stack is up
        result = run_container(stack, ref, mode, list(cmd) if cmd else None, readiness=readiness,
                               timeout=timeout, recorder=rec, insecure=insecure)
    frame = pd.concat([f for f in (rec.to_frame(), collect_events(stack, rec)) if len(f)], ignore_index=True)
    output = result["output"].decode(errors="replace")
    prov = collect_provenance(
        ref=str(ref), mode=mode, via="containerd", readiness=readiness, cmd=list(cmd) if cmd else None,
        first_output_s=result["first_output_s"], exit_code=result["exit_code"], output_tail=output[-2000:],
        instrumented="soci-lab snapshotter daemon and layer servers" if mode != "containerd"
        else "containerd's own pull is not instrumented: ready and workload events only",
    )
    run = Run.from_events(frame, run_id=rec.run_id, source="real", strategy=mode, provenance=prov)
    run.summary["first_output_s"] = result["first_output_s"]
    return run


async def arun_container(
    ref: str,
    mode: str = "lazy",
    *,
    cmd: Sequence[str] | None = None,
    readiness: str = "exit",
    timeout: float = 300.0,
    insecure: bool = False,
    run_id: str | None = None,
    config: str | None = None,
) -> Run:
    """Run a real container of REF through a private containerd 1.6 (runc) and return its Run.

    ``mode``: ``lazy`` (``soci-lab image rpull`` into the soci-lab snapshotter: lazily loaded layers),
    ``parallel`` (the same, the snapshotter's ParallelPuller pulling every layer) or ``containerd``
    (containerd's own pull onto its overlayfs snapshotter). A fresh containerd and snapshotter daemon are
    started for the run and removed after it (:class:`soci_lab.snapshotter.containers.ContainerdStack`), so
    nothing is cached. ``cmd`` (default: the image's command) runs until ``readiness`` (``exit`` or
    ``line:REGEX`` over its output; a container still running then is killed). The Run's events are the
    pull's (``ready`` when the image can run), the container's ``workload`` (its ``first_output_s`` detail,
    also ``summary["first_output_s"]``: seconds from the pull's start to the first output byte) and, for
    the soci-lab modes, the snapshotter daemon's and its layer servers' on the same clock. ``config``: the
    daemon's config.toml text (default: upstream's; ``parallel`` enables the parallel pull). Needs root,
    containerd, ctr and runc (:func:`soci_lab.snapshotter.containers.can_run_containers`)."""
    from .snapshotter.containers import can_run_containers

    able, why = can_run_containers()
    if not able:
        raise MountError(f"cannot run containers on this machine ({why})")
    return await anyio.to_thread.run_sync(
        functools.partial(_container_run, ref, mode, cmd, readiness, timeout, insecure, run_id, config)
    )


def run_container(ref: str, mode: str = "lazy", **kwargs: Any) -> Run:
    """:func:`arun_container` from sync code (a script or a notebook cell)."""
    return run_sync(arun_container, ref, mode, **kwargs)
