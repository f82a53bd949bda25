"""Parameter sweeps: the cartesian product of a grid, simulated on any ``concurrent.futures.Executor``.

Local processes by default; a Dask cluster when a sweep outgrows one machine::

    from distributed import Client
    with Client("tcp://scheduler:8786") as client:
        frame = sweep("synthetic:7,size=2GiB,layers=25", grid, executor=client.get_executor())

Points are shipped in chunks (several per worker) so each worker builds the image and the workload
once per chunk: pass the image as a spec string (``synthetic:SEED,…``) or :class:`SyntheticSpec` and
workers generate it themselves (cached per process); an :class:`ImageModel` is pickled with each chunk.

Grid keys: ``mode``, ``span_size``, ``rtt``, ``bandwidth``, ``request_overhead``, ``conn_cap``,
``redirect``, ``cores``, ``chunk_size`` (parallel ``concurrent_download_chunk_size``),
``downloads_per_image``, ``read_fraction`` (synthetic trace), ``prefetch``, ``bg_disable``; sizes, rates
and durations accept the CLI's units (``4MiB``, ``100Mbit``, ``20ms``).
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import SimulationError
from ..units import parse_duration, parse_rate, parse_size
from .image import ImageModel
from .run import SUMMARY_KEYS, simulate
from .synthetic import SyntheticSpec, generate
from .workload import Access, read_everything, synthetic_trace
from .world import SimParams

if TYPE_CHECKING:
    import pandas as pd

GRID_KEYS = (
    "mode",
    "span_size",
    "rtt",
    "bandwidth",
    "request_overhead",
    "conn_cap",
    "redirect",
    "cores",
    "chunk_size",
    "downloads_per_image",
    "read_fraction",
    "prefetch",
    "bg_disable",
)


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload to build inside each worker: ``everything``, or a synthetic trace of ``fraction``."""

    kind: str = "synthetic"
    fraction: float = 0.05
    seed: int = 0
    read_size: int = 256 * 1024
    max_accesses: int | None = None


ImageArg = ImageModel | SyntheticSpec | str
WorkloadArg = WorkloadSpec | list[Access] | str | None


