"""The fleet engine: one host alone is the single-host simulator; grouping is exact; 429s are retried as the
real client's policy says; more egress never slows the median; warm nodes fetch less."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from soci_lab.retrypolicy import RetryPolicy
from soci_lab.sim import LazyParams, SimParams, SyntheticSpec, generate, simulate, synthetic_trace
from soci_lab.sim.fleet import P2P, Arrivals, FleetSpec, HostPool, Registry, simulate_fleet

MODES = ("sequential", "parallel", "lazy")


@pytest.fixture(scope="module")
def image():
    return generate(SyntheticSpec(seed=3, compressed_size=24 << 20, layers=3, min_layer_size=1 << 20))


@pytest.fixture(scope="module")
def trace(image):
    return synthetic_trace(image, 0.05, seed=1)


@pytest.mark.parametrize("mode", MODES)
def test_one_host_alone_is_the_single_host_simulation(image, trace, mode) -> None:
    """With egress above its NIC, a fleet of one host reproduces the single-host run: times, bytes, requests."""
    params = SimParams()
    single = simulate(image, mode, workload=trace, params=params).summary
    run = simulate_fleet(image, mode, FleetSpec(registry=Registry(egress=10e9)), workload=trace, params=params)
    g = run.groups.iloc[0]
    for key in ("ready_s", "workload_done_s", "total_s"):
        assert g[key] == pytest.approx(single[key], rel=1e-9, abs=1e-9)
    assert (g.bytes_fetched, g.requests) == (single["bytes_fetched"], single["requests"])


def _compare(a, b) -> None:
    ha, hb = a.hosts(), b.hosts()
    cols = ["host", "arrival_s", "ready_s", "workload_done_s", "total_s", "bytes_fetched", "requests", "responses_429"]
    assert len(ha) == len(hb)
    for col in cols:
        assert ha[col].tolist() == pytest.approx(hb[col].tolist(), rel=1e-9, abs=1e-9), col


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arrivals", [Arrivals("all"), Arrivals("waves", size=3, interval=0.05)])
def test_grouped_hosts_give_exactly_the_ungrouped_result(image, trace, mode, arrivals) -> None:
    pools = (HostPool(5, nic=50e6), HostPool(3, nic=125e6, held=(0,)))
    spec = FleetSpec(pools=pools, registry=Registry(egress=200e6), arrivals=arrivals)
    grouped = simulate_fleet(image, mode, spec, workload=trace)
    flat = simulate_fleet(image, mode, FleetSpec(**{**spec.__dict__, "group": False}), workload=trace)
    assert len(grouped.groups) < len(flat.groups) == 8
    _compare(grouped, flat)


def test_a_full_token_bucket_answers_429_and_the_client_waits_retry_after(image) -> None:
    """Four hosts at once, a bucket of one request refilled ten times a second: the first request of three
    hosts is answered 429; with Retry-After: 2 each waits 2 s plus the policy's jitter (at most 1/8 more) and
    tries again; every host still fetches exactly its bytes, and counts its 429s among its requests."""
    reg = Registry(egress=10e9, rate_limit=10.0, burst=1.0, retry_after=2.0)
    run = simulate_fleet(image, "sequential", FleetSpec(pools=(HostPool(4),), registry=reg, sample_hosts=(0, 1, 2, 3)))
    hosts = run.hosts()
    alone = simulate_fleet(image, "sequential", FleetSpec(registry=Registry(egress=10e9))).groups.iloc[0]
    assert (hosts.bytes_fetched == alone.bytes_fetched).all()
    assert hosts.failed.isna().all() and hosts.responses_429.sum() >= 3
    assert (hosts.requests == alone.requests + hosts.responses_429).all()
    ev = run.events
    first_429 = ev[(ev.kind == "http_429") & (ev.request == 0) & (ev.attempt == 0)]
    assert sorted(first_429.host) == [1, 2, 3]  # one token: host 0 goes first
    for h in (1, 2, 3):
        rows = ev[(ev.host == h) & (ev.request == 0)].sort_values("t_start")
        t_429, t_retry = rows.iloc[0].t_start, rows.iloc[1].t_start
        wait = t_retry - t_429
        latency = run.programs[0].requests[0].latency
        assert 2.0 + latency <= wait + 1e-9 and wait <= latency + 2.0 * 9 / 8 + 1e-9


def test_a_host_gives_up_after_the_policys_retries(image) -> None:
    """A bucket of one token that (nearly) never refills: host 1's first request and host 0's second are
    answered 429 three times (max_retries=2), then each host gives up — counted as failed, not hung."""
    reg = Registry(egress=10e9, rate_limit=0.01, burst=1.0)
    spec = FleetSpec(pools=(HostPool(2),), registry=reg, retry=RetryPolicy(max_retries=2, min_wait=0.01))
    run = simulate_fleet(image, "parallel", spec)
    s = run.summary()
    assert s["failed_hosts"] == 2 and s["ready_p50_s"] is None
    hosts = run.hosts()
    assert hosts.responses_429.tolist() == [3, 3]
    assert "request 1 (config): gave up after 3 attempts" in hosts.failed[0]
    assert "request 0 (" in hosts.failed[1]


@pytest.mark.parametrize("mode", MODES)
def test_more_egress_never_slows_the_median(image, trace, mode) -> None:
    medians = []
    for egress in (20e6, 50e6, 125e6, 400e6, 2e9):
        spec = FleetSpec(pools=(HostPool(12, nic=125e6),), registry=Registry(egress=egress),
                         arrivals=Arrivals("waves", size=4, interval=0.2))  # fmt: skip
        medians.append(simulate_fleet(image, mode, spec, workload=trace).summary()["workload_done_p50_s"])
    assert medians == sorted(medians, reverse=True)
    assert medians[0] > medians[-1]


def test_egress_limits_the_fleet_and_warm_nodes_fetch_less(image) -> None:
    """100 hosts behind an egress of ten NICs' worth: the last host cannot be ready before all their bytes
    crossed the egress, and the median host is several times slower than alone; hosts already holding
    layer 0 fetch that layer's bytes less."""
    nic = 125e6
    alone = simulate_fleet(image, "parallel", FleetSpec(pools=(HostPool(1, nic=nic),), registry=Registry(egress=nic)))
    spec = FleetSpec(pools=(HostPool(100, nic=nic),), registry=Registry(egress=10 * nic))
    crowd_run = simulate_fleet(image, "parallel", spec)
    assert 1 - 1e-9 <= crowd_run.checks["max_egress_load"] <= 1 + 1e-9  # the egress is the bottleneck, never over
    crowd = crowd_run.summary()
    assert crowd["ready_p99_s"] >= crowd["bytes_fetched"] / (10 * nic)
    assert crowd["ready_p50_s"] > 3 * alone.summary()["ready_p50_s"]
    warm = simulate_fleet(image, "parallel", FleetSpec(pools=(HostPool(1, nic=nic, held=(0,)),)))
    assert alone.groups.bytes_fetched[0] - warm.groups.bytes_fetched[0] == image.layers[0].compressed_size


