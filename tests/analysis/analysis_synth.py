"""Synthetic but plausible event frames for the analysis tests (not part of the package).

``make_events(strategy, source)`` plays out a small pull of a three-layer image the way each strategy
does it, through a real :class:`EventRecorder` (explicit times, so the frames are deterministic):

- sequential: each layer downloaded whole (one HTTP request), then verified, decompressed, applied,
  one after another; then the overlay mount, ``ready``, and a workload of local file reads;
- parallel: every layer downloaded in concurrent ranged chunks (one request each), unpacked as soon as
  its chunks are in; mount, ready, workload;
- lazy: the SOCI index, one zTOC per indexed layer, the small unindexed layer fetched and unpacked,
  FUSE mounts, ready early; reads that miss fetch, verify and decompress their span first (slow), then
  background fetches of the remaining spans.

``source="sim"`` gives the same scenario with times scaled by ``time_scale`` (a model that is a little
off), so real-vs-sim plots have two distinct curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from soci_lab.events import EventRecorder

MIB = 1024 * 1024
LAYERS = [  # digest, compressed, uncompressed, indexed
    ("sha256:" + "a1" * 32, 24 * MIB, 60 * MIB, True),
    ("sha256:" + "b2" * 32, 12 * MIB, 30 * MIB, True),
    ("sha256:" + "c3" * 32, 2 * MIB, 5 * MIB, False),
]
IMAGE_BYTES = sum(u for _, _, u, _ in LAYERS)
SPAN = 4 * MIB
BANDWIDTH = 100 * MIB  # bytes/s
RTT = 0.02


def _xfer(nbytes: int) -> float:
    return RTT + nbytes / BANDWIDTH


def make_events(
    strategy: str,
    source: str = "real",
    *,
    seed: int = 0,
    reads: int = 24,
    time_scale: float | None = None,
    run_id: str | None = None,
) -> pd.DataFrame:
    """One run's events (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k = time_scale if time_scale is not None else (1.0 if source == "real" else 0.9)
    rec = EventRecorder(run_id or f"{strategy}-{source}-{seed}", source=source, strategy=strategy, clock=lambda: 0.0)

    def emit(kind: str, t0: float, t1: float, **kw: object) -> None:
        rec.emit(kind, t0 * k, t1 * k, **kw)  # type: ignore[arg-type]

    def http(t0: float, nbytes: int, layer: str | None = None, **attrs: object) -> float:
        t1 = t0 + _xfer(nbytes)
        emit("http_request", t0, t1, layer=layer, nbytes=nbytes, status=200, **attrs)
        return t1

    def unpack(layer: str, t0: float, usize: int) -> float:
        t1 = t0 + usize / (200 * MIB)
        emit("decompress", t0, t1, layer=layer, nbytes=usize)
        emit("verify", t0, t1, layer=layer, nbytes=usize)
        emit("apply", t0, t1 + 0.01, layer=layer, nbytes=usize)
        return t1 + 0.01

    # files: 8 per layer, 256 KiB each, spread evenly over the layer's tar stream
    files = [(f"/l{li}/f{j}", li, j * (layer[2] // 8), 256 * 1024) for li, layer in enumerate(LAYERS) for j in range(8)]
    picks = rng.integers(0, len(files), size=reads)
    offsets = rng.integers(0, 4, size=reads) * 64 * 1024

    if strategy in ("sequential", "parallel"):
        t_unpacked = 0.0
        t_free = 0.0
        for digest, csize, usize, _ in LAYERS:
            if strategy == "sequential":
                t0 = t_free
                t1 = http(t0, csize, digest)
                emit("blob_download", t0, t1, layer=digest, nbytes=csize)
                t_free = unpack(digest, t1, usize)
                t_unpacked = t_free
            else:
                n = max(1, csize // (4 * MIB))
                ends = []
                for c in range(n):
                    lo, hi = c * csize // n, (c + 1) * csize // n
                    t0 = 0.005 * c
                    t1 = http(t0, hi - lo, digest, range=f"bytes={lo}-{hi - 1}") + 0.2 * rng.random()
                    emit("chunk_download", t0, t1, layer=digest, span=c, nbytes=hi - lo)
                    ends.append(t1)
                t_unpacked = max(t_unpacked, unpack(digest, max(ends), usize))
        emit("mount", t_unpacked, t_unpacked + 0.005, what="overlay")
        t_ready = t_unpacked + 0.005
        emit("ready", 0.0, t_ready)
        t = t_ready
        for i, fi in enumerate(picks):
            path, _li, _off, size = files[fi]
            n = int(min(64 * 1024, size - offsets[i]))
            dt = 0.0002 + 0.0008 * rng.random()
            emit("file_read", t, t + dt, path=path, nbytes=n, offset=int(offsets[i]))
            t += dt + 0.001
        emit("workload", t_ready, t, accesses=reads)
        return rec.to_frame()

    if strategy not in ("lazy", "lazy+prefetch"):
        raise ValueError(strategy)
    t = http(0.0, 4096)
    emit("index_fetch", 0.0, t, nbytes=4096)
    t_mounts = t
    for digest, csize, usize, indexed in LAYERS:
        if indexed:
            zsize = 32 * 1024 * (usize // SPAN + 1)
            t1 = http(t, zsize, digest)
            emit("ztoc_fetch", t, t1, layer=digest, nbytes=zsize)
            emit("mount", t1, t1 + 0.003, layer=digest, what="fuse")
            t_mounts = max(t_mounts, t1 + 0.003)
        else:
            t1 = http(t, csize, digest)
            emit("blob_download", t, t1, layer=digest, nbytes=csize)
            t_mounts = max(t_mounts, unpack(digest, t1, usize))
    emit("mount", t_mounts, t_mounts + 0.005, what="overlay")
    t_ready = t_mounts + 0.005
    emit("ready", 0.0, t_ready)
    fetched: set[tuple[str, int]] = set()
    t = t_ready
    for i, fi in enumerate(picks):
        path, li, off, size = files[fi]
        digest, csize, usize, indexed = LAYERS[li]
        n = int(min(64 * 1024, size - offsets[i]))
        t_read = t
        if indexed:
            span = (off + int(offsets[i])) // SPAN
            if (digest, span) not in fetched:
                fetched.add((digest, span))
                c_span = csize * SPAN // usize
                t1 = http(t, c_span, digest, range="bytes=…")
                emit("span_fetch", t, t1, layer=digest, span=span, nbytes=c_span, why="read")
                emit("span_verify", t1, t1 + 0.002, layer=digest, span=span, nbytes=c_span)
                emit("span_decompress", t1 + 0.002, t1 + 0.012, layer=digest, span=span, nbytes=SPAN)
                t_read = t1 + 0.012
            else:
                emit("cache_hit", t, t, layer=digest, span=span)
        dt = 0.0003 + 0.0005 * rng.random()
        emit("file_read", t, t_read + dt, path=path, nbytes=n, offset=int(offsets[i]), layer=digest)
        t = t_read + dt + 0.001
    emit("workload", t_ready, t, accesses=reads)
    # background fetcher: the rest of the spans of the first layer, after the workload
    digest, csize, usize, _ = LAYERS[0]
    c_span = csize * SPAN // usize
    tb = t
    for span in range(usize // SPAN):
        if (digest, span) in fetched:
            continue
        t1 = http(tb, c_span, digest, range="bytes=…")
        emit("bg_fetch", tb, t1, layer=digest, span=span, nbytes=c_span)
        emit("span_fetch", tb, t1, layer=digest, span=span, nbytes=c_span, why="background")
        tb = t1
    return rec.to_frame()


STRATEGIES = ("sequential", "parallel", "lazy")