def sweep(
    image: ImageArg,
    grid: Mapping[str, Sequence[Any]],
    *,
    workload: WorkloadArg = None,
    params: SimParams | None = None,
    config: Config | None = None,
    executor: Executor | None = None,
    chunks_per_worker: int = 4,
    fine_events: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Simulate every point of ``grid`` and return one row per point: its values, then the summary.

    Extra columns: ``spans_fetched`` (on-demand span fetches, lazy), ``sim_wall_s`` (host seconds spent
    simulating the point). Rows come back in grid order. Per-access events are off unless
    ``fine_events`` (a sweep keeps only summaries; they do not depend on it). ``progress``: a progress bar
    of points done (tqdm.auto: a widget in a notebook, a bar on a terminal; ``None`` = only where one shows).
    """
    import pandas as pd

    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise SimulationError(f"unknown sweep keys {sorted(unknown)}; known: {', '.join(GRID_KEYS)}")
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    if not points:
        return pd.DataFrame(columns=[*keys, *SUMMARY_KEYS])
    params = replace(params or SimParams(), fine_events=fine_events)
    config = config or Config()
    if isinstance(image, str):
        image = SyntheticSpec.parse(image)
    own = executor is None
    workers = os.cpu_count() or 1
    if own:
        executor = ProcessPoolExecutor(max_workers=workers)
    assert executor is not None
    workers = getattr(executor, "_max_workers", workers) or workers
    # group points with the same image geometry together so a chunk respans once
    order = sorted(range(len(points)), key=lambda i: (str(points[i].get("span_size", "")), i))
    n_chunks = max(1, min(len(points), workers * chunks_per_worker))
    size = -(-len(order) // n_chunks)
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    try:
        futures = [
            executor.submit(_run_points, image, [(i, points[i]) for i in batch], workload, params, config)
            for batch in batches
        ]
        from concurrent.futures import as_completed

        from tqdm.auto import tqdm

        rows: list[dict[str, Any]] = []
        disable = None if progress is None else not progress
        with tqdm(total=len(points), desc="sweep", unit="point", disable=disable) as bar:
            for fut in as_completed(futures):
                done = fut.result()
                rows.extend(done)
                bar.update(len(done))
    finally:
        if own:
            executor.shutdown()
    rows.sort(key=lambda r: r["_point"])
    frame = pd.DataFrame(rows).drop(columns="_point")
    return frame


@lru_cache(maxsize=4)
def _cached_image(spec: SyntheticSpec) -> ImageModel:
    return generate(spec)


_RESPAN: dict[tuple[tuple[str, ...], int], ImageModel] = {}
_TRACES: dict[tuple[tuple[str, ...], Any], list[Access]] = {}


def _fingerprint(image: ImageModel) -> tuple[str, ...]:
    """Identifies an image's content across pickling (per-worker caches outlive one sweep on Dask)."""
    return (image.name, *(layer.digest for layer in image.layers))


def _run_points(
    image: ImageModel | SyntheticSpec,
    points: list[tuple[int, dict[str, Any]]],
    workload: WorkloadArg,
    params: SimParams,
    config: Config,
) -> list[dict[str, Any]]:
    """Worker side: simulate a batch of points (top-level so it pickles)."""
    base = _cached_image(image) if isinstance(image, SyntheticSpec) else image
    rows = []
    for idx, point in points:
        img = base
        if "span_size" in point:
            span = parse_size(point["span_size"])
            key = (_fingerprint(base), span)
            if key not in _RESPAN:
                if len(_RESPAN) > 16:
                    _RESPAN.clear()
                _RESPAN[key] = base.respan(span)
            img = _RESPAN[key]
        trace = _workload_for(base, workload, point)
        p, cfg, mode = _apply_point(point, params, config)
        t0 = time.perf_counter()
        run = simulate(img, mode, workload=trace, config=cfg, params=p, run_id=f"sweep-{idx}")
        wall = time.perf_counter() - t0
        row: dict[str, Any] = {"_point": idx, **point}
        row.update({k: v for k, v in run.summary.items() if k != "mode" or "mode" not in point})
        row["spans_fetched"] = run.checks.get("span_fetches", 0)
        row["sim_wall_s"] = wall
        rows.append(row)
    return rows


def _workload_for(image: ImageModel, workload: WorkloadArg, point: dict[str, Any]) -> list[Access] | None:
    if isinstance(workload, list):
        return workload
    spec = workload
    if spec is None and "read_fraction" not in point:
        return None
    if isinstance(spec, str):
        if spec != "everything":
            raise SimulationError(f"workload must be 'everything', a WorkloadSpec or a list of accesses, not {spec!r}")
        spec = WorkloadSpec(kind="everything")
    spec = spec or WorkloadSpec()
    if "read_fraction" in point:
        spec = replace(spec, kind="synthetic", fraction=float(point["read_fraction"]))
    key = (_fingerprint(image), spec)
    if key not in _TRACES:
        if len(_TRACES) > 64:
            _TRACES.clear()
        if spec.kind == "everything":
            _TRACES[key] = read_everything(image, spec.read_size)
        else:
            _TRACES[key] = synthetic_trace(
                image, spec.fraction, seed=spec.seed, read_size=spec.read_size, max_accesses=spec.max_accesses
            )
    return _TRACES[key]


def _apply_point(point: dict[str, Any], params: SimParams, config: Config) -> tuple[SimParams, Config, str]:
    net, host = params.network, params.host
    if "rtt" in point:
        net = replace(net, rtt=parse_duration(point["rtt"]))
    if "bandwidth" in point:
        net = replace(net, bandwidth=parse_rate(point["bandwidth"]))
    if "request_overhead" in point:
        net = replace(net, request_overhead=parse_duration(point["request_overhead"]))
    if "conn_cap" in point:
        net = replace(net, conn_cap=parse_rate(point["conn_cap"]) if point["conn_cap"] else None)
    if "redirect" in point:
        net = replace(net, redirect=bool(point["redirect"]))
    if "cores" in point:
        host = replace(host, cores=int(point["cores"]))
    cfg = config
    if {"chunk_size", "downloads_per_image", "prefetch", "bg_disable"} & point.keys():
        cfg = copy.deepcopy(config)
        ppu = cfg.pull_modes.parallel_pull_unpack
        if "chunk_size" in point:
            ppu.concurrent_download_chunk_size = str(point["chunk_size"] or "")
            ppu.chunk_size_bytes()
        if "downloads_per_image" in point:
            ppu.max_concurrent_downloads_per_image = int(point["downloads_per_image"])
        if "prefetch" in point:
            cfg.prefetch.enable = bool(point["prefetch"])
        if "bg_disable" in point:
            cfg.background_fetch.disable = bool(point["bg_disable"])
    mode = str(point.get("mode", "lazy"))
    return replace(params, network=net, host=host), cfg, mode
