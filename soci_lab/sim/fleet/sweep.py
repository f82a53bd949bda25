"""Sweeps over fleet configurations, on Dask distributed or any executor with ``submit``.

Each point of the grid's cartesian product is one :func:`~soci_lab.sim.fleet.simulate_fleet` run, shipped
to a worker as plain data (the image as a ``synthetic:…`` spec string is generated on the worker; an
:class:`ImageModel` is pickled). The result is a tidy DataFrame with one row per point and host pool
(``pool_hosts``, percentiles, bytes and requests summed over the pool's hosts, 429s), so a 10,000-host
point is a row or two, not 10,000; with ``events=True`` also the sampled hosts' request events, tagged
with their point. On a cluster::

    from dask.distributed import Client
    with Client("tcp://scheduler:8786") as client:
        frame = sweep_fleet("synthetic:1,size=1GB", {"hosts": [100, 1000, 10000], "egress": [1.25e9, 5e9]},
                            executor=client)

Grid keys (:data:`GRID_KEYS`): ``mode``; ``hosts``; ``nic``, ``egress`` (bytes/s); ``rate_limit`` (requests/s),
``burst``, ``retry_after`` (s), ``service_s``, ``service`` (the registry); ``arrivals`` (``all``, ``poisson``,
``waves``) with ``arrival_rate``, ``wave``, ``interval``, ``quantum``; ``warm_fraction`` of hosts holding
layers ``held`` (default: layer 0, the base layer); ``read_fraction`` of a synthetic start-up trace (None: no workload);
``seed``; ``p2p_seeds`` (0: no peer-to-peer; N: :class:`P2P` with N seeds).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ...errors import SimulationError
from ..image import ImageModel
from ..synthetic import SyntheticSpec, generate
from ..workload import synthetic_trace
from ..world import SimParams
from .model import P2P, Arrivals, FleetSpec, HostPool
from .run import simulate_fleet

if TYPE_CHECKING:
    import pandas as pd

GRID_KEYS = (
    "mode", "hosts", "nic", "egress", "rate_limit", "burst", "retry_after", "service_s", "service", "arrivals",
    "arrival_rate", "wave", "interval", "quantum", "warm_fraction", "held", "read_fraction", "seed", "p2p_seeds",
)  # fmt: skip

ImageArg = ImageModel | SyntheticSpec | str


@lru_cache(maxsize=4)
def _image_of(spec: SyntheticSpec) -> ImageModel:
    return generate(spec)


def _image(image: ImageArg) -> ImageModel:
    if isinstance(image, str):
        image = SyntheticSpec.parse(image)
    return _image_of(image) if isinstance(image, SyntheticSpec) else image


def spec_for(point: Mapping[str, Any], base: FleetSpec | None = None) -> FleetSpec:
    """The :class:`FleetSpec` of one grid point (keys not given keep ``base``'s values)."""
    unknown = sorted(set(point) - set(GRID_KEYS))
    if unknown:
        raise SimulationError(f"unknown fleet grid keys {unknown}; known: {', '.join(GRID_KEYS)}")
    base = base or FleetSpec()
    reg = base.registry
    reg_keys = {"egress": "egress", "rate_limit": "rate_limit", "burst": "burst", "retry_after": "retry_after",
                "service_s": "service_s", "service": "service"}  # fmt: skip
    reg = replace(reg, **{field: point[key] for key, field in reg_keys.items() if key in point})
    arr = base.arrivals
    if "arrivals" in point or {"arrival_rate", "wave", "interval", "quantum"} & set(point):
        arr = Arrivals(point.get("arrivals", arr.kind), rate=point.get("arrival_rate", arr.rate),
                       size=point.get("wave", arr.size), interval=point.get("interval", arr.interval),
                       quantum=point.get("quantum", arr.quantum))  # fmt: skip
    pools = base.pools
    if {"hosts", "nic", "warm_fraction", "held"} & set(point):
        n = int(point.get("hosts", sum(p.count for p in pools)))
        nic = point.get("nic", pools[0].nic if pools else None)
        warm = round(float(point.get("warm_fraction", 0.0)) * n)
        held = tuple(point.get("held", (0,)))
        pools = tuple(p for p in (HostPool(n - warm, nic), HostPool(warm, nic, held)) if p.count)
    p2p = base.p2p
    if "p2p_seeds" in point:
        p2p = P2P(int(point["p2p_seeds"])) if point["p2p_seeds"] else None
    return replace(base, pools=pools, registry=reg, arrivals=arr, seed=int(point.get("seed", base.seed)), p2p=p2p)


def run_point(image: ImageArg, point: dict[str, Any], base: FleetSpec | None, params: SimParams | None,
              events: bool) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:  # fmt: skip
    """One grid point on a worker: its per-pool rows (grid values first) and, with ``events``, its events."""
    img = _image(image)
    spec = spec_for(point, base)
    frac = point.get("read_fraction")
    workload = synthetic_trace(img, float(frac), seed=int(point.get("seed", 0))) if frac else None
    run = simulate_fleet(img, point.get("mode", "lazy"), spec, workload=workload, params=params)
    # the pool's own host count is ``pool_hosts`` (``hosts`` is the grid's: the whole fleet)
    rows = [{**point, **{("pool_hosts" if k == "hosts" else k): v for k, v in row.items()}}
            for row in run.by_pool().to_dict("records")]  # fmt: skip
    ev = None
    if events:
        ev = run.events.copy()
        for k, v in point.items():
            ev.insert(0, k, [v] * len(ev) if isinstance(v, (tuple, list)) else v)
    return rows, ev


def sweep_fleet(
    image: ImageArg,
    grid: Mapping[str, Sequence[Any]],
    *,
    base: FleetSpec | None = None,
    params: SimParams | None = None,
    executor: Any = None,
    events: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Every point of ``grid``'s cartesian product, one tidy row per point and host pool.

    ``executor``: anything with ``submit(fn, *args)`` returning a future with ``result()`` — a
    ``dask.distributed.Client``, ``client.get_executor()``, a ``concurrent.futures`` pool — or None to run
    in this process. ``events``: also return the sampled hosts' events, one frame for all points.
    """
    import pandas as pd

    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    for point in points:
        spec_for(point, base)  # refuse a bad grid before shipping anything
    if executor is None:
        results = [run_point(image, p, base, params, events) for p in points]
    else:
        futures = [executor.submit(run_point, image, p, base, params, events) for p in points]
        results = [f.result() for f in futures]
    frame = pd.DataFrame([row for rows, _ in results for row in rows])
    if not events:
        return frame
    evs = [ev for _, ev in results if ev is not None and len(ev)]
    return frame, (pd.concat(evs, ignore_index=True) if evs else pd.DataFrame())


__all__ = ["GRID_KEYS", "run_point", "spec_for", "sweep_fleet"]
