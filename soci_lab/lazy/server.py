"""The serving process of one lazy layer: build it, prefetch, mount it with FUSE, report ready, serve until
stopped. Runs in a process of its own — forked by :mod:`.zygote` (or the per-host service), or started as
``python -m soci_lab.lazy.server SPEC_PICKLE READY_FD`` — for the parent side in :mod:`.mount`.

:func:`serve`: builds the layer (:func:`soci_lab.lazy.layer.open_layer`: zTOC, fetcher, caches, span manager,
reader), checks the gzip header, checks the whole layer first if its zTOC is not trusted, runs the prefetch
(before the mount exists, as upstream), mounts, reports ready on the pipe (:class:`Conn`), then serves FUSE
requests and runs the background fetcher (paused for the silence period on mount unless the policy says
otherwise) until it gets SIGTERM/SIGINT or is unmounted. A failure before "ready" is reported on the pipe as
one line. The events are written to ``options.events_path`` on the way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from ..events import EventRecorder
from .layer import open_layer
from .spec import LazyLayerSpec, ServeOptions

#: how long a stopping layer server lets readahead fetches already in flight finish (see ``serve``)
READAHEAD_DRAIN_S = 5.0


def _fuse_options(allow_setuid_and_devices: bool = False) -> set[str]:
    import pyfuse3

    opts = set(pyfuse3.default_options)
    opts |= {"fsname=soci", "ro", "allow_other"}
    opts |= {"suid", "dev"} if allow_setuid_and_devices else {"nosuid", "nodev"}
    return opts


class Conn:
    """The child's end of the readiness pipe: one line per message."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, msg: tuple[str, Any]) -> None:
        import json

        os.write(self.fd, (json.dumps(list(msg)) + "\n").encode())


def serve(spec: LazyLayerSpec, mountpoint: str, options: ServeOptions, conn: Conn) -> None:
    """Serving process body: build, prefetch, mount, report ready, serve until told to stop."""
    import pyfuse3
    import trio

    from .background import BackgroundFetcher, SequentialResolver, per_process_period
    from .fusefs import LayerFS
    from .layercheck import check_layer, check_when_complete, layer_check_mode
    from .prefetch import prefetch

    events = EventRecorder(options.run_id, strategy="lazy")
    mounted = False

    async def main() -> None:
        nonlocal mounted
        t0 = events.now()
        layer = open_layer(spec, options, events)
        z, spans, reader, policy = layer.ztoc, layer.spans, layer.reader, layer.policy
        fs = LayerFS(
            reader,
            digest=spec.digest,
            blob_size=layer.blob_size,
            overlay_opaque_type=options.config.overlay_opaque_type,
            attr_timeout=options.config.fuse.attr_timeout,
            entry_timeout=options.config.fuse.entry_timeout,
            events=events,
        )
        await layer.check_header()
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
        if check == "background":  # the check will hash the spans reads fetch: keep their compressed bytes
            spans.keep_compressed = True
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
                spans.on_demand_fetch = bg.pause  # and again whenever a read has to fetch a span
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
        await layer.aclose()

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


def run_from_spec_file(spec_path: str, ready_fd: int) -> None:
    """Serve the ``(spec, mountpoint, options)`` pickled at ``spec_path``, reporting readiness on ``ready_fd``."""
    import pickle

    with open(spec_path, "rb") as f:
        spec, mountpoint, options = pickle.load(f)
    serve(spec, mountpoint, options, Conn(ready_fd))


def main(argv: list[str]) -> None:
    """``python -m soci_lab.lazy.server SPEC_PICKLE READY_FD``: the serving process."""
    run_from_spec_file(argv[0], int(argv[1]))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