def test_poisson_arrivals_spread_the_hosts(image) -> None:
    spec = FleetSpec(pools=(HostPool(20),), arrivals=Arrivals("poisson", rate=10.0), registry=Registry(egress=1e9))
    run = simulate_fleet(image, "lazy", spec)
    assert len(run.groups) == 20 and run.groups.arrival_s.nunique() == 20


def test_the_fleet_imports_no_real_data_path_room() -> None:
    code = (
        "import sys, soci_lab.sim.fleet, soci_lab.retrypolicy\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "[['soci_lab', r] for r in ('remote', 'lazy', 'unpack', 'snapshot')])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


@pytest.mark.parametrize("mode", MODES)
def test_p2p_takes_layer_data_from_the_registry_once_per_seed(image, trace, mode) -> None:
    """With P2P and two seeds, the registry sends each layer item twice and the small documents to every host;
    every host still receives all its bytes, and an egress-limited fleet gets ready sooner."""
    pools = (HostPool(40, nic=125e6),)
    plain = simulate_fleet(image, mode, FleetSpec(pools=pools, registry=Registry(egress=250e6)), workload=trace)
    spec = FleetSpec(pools=pools, registry=Registry(egress=250e6), p2p=P2P(seeds=2))
    p2p = simulate_fleet(image, mode, spec, workload=trace)
    prog = p2p.programs[0]
    items = prog.items()
    layer_bytes = sum(r.nbytes for r, it in zip(prog.requests, items, strict=True) if it is not None)
    docs = prog.bytes - layer_bytes
    s, s0 = p2p.summary(), plain.summary()
    assert s["bytes_fetched"] == s0["bytes_fetched"] == 40 * prog.bytes
    assert s["registry_bytes"] == 2 * layer_bytes + 40 * docs
    assert p2p.checks["max_egress_load"] <= 1 + 1e-9 and plain.checks["max_egress_load"] <= 1 + 1e-9
    assert s["ready_p50_s"] < s0["ready_p50_s"]


@pytest.mark.parametrize("mode", MODES)
def test_grouping_is_exact_with_p2p(image, trace, mode) -> None:
    pools = (HostPool(6, nic=100e6), HostPool(3, nic=100e6, held=(0,)))
    spec = FleetSpec(pools=pools, registry=Registry(egress=150e6), p2p=P2P(seeds=2),
                     arrivals=Arrivals("waves", size=4, interval=0.1))  # fmt: skip
    grouped = simulate_fleet(image, mode, spec, workload=trace)
    flat = simulate_fleet(image, mode, FleetSpec(**{**spec.__dict__, "group": False}), workload=trace)
    assert len(grouped.groups) < len(flat.groups)
    _compare(grouped, flat)


