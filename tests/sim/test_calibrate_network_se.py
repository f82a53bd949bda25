"""The network's remaining parameters know what they do not know (issue 17, point 2, remainder): a bandwidth
found from transfers in flight or sustained ones, a shaper's token bucket and a per-connection cap each carry
a standard error (a jackknife over runs, the tie range of the bucket's fit, the least squares' rate), and a
value outside its physical bounds is left unfitted with a warning — never a silent zero or an absurd rate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.sim import NetworkParams, SimParams, SyntheticSpec, fit, generate, simulate, synthetic_trace
from soci_lab.sim.calibrate import BOUNDS, NETWORK_KEYS, Calibration

MIB = 1 << 20


def _runs(net: NetworkParams, *, seeds: tuple[int, ...] = (1, 2), size: int = 24 * MIB,
          modes: tuple[str, ...] = ("lazy", "parallel", "sequential")) -> list:  # fmt: skip
    out = []
    for seed in seeds:
        image = generate(SyntheticSpec(seed=seed, compressed_size=size, layers=3, min_layer_size=2 * MIB))
        for mode in modes:
            work = synthetic_trace(image, 0.2, seed=seed) if mode == "lazy" else None
            out.append(simulate(image, mode, workload=work, params=SimParams(network=net)).events)
    return out


def _sane_network(cal: Calibration) -> None:
    """Every network parameter: unfitted (None; with a warning if a value was found and refused), or inside
    its bounds with a standard error (NaN only where it is noted as unknown)."""
    for name in NETWORK_KEYS:
        value = getattr(cal.network, name)
        if value is None:
            continue
        if name in BOUNDS:
            lo, hi = BOUNDS[name]
            assert lo <= value <= hi, (name, value)
        assert name in cal.uncertainty, (name, cal.uncertainty)
        se = cal.uncertainty[name]
        if se is None or se != se:
            assert name in cal.notes.get("uncertainty_unknown", []), name
        else:
            assert se >= 0 and (value == 0 or se < abs(value)), (name, value, se)
    for name, why in cal.warnings.items():
        if name in NETWORK_KEYS:
            assert getattr(cal.network, name) is None and "not fitted" in why


def test_a_shaped_link_with_a_bucket_gives_the_bucket_and_the_sustained_rate_their_errors() -> None:
    """One request path (every GET through httpx): the spans' sizes straddle the bucket, so it is told."""
    net = NetworkParams(bandwidth=12.5e6, rtt=0.02, request_overhead=0.002, burst=250_000, fast_min_bytes=1 << 40)
    cal = fit(_runs(net))
    assert cal.network.burst is not None and cal.network.burst == pytest.approx(250_000, rel=0.2)
    assert cal.network.bandwidth == pytest.approx(12.5e6, rel=0.05)
    for name in ("burst", "bandwidth"):
        se = cal.uncertainty[name]  # a jackknife of noiseless simulated runs may well be 0
        assert math.isfinite(se) and 0 <= se < 0.5 * getattr(cal.network, name), (name, se)
    # the truth within a few of its errors (the bucket's error is its tie range: the data cannot say more)
    assert abs(cal.network.burst - 250_000) <= 4 * cal.uncertainty["burst"] + 0.05 * 250_000
    _sane_network(cal)


def test_a_bucket_two_paths_cannot_tell_apart_is_refused_not_guessed() -> None:
    """Two paths (httpx's manifests, the lean path's spans): the lean path's latency absorbs the bucket (the
    fit found 1.5 KB for 250 KB); it is then outside the bounds, unfitted and said so — not a silent guess."""
    net = NetworkParams(bandwidth=12.5e6, rtt=0.02, request_overhead=0.002, burst=250_000)
    cal = fit(_runs(net))
    _sane_network(cal)
    if cal.network.burst is None:
        assert "burst" in cal.warnings or "burst_tied" not in cal.notes
    else:
        assert cal.network.burst == pytest.approx(250_000, rel=0.2) and "burst" in cal.uncertainty


def test_a_per_connection_cap_carries_the_isolated_requests_error() -> None:
    net = NetworkParams(bandwidth=400e6, rtt=0.001, request_overhead=0.001, conn_cap=120e6)
    cal = fit(_runs(net, size=48 * MIB))
    assert cal.network.conn_cap == pytest.approx(120e6, rel=0.1)
    assert math.isfinite(cal.uncertainty["conn_cap"]) and cal.uncertainty["conn_cap"] < 0.5 * cal.network.conn_cap
    _sane_network(cal)


