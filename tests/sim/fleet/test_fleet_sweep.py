"""Fleet sweeps: tidy rows per point and pool, the same on a Dask LocalCluster as in-process."""

from __future__ import annotations

import pandas as pd
import pytest

from soci_lab.errors import SimulationError
from soci_lab.sim.fleet import spec_for, sweep_fleet

IMAGE = "synthetic:3,size=16MiB,layers=3,min_layer=1MiB"
GRID = {"mode": ["parallel", "lazy"], "hosts": [1, 50], "egress": [50e6, 500e6], "warm_fraction": [0.0, 0.2],
        "read_fraction": [0.05]}  # fmt: skip


def test_a_grid_point_makes_the_spec_it_names() -> None:
    spec = spec_for({"hosts": 10, "warm_fraction": 0.3, "egress": 1e9, "rate_limit": 50.0, "arrivals": "waves",
                     "wave": 4})  # fmt: skip
    assert [(p.count, p.held) for p in spec.pools] == [(7, ()), (3, (0,))]
    assert (spec.registry.egress, spec.registry.rate_limit, spec.arrivals.kind, spec.arrivals.size) == (
        1e9, 50.0, "waves", 4)  # fmt: skip
    with pytest.raises(SimulationError, match="unknown fleet grid keys \\['hostz'\\]"):
        spec_for({"hostz": 3})


def test_the_sweep_is_tidy_and_the_same_on_a_local_cluster() -> None:
    distributed = pytest.importorskip("dask.distributed")
    reference, ref_events = sweep_fleet(IMAGE, GRID, events=True)
    # one row per point and pool: warm points of 50 hosts have two pools (cold, warm)
    assert len(reference) == 16 + 4
    assert {"hosts", "egress", "pool", "ready_p50_s", "workload_done_p99_s", "bytes_fetched", "requests"} <= set(
        reference.columns)  # fmt: skip
    warm = reference[(reference.hosts == 50) & (reference.warm_fraction == 0.2)]
    assert len(warm) == 8 and sorted(warm.pool_hosts.unique()) == [10, 40]
    per_host = warm.bytes_fetched / warm.pool_hosts
    assert (per_host[warm.pool == 1].to_numpy() < per_host[warm.pool == 0].to_numpy()).all()  # warm fetch less
    assert set(ref_events.kind) == {"http_request"} and set(ref_events.host) == {0}
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = sweep_fleet(IMAGE, GRID, executor=client)
    pd.testing.assert_frame_equal(frame, reference)
