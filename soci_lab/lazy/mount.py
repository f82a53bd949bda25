"""Mount one lazy layer with FUSE in a serving process of its own, and unmount it without leftovers.

pyfuse3 serves one mount per process and runs its own trio loop, so each layer is served by a child
process (``python -m soci_lab.lazy.mount``, the spec handed over as a pickle file and readiness reported on
a pipe: safe from notebooks, threads and scripts without a ``__main__`` guard). The parent only waits for the
child's "ready" message, so a notebook cell never hangs on the FUSE loop. Typical use::

    spec = LazyLayerSpec.from_layer_file("layer.tar.gz", span_size=1 << 20)      # or from a zTOC + URL
    with mount_layer(spec, "/mnt/layer", options=ServeOptions()) as m:
        data = open("/mnt/layer/etc/os-release", "rb").read()
        print(m.state())                      # {"digest", "size", "fetchedSize", "fetchedPercent"}
    m.events()                                # the child's events as a DataFrame, after unmount

The child: parses the zTOC, builds the span manager (caches, fetcher), checks the gzip header, runs the
prefetch (before the mount exists, as upstream), mounts, reports ready, then serves FUSE requests and runs
the background fetcher (paused for the silence period on mount unless the policy says otherwise) until it
gets SIGTERM/SIGINT or is unmounted. Unmounting (:meth:`LayerMount.unmount`): SIGTERM, wait, SIGKILL if
needed, then ``fusermount3 -u -z`` / ``umount -l`` if the mount is still listed in ``/proc/self/mounts`` —
so nothing stays mounted even when the serving process was killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import MountError, SociLabError
from ..events import EventRecorder
from .prefetch import LazyPolicy, lazy_policy

#: fork layer servers from a pre-warmed zygote process (:mod:`soci_lab.lazy.zygote`) instead of starting a
#: fresh interpreter per layer; set False to always use ``python -m soci_lab.lazy.mount``
USE_ZYGOTE = True
#: how long a stopping layer server lets readahead fetches already in flight finish (see ``serve``)
READAHEAD_DRAIN_S = 5.0


@dataclass
class LazyLayerSpec:
    """Everything a serving process needs to know about one layer (picklable).

    ``ztoc`` is the serialized zTOC. The blob comes from ``blob_path`` (a local file) or from ``registry`` +
    ``repository`` (an OCI registry host or URL; the blob is fetched by ``digest`` with ranged GETs).

    ``ztoc_origin`` says how far the zTOC can be trusted before it is checked against the layer
    (:mod:`soci_lab.lazy.layercheck`): ``"unpinned"`` (the default: a v1 referrer anyone who can push to the
    repository can add, or unknown) — the whole layer is checked before anything is served; ``"pinned"``
    (found through the image the user pinned by digest: a v2 annotation, an explicit index digest) or
    ``"store"`` (the artifact store the user configured) — served at once, each entry's header checked
    before it is shown, the whole layer checked once every span has been fetched, and EIO from then on if
    that fails; ``"local"`` (built here from the very file served) — nothing to check.
    """

    digest: str
    ztoc: bytes
    blob_size: int = 0
    blob_path: str | None = None
    registry: str | None = None
    repository: str | None = None
    insecure: bool = False
    #: the registry credentials (the same as the eager path's; never shown by repr). They reach the serving
    #: process inside the spec file, which :meth:`LayerMount.start` writes 0600 and deletes once it is read
    creds: Any = None
    ztoc_origin: str = "unpinned"

    @classmethod
    def from_layer_file(
        cls, path: str | Path, *, digest: str | None = None, span_size: int = 1 << 22, media_type: str | None = None
    ) -> LazyLayerSpec:
        """Index a local layer file (builds its zTOC) and serve it from that file."""
        import hashlib

        from ..ztoc import build_ztoc

        path = Path(path)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = "sha256:" + h.hexdigest()
        z = build_ztoc(path, media_type=media_type, span_size=span_size)
        return cls(
            digest=digest, ztoc=bytes(z.to_bytes()), blob_size=path.stat().st_size, blob_path=str(path),
            ztoc_origin="local",
        )


@dataclass
class ServeOptions:
    """How the serving process fetches, caches and serves (defaults: upstream's)."""

    config: Config = field(default_factory=Config)
    policy: LazyPolicy | None = None
    prefetch_ranges: list[tuple[int, int, int]] = field(default_factory=list)
    cache_dir: str | None = None  # None: memory caches; else directory caches under it
    compressed_cache_bytes: int = 0  # 0: unbounded
    uncompressed_cache_bytes: int = 0
    #: with ``cache_dir``: an in-memory tier of hot uncompressed spans in front of the directory (a span read
    #: back from disk is re-hashed before it is served: ~8 ms per 4 MiB span, so a sequential scan larger
    #: than this tier reads at ~500 MB/s in process, ~200 MB/s through FUSE, instead of ~600 MB/s)
    hot_cache_bytes: int = 256 << 20
    readahead_spans: int = 1
    max_readahead_spans: int = 4
    fetch_period: float | None = None  # background fetch period override (seconds)
    #: lazy layers served at once (one process each): each process's background fetcher uses
    #: ``layer_count × fetch_period_msec`` so that, together, they start at most one span per period
    layer_count: int = 1
    background: bool | None = None  # override the policy's background fetch
    events_path: str | None = None
    run_id: str | None = None
    #: mount without ``nosuid,nodev`` (default: setuid bits and device nodes of the layer have no effect)
    allow_setuid_and_devices: bool = False
    #: when the layer is checked against its zTOC (:mod:`.layercheck`): ``"auto"`` by the spec's
    #: ``ztoc_origin``; ``"before_serving"`` always before the mount serves; ``"background"`` only once every
    #: span has been fetched (upstream serves at once and never checks: not safe with an unpinned zTOC);
    #: None: the config's ``lazy_layer_check``
    layer_check: str | None = None


def build_layer(spec: LazyLayerSpec, options: ServeOptions, events: EventRecorder) -> Any:
    """Construct (ztoc, span manager, reader, fs) for a layer in this process (the child; tests)."""
    from ..ztoc import Ztoc
    from .cache import DirectoryCache, MemoryCache, TieredCache
    from .fetcher import FileRangeFetcher, RegistryRangeFetcher
    from .fusefs import LayerFS
    from .reader import LayerReader, LayerTree
    from .span_manager import SpanManager

    cfg = options.config
    policy = options.policy or lazy_policy(cfg)
    z = Ztoc.from_bytes(spec.ztoc)
    fetcher: Any
    client = None
    if spec.blob_path:
        fetcher = FileRangeFetcher(spec.blob_path)
    elif spec.registry and spec.repository:
        from ..remote.client import RegistryClient

        client = RegistryClient(
            spec.registry, creds=spec.creds, insecure=spec.insecure, config=cfg.http, events=events
        )
        url = client.blob_url(spec.repository, spec.digest)
        fetcher = RegistryRangeFetcher(client, url, force_single_range_mode=cfg.blob.force_single_range_mode)
    else:
        raise MountError(f"layer {spec.digest}: no blob source (need blob_path or registry + repository)")
    if options.cache_dir:
        root = Path(options.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        cc: Any = DirectoryCache(tempfile.mkdtemp(prefix="c-", dir=root), options.compressed_cache_bytes)
        uc: Any = TieredCache(
            DirectoryCache(tempfile.mkdtemp(prefix="u-", dir=root), options.uncompressed_cache_bytes),
            options.hot_cache_bytes,
        )
    else:
        cc, uc = MemoryCache(options.compressed_cache_bytes), MemoryCache(options.uncompressed_cache_bytes)
    spans = SpanManager(
        z,
        fetcher,
        compressed_cache=cc,
        uncompressed_cache=uc,
        max_span_verification_retries=cfg.blob.max_span_verification_retries,
        fetch_timeout=float(cfg.blob.fetching_timeout_sec) if cfg.blob.fetching_timeout_sec > 0 else None,
        events=events,
        layer=spec.digest,
    )
    tree = LayerTree(list(z.toc))
    reader = LayerReader(
        tree,
        spans,
        verify=policy.verify_files,
        readahead_spans=options.readahead_spans,
        max_readahead_spans=options.max_readahead_spans,
        events=events,
        layer=spec.digest,
    )
    fs = LayerFS(
        reader,
        digest=spec.digest,
        blob_size=spec.blob_size or z.compressed_archive_size,
        overlay_opaque_type=cfg.overlay_opaque_type,
        attr_timeout=cfg.fuse.attr_timeout,
        entry_timeout=cfg.fuse.entry_timeout,
        events=events,
    )
    return z, spans, reader, fs, client, policy


def _fuse_options(allow_setuid_and_devices: bool = False) -> set[str]:
    import pyfuse3

    opts = set(pyfuse3.default_options)
    opts |= {"fsname=soci", "ro", "allow_other"}
    opts |= {"suid", "dev"} if allow_setuid_and_devices else {"nosuid", "nodev"}
    return opts


class _Conn:
    """The child's end of the readiness pipe: one line per message."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, msg: tuple[str, Any]) -> None:
        import json

        os.write(self.fd, (json.dumps(list(msg)) + "\n").encode())


def _child(spec: LazyLayerSpec, mountpoint: str, options: ServeOptions, conn: Any) -> None:
    """Serving process body: build, prefetch, mount, report ready, serve until told to stop."""
    import pyfuse3
    import trio

    from .background import BackgroundFetcher, SequentialResolver, per_process_period
    from .layercheck import check_layer, check_when_complete, layer_check_mode
    from .prefetch import prefetch

    events = EventRecorder(options.run_id, strategy="lazy")
    mounted = False

    async def main() -> None:
        nonlocal mounted
        t0 = events.now()
        z, spans, reader, fs, client, policy = build_layer(spec, options, events)
        # upstream checks the gzip header bytes [0, start of span 0) when it creates the span manager
        # (no digest covers these bytes, so a bad answer is retried like a span, at least 3 times)
        h0, h1 = 0, z.compressed_range(0)[0]
        for attempt in range(max(3, spans.attempts)):
            if h1 <= 0:
                break
            try:
                z.zinfo.verify_header(await spans.fetcher.fetch(h0, h1 - 1))
                break
            except SociLabError:
                if attempt + 1 >= max(3, spans.attempts):
                    raise
        check = layer_check_mode(spec, options)
        if check == "before_serving":  # the mount serves only what has been checked: the whole layer, first
            await check_layer(spans, z, digest=spec.digest, blob_size=spec.blob_size, events=events, layer=spec.digest)
            reader.mark_checked()
        deferred: list[int] = []
        if policy.prefetch_enabled and options.prefetch_ranges:
            result = await prefetch(
                spans,
                options.prefetch_ranges,
                max_concurrency=policy.prefetch_max_concurrency,
                profile=policy.prefetch_profile,
                events=events,
                layer=spec.digest,
            )
            deferred = result.deferred or []  # priority > 0 spans: after the mount, in the background
        pyfuse3.init(fs, mountpoint, _fuse_options(options.allow_setuid_and_devices))
        mounted = True
        # cpu_s: CPU time of this serving process up to here (since its fork, or its start without the
        # zygote) — what several layers mounted at once compete for on the host's cores; entries: the
        # zTOC's (what that CPU grows with). soci_lab.sim.fit uses both.
        events.emit("mount", t0, layer=spec.digest, path=mountpoint, cpu_s=time.process_time(), entries=len(z.toc))
        conn.send(("ready", None))
        bg_on = policy.background_fetch if options.background is None else options.background
        period = options.fetch_period
        if period is None:
            period = per_process_period(options.config.background_fetch, options.layer_count)
        bg = BackgroundFetcher(options.config.background_fetch, events=events, fetch_period=period)
        if bg_on:
            bg.add(SequentialResolver(spans, layer=spec.digest))
            if policy.pause_background_on_mount:
                bg.pause()
        # readahead fetches in flight when the server stops are let finish (their request is on the wire
        # already; at most READAHEAD_DRAIN_S): cut off at a random point, they made a pull's requests and bytes
        # depend on how fast the stop came — the simulator, and any comparison of runs, count them whole
        async with trio.open_nursery() as readaheads, trio.open_nursery() as nursery:
            reader.task_group = readaheads

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(stop_on_signal)
            if deferred:
                later = [(i, i, 0) for i in deferred]
                limit = policy.prefetch_max_concurrency
                nursery.start_soon(
                    lambda: prefetch(spans, later, max_concurrency=limit, events=events, layer=spec.digest)
                )
            if bg_on:
                nursery.start_soon(bg.run)
            if check == "background":
                nursery.start_soon(
                    lambda: check_when_complete(
                        spans, z, digest=spec.digest, blob_size=spec.blob_size, on_failure=fs.fail,
                        on_success=reader.mark_checked, events=events, layer=spec.digest,
                    )
                )
            try:
                await pyfuse3.main()
            finally:
                bg.close()
                reader.task_group = None  # no new readahead
                readaheads.cancel_scope.deadline = trio.current_time() + READAHEAD_DRAIN_S
                nursery.cancel_scope.cancel()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    failed = False
    try:
        trio.run(main)
    except BaseException as exc:  # report to the parent, which is waiting for "ready"
        failed = True
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {(str(exc) or '-').splitlines()[0]}"))
    finally:
        if mounted:
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)
        if options.events_path:
            with contextlib.suppress(Exception):
                events.write(options.events_path)
    if failed:
        os._exit(1)


def _unescape(field: str) -> str:
    """/proc/self/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(path: str | Path) -> bool:
    """Whether ``path`` is a mount point listed in ``/proc/self/mounts``."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and _unescape(parts[1]) == target:
                return True
    return False


def force_unmount(path: str | Path) -> None:
    """Unmount ``path`` whatever state its server is in (dead server: "transport endpoint not connected")."""
    for cmd in (["fusermount3", "-u", "-z", str(path)], ["umount", "-l", str(path)]):
        if not is_mounted(path):
            return
        if shutil.which(cmd[0]) is None:
            continue
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)
    if is_mounted(path):
        raise MountError(f"{path} is still mounted after fusermount3 -u -z and umount -l")


class LayerMount:
    """A layer served by a child process at ``mountpoint``."""

    def __init__(
        self,
        spec: LazyLayerSpec,
        mountpoint: str | Path,
        options: ServeOptions | None = None,
        *,
        work_dir: str | Path | None = None,
    ) -> None:
        """``work_dir`` keeps the server's spec pickle and log (default: a temporary directory)."""
        self.spec = spec
        self.mountpoint = str(Path(mountpoint).resolve())
        self.options = options or ServeOptions()
        self._tmp: str | None = str(work_dir) if work_dir is not None else None
        #: a temporary directory made here is removed by :meth:`cleanup`; a caller's ``work_dir`` is kept
        self._owns_tmp = work_dir is None
        self._events: Any = None
        if self._tmp is not None:
            Path(self._tmp).mkdir(parents=True, exist_ok=True)
        if self.options.events_path is None:
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="soci-lab-mount-")
            self.options.events_path = os.path.join(self._tmp, "events.jsonl")
        #: the serving process: a ``subprocess.Popen`` or a zygote-forked ``ServerProcess`` (same methods)
        self.process: Any = None
        self.ready_s: float | None = None

    def start(self, timeout: float = 60.0) -> LayerMount:
        """Start the serving process and wait until the layer is mounted (or raise :class:`MountError`)."""
        import json
        import pickle
        import select
        import sys

        if is_mounted(self.mountpoint):
            raise MountError(f"{self.mountpoint} is already a mount point")
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="soci-lab-mount-")
        spec_path = os.path.join(self._tmp, "spec.pickle")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec_path)
        # 0600: the spec may hold registry credentials (the serving process reads it, then it is deleted)
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump((self.spec, self.mountpoint, self.options), f)
        rfd, wfd = os.pipe()
        t0 = time.monotonic()
        log_path = os.path.join(self._tmp, "server.log")
        try:
            if USE_ZYGOTE:
                from .zygote import spawn_server

                try:
                    self.process = spawn_server(spec_path, log_path, wfd)
                except OSError:
                    self.process = None
            if self.process is None:
                with open(log_path, "ab") as log:
                    self.process = subprocess.Popen(
                        [sys.executable, "-m", "soci_lab.lazy.mount", spec_path, str(wfd)],
                        pass_fds=(wfd,),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
        finally:
            os.close(wfd)
        line = b""
        try:
            deadline = t0 + timeout
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MountError(f"layer {self.spec.digest} was not mounted within {timeout}s")
                ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
                if ready:
                    chunk = os.read(rfd, 4096)
                    if not chunk:
                        break
                    line += chunk
        except BaseException:
            os.close(rfd)
            self._forget_spec(spec_path)
            self.unmount()
            raise
        os.close(rfd)
        self._forget_spec(spec_path)  # read by now (the server reported), or never will be
        try:
            kind, detail = json.loads(line.decode().splitlines()[0]) if line.strip() else ("error", None)
        except (ValueError, IndexError):
            kind, detail = "error", line[:200].decode(errors="replace")
        if kind != "ready":
            self.unmount()
            if detail is None:
                detail = f"serving process exited ({self.server_log()[-300:]})"
            raise MountError(f"mounting layer {self.spec.digest} at {self.mountpoint} failed: {detail}")
        self.ready_s = time.monotonic() - t0
        return self

    @staticmethod
    def _forget_spec(path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    def server_log(self) -> str:
        """What the serving process wrote to stdout/stderr."""
        if not self._tmp:
            return ""
        try:
            return Path(self._tmp, "server.log").read_text(errors="replace")
        except OSError:
            return ""

    @property
    def state_path(self) -> Path:
        return Path(self.mountpoint) / ".soci-snapshotter" / f"{self.spec.digest}.json"

    def state(self) -> dict[str, Any]:
        """The layer state file: digest, size, fetchedSize, fetchedPercent, error."""
        import json

        return json.loads(self.state_path.read_text())

    def unmount(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM → SIGKILL) and make sure nothing stays mounted."""
        p = self.process
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        force_unmount(self.mountpoint)

    def events(self) -> Any:
        """The serving process's events (a DataFrame), available after :meth:`unmount`."""
        from ..events import read_events

        if self._events is not None:
            return self._events
        path = self.options.events_path
        if path and os.path.exists(path):
            return read_events(path)
        from ..events import events_to_frame

        return events_to_frame([])

    def cleanup(self) -> None:
        """Remove the temporary directory this mount made (its events are kept in memory first)."""
        if self._tmp and self._owns_tmp:
            self._events = self.events()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


@contextlib.contextmanager
def mount_layer(
    spec: LazyLayerSpec, mountpoint: str | Path, options: ServeOptions | None = None, *, timeout: float = 60.0
) -> Iterator[LayerMount]:
    """Mount a lazy layer for the duration of a ``with`` block; always unmounted afterwards."""
    m = LayerMount(spec, mountpoint, options)
    try:
        m.start(timeout)
        yield m
    finally:
        m.unmount()
        m.cleanup()


def _main(argv: list[str]) -> None:
    """``python -m soci_lab.lazy.mount SPEC_PICKLE READY_FD``: the serving process."""
    import pickle

    with open(argv[0], "rb") as f:
        spec, mountpoint, options = pickle.load(f)
    _child(spec, mountpoint, options, _Conn(int(argv[1])))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
