"""Per-group flow clocks (sim/fleet/star.py) against the dense reference: the same host times, bytes and
requests for random fleets (pools of different NICs, a per-connection cap, Poisson and wave arrivals, rate
limits that split groups), and work per rate update that does not grow with the flows in flight."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.retrypolicy import RetryPolicy
from soci_lab.sim import SimParams, SyntheticSpec, generate, synthetic_trace
from soci_lab.sim.fleet import Arrivals, FleetSpec, HostPool, Registry, simulate_fleet

IMAGE = generate(SyntheticSpec(seed=5, compressed_size=8 << 20, layers=2, min_layer_size=1 << 20))
TRACE = synthetic_trace(IMAGE, 0.05, seed=2)


def _same(a, b) -> None:
    ha, hb = a.hosts(), b.hosts()
    assert ha.host.tolist() == hb.host.tolist()
    for col in ("ready_s", "workload_done_s", "total_s"):
        assert ha[col].tolist() == pytest.approx(hb[col].tolist(), rel=1e-9, abs=1e-9, nan_ok=True), col
    assert ha.failed.tolist() == hb.failed.tolist()
    for col in ("bytes_fetched", "requests", "responses_429"):
        assert ha[col].tolist() == hb[col].tolist(), col


@st.composite
def fleets(draw: st.DrawFn) -> tuple[str, FleetSpec, float | None]:
    nics = draw(st.lists(st.sampled_from([20e6, 50e6, 125e6, 400e6]), min_size=1, max_size=3))
    pools = tuple(HostPool(draw(st.integers(1, 6)), nic=nic, held=draw(st.sampled_from([(), (0,)]))) for nic in nics)
    kind = draw(st.sampled_from(["all", "poisson", "waves"]))
    arrivals = Arrivals(kind, rate=draw(st.sampled_from([5.0, 50.0])), size=draw(st.integers(1, 4)), interval=0.05)
    limit = draw(st.sampled_from([None, None, 40.0]))
    registry = Registry(egress=draw(st.sampled_from([30e6, 100e6, 300e6, 2e9])), rate_limit=limit,
                        burst=4.0 if limit else 0.0, retry_after=draw(st.sampled_from([None, 0.05])))  # fmt: skip
    spec = FleetSpec(pools=pools, registry=registry, arrivals=arrivals, seed=draw(st.integers(0, 3)),
                     group=draw(st.booleans()), retry=RetryPolicy(max_retries=8, min_wait=0.01))  # fmt: skip
    cap = draw(st.sampled_from([None, 15e6, 60e6]))
    return draw(st.sampled_from(["lazy", "parallel", "sequential"])), spec, cap


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_per_group_clocks_give_the_dense_water_fillings_result(case) -> None:
    mode, spec, cap = case
    params = SimParams()
    params = replace(params, network=replace(params.network, conn_cap=cap))
    fast = simulate_fleet(IMAGE, mode, spec, workload=TRACE, params=params)
    dense = simulate_fleet(IMAGE, mode, spec, workload=TRACE, params=params, flows="dense")
    _same(fast, dense)
    assert fast.checks["max_egress_load"] == pytest.approx(dense.checks["max_egress_load"], rel=1e-9)
    assert fast.checks["max_egress_load"] <= 1 + 1e-9


def test_a_rate_update_touches_the_groups_that_changed_not_every_flow_in_flight() -> None:
    """80 hosts arriving one by one (one group each) behind a narrow egress keep hundreds of flows in flight;
    a rate update then sets a few groups' rates (those a flow started or ended in, and those that crossed the
    egress's level), where the dense table solves every flow in flight."""
    spec = FleetSpec(pools=(HostPool(80, nic=125e6),), registry=Registry(egress=100e6),
                     arrivals=Arrivals("poisson", rate=40.0))  # fmt: skip
    fast = simulate_fleet(IMAGE, "lazy", spec, workload=TRACE)
    dense = simulate_fleet(IMAGE, "lazy", spec, workload=TRACE, flows="dense")
    _same(fast, dense)
    assert fast.checks["max_flows"] >= 40
    per_update = fast.checks["rate_work"] / fast.checks["recomputes"]
    assert per_update < 3
    assert dense.checks["rate_work"] / dense.checks["recomputes"] > 5 * per_update


def test_unknown_flow_engines_are_refused() -> None:
    from soci_lab.errors import SimulationError

    with pytest.raises(SimulationError, match="auto or dense"):
        simulate_fleet(IMAGE, "lazy", FleetSpec(), flows="fast")