@pytest.mark.parametrize("mode", MODES)
def test_registry_service_time_delays_every_request(image, mode) -> None:
    """A constant service time delays a lone host by at least one service time per request on its critical
    path (the manifest and config come one after the other); an exponential one of the same mean also slows it."""
    def ready(**kw) -> float:
        spec = FleetSpec(registry=Registry(egress=10e9, **kw))
        return simulate_fleet(image, mode, spec).summary()["ready_p50_s"]

    base = ready()
    assert ready(service_s=0.01) >= base + 2 * 0.01 - 1e-9
    assert ready(service_s=0.01, service="exp") > base


def test_an_arrival_quantum_groups_poisson_hosts_and_rounds_their_arrivals_down(image) -> None:
    exact = FleetSpec(pools=(HostPool(30),), arrivals=Arrivals("poisson", rate=20.0), registry=Registry(egress=1e9))
    coarse = FleetSpec(**{**exact.__dict__, "arrivals": Arrivals("poisson", rate=20.0, quantum=0.5)})
    a, b = simulate_fleet(image, "lazy", exact).hosts(), simulate_fleet(image, "lazy", coarse).hosts()
    assert (b.arrival_s <= a.arrival_s).all() and (a.arrival_s - b.arrival_s < 0.5).all()
    assert (b.arrival_s * 2).round(9).apply(float.is_integer).all()
    assert simulate_fleet(image, "lazy", coarse).groups.shape[0] < 30


def test_a_rate_limit_on_manifests_only_answers_429_to_manifests(image) -> None:
    """Docker Hub counts manifest GETs only: a bucket of two tokens that (nearly) never refills lets two of four
    hosts have the manifest; the other two are answered 429 on it until they give up, and no other request of
    any host is ever refused (a limit on every request would refuse the first two hosts' configs too)."""
    reg = Registry(egress=10e9, rate_limit=1e-4, burst=2.0, limited=("manifest",))
    spec = FleetSpec(pools=(HostPool(4),), registry=reg, retry=RetryPolicy(max_retries=2, min_wait=0.01),
                     sample_hosts=(0, 1, 2, 3))  # fmt: skip
    run = simulate_fleet(image, "sequential", spec)
    hosts = run.hosts()
    assert hosts.failed.notna().tolist() == [False, False, True, True]
    assert hosts.responses_429.tolist() == [0, 0, 3, 3]
    refused = run.events[run.events.kind == "http_429"]
    assert set(refused.what) == {"manifest"} and set(refused.host) == {2, 3}
    alone = simulate_fleet(image, "sequential", FleetSpec(registry=Registry(egress=10e9))).groups.iloc[0]
    assert (hosts.bytes_fetched[:2] == alone.bytes_fetched).all()


def test_ready_waits_for_every_request_that_came_before_it_alone() -> None:
    """A mount is ready when every layer is prepared: with layers mounted concurrently (small layers fetched
    whole beside the indexed layers' header reads), no host of a fleet whose egress stretches the downloads is
    ready before the last of the requests that ended before ``ready`` in the single-host run has ended —
    whichever ends last under sharing (with a single predecessor, ``ready`` passed slowed downloads by 1.3 s)."""
    image = generate(SyntheticSpec(seed=5, compressed_size=24 << 20, layers=6, min_layer_size=4 << 20))
    trace = synthetic_trace(image, 0.05, seed=1)
    params = SimParams(lazy=LazyParams(concurrent_mounts=True))
    spec = FleetSpec(pools=(HostPool(6, nic=1.25e9),), registry=Registry(egress=20e6), sample_hosts=tuple(range(6)))
    run = simulate_fleet(image, "lazy", spec, workload=trace, params=params)
    alone = simulate(image, "lazy", workload=trace,
                     params=replace(params, network=replace(params.network, bandwidth=1.25e9, burst=0.0)))  # fmt: skip
    reqs = sorted((e for e in alone.recorder.events if e.kind == "http_request"), key=lambda e: (e.t_start, e.t_end))
    before = {k for k, e in enumerate(reqs) if e.t_end <= alone.summary["ready_s"] + 1e-12}
    assert {reqs[k].attrs.get("what") for k in before} >= {"blob", "header"}
    hosts = run.hosts().set_index("host")
    ev = run.events[run.events.kind == "http_request"]
    for h, rows in ev.groupby("host"):
        last = rows[rows.request.isin(before)].t_end.max()
        assert hosts.ready_s[h] >= last - 1e-9, (h, hosts.ready_s[h], last)