def test_one_run_leaves_the_rate_in_flight_without_a_known_error_and_says_so() -> None:
    net = NetworkParams(bandwidth=12.5e6, rtt=0.02, request_overhead=0.002, burst=250_000)
    cal = fit(_runs(net, seeds=(3,), modes=("parallel",)))
    if cal.network.bandwidth is not None and "bandwidth" in cal.uncertainty:
        se = cal.uncertainty["bandwidth"]
        assert math.isfinite(se) or "bandwidth" in cal.notes["uncertainty_unknown"]
    _sane_network(cal)


def test_an_absurd_bucket_is_refused_with_a_warning() -> None:
    from soci_lab.sim.calibrate import _vet

    cal = Calibration()
    cal.network.burst = 3.0  # three bytes: no shaper has such a bucket
    cal.uncertainty["burst"] = 0.1
    _vet(cal)
    assert cal.network.burst is None and "outside" in cal.warnings["burst"]
    assert cal.params().network.burst == NetworkParams().burst  # the documented fallback


@settings(max_examples=12, deadline=None)
@given(
    bandwidth=st.sampled_from([6.25e6, 12.5e6, 50e6, 125e6, 1.25e9]),
    rtt=st.floats(0.0, 0.05),
    overhead=st.floats(0.0002, 0.005),
    burst_ms=st.sampled_from([0.0, 5.0, 20.0]),
    cap=st.sampled_from([None, 0.3, 0.6]),
    seeds=st.sampled_from([(1,), (1, 2)]),
    lazy_only=st.booleans(),
)
def test_any_network_fit_is_sane(bandwidth, rtt, overhead, burst_ms, cap, seeds, lazy_only) -> None:
    """Whatever the link — fast or slow, with or without a bucket or a per-connection cap, one run or several,
    lazy runs only (no whole blobs) — each network parameter is unfitted, or in its bounds with an error."""
    net = NetworkParams(bandwidth=bandwidth, rtt=rtt, request_overhead=overhead, burst=bandwidth * burst_ms / 1e3,
                        conn_cap=None if cap is None else bandwidth * cap)  # fmt: skip
    modes = ("lazy",) if lazy_only else ("lazy", "parallel")
    cal = fit(_runs(net, seeds=seeds, size=12 * MIB, modes=modes))
    _sane_network(cal)


def _lazy_mount_run(run: str, entries: int, gap: float) -> list[dict]:
    """One lazy pull's zTOC fetch, then ``gap`` later the snapshotter's mount of its one FUSE server."""
    base = dict(run_id=run, source="real", strategy="lazy", span=None, ok=True, error=None, bytes=0, path=None)
    return [
        {**base, "kind": "ztoc_fetch", "t_start": 0.0, "t_end": 0.01, "layer": "sha256:a", "attrs": {}},
        {**base, "kind": "mount", "t_start": 0.01 + gap, "t_end": 0.2, "layer": "sha256:a",
         "attrs": {"how": "lazy"}},
        {**base, "kind": "mount", "t_start": 0.02 + gap, "t_end": 0.15, "layer": "sha256:a",
         "attrs": {"entries": entries, "cpu_s": 0.01 + 2e-6 * entries}},
    ]  # fmt: skip


def test_the_ztoc_pass_is_a_fixed_cost_plus_a_cost_per_entry() -> None:
    """The snapshotter's pass before its first mount: 4 ms fixed + 1 µs per zTOC entry. A median of gap /
    entries over small images (16 entries: 0.25 ms 'per entry') predicted 1.5 s for a 6,000-entry image."""
    import pandas as pd

    rows = []
    for i, n in enumerate([16, 16, 400, 2000, 2000, 16]):
        rows += _lazy_mount_run(f"r{i}", n, 0.004 + 1e-6 * n)
    cal = fit(pd.DataFrame(rows))
    assert cal.ztoc_parse_per_entry == pytest.approx(1e-6, rel=0.05)
    assert cal.notes["ztoc_parse_fixed_s"] == pytest.approx(0.004, rel=0.05)
    assert cal.uncertainty["ztoc_parse_per_entry"] < 1e-6
