"""An apply's fixed cost per layer (``HostParams.apply_per_layer_s``): the simulator charges it once per layer
unpacked, and the fit separates it from the per-entry and per-byte costs where enough distinct layers allow
(issue 17: the calibration suite's 3-10 MB layers put that cost on the bytes, 2.2 ns/B against python-pandas'
0.9, and held-out eager pulls of big layers came out slow). Too few distinct layers (the three of
``test_unpack_fit.py``'s real python-pandas pulls) fit exactly whatever the intercept: there the slopes are
fitted without it and it is 0, with a warning — never a three-term fit's slopes with its intercept dropped."""

from __future__ import annotations

import pytest

from soci_lab.sim import HostParams, NetworkParams, SimParams, SyntheticSpec, generate, simulate
from soci_lab.sim.calibrate import fit

MIB = 1024 * 1024
FAST = NetworkParams(bandwidth=10e9, rtt=0.0, request_overhead=0.0)
HOST = HostParams(apply_per_layer_s=0.03, apply_per_file_s=200e-6, apply_per_byte_s=1e-9,
                  worker_apply_per_layer_s=0.05, worker_apply_per_file_s=250e-6, worker_apply_per_byte_s=1.5e-9,
                  layer_decompress_rate={"gzip": 5e9}, disk_write_rate=1e12)  # fmt: skip


def _image(layers: int, seed: int = 11):
    return generate(SyntheticSpec(seed=seed, compressed_size=40 * MIB, layers=layers, min_layer_size=64 * MIB))


def _apply_durations(events) -> list[float]:
    ap = events[events.kind == "apply"]
    return list(ap.t_end - ap.t_start)


def test_each_layer_pays_the_fixed_cost_once():
    img = _image(6)
    with_fixed = simulate(img, "sequential", params=SimParams(network=FAST, host=HOST)).events
    without = HOST.__class__(**{**HOST.__dict__, "apply_per_layer_s": 0.0, "worker_apply_per_layer_s": 0.0})
    plain = simulate(img, "sequential", params=SimParams(network=FAST, host=without)).events
    diffs = [a - b for a, b in zip(_apply_durations(with_fixed), _apply_durations(plain), strict=True)]
    assert diffs == pytest.approx([0.03] * 6, rel=1e-6)
    par = simulate(img, "parallel", params=SimParams(network=FAST, host=HOST)).events
    par0 = simulate(img, "parallel", params=SimParams(network=FAST, host=without)).events
    assert sum(_apply_durations(par)) - sum(_apply_durations(par0)) == pytest.approx(6 * 0.05, rel=1e-6)


def test_fit_separates_the_fixed_cost_from_the_slopes():
    params = SimParams(network=FAST, host=HOST)
    runs = [simulate(_image(6, seed), mode, params=params).events for seed in (11, 12) for mode in
            ("sequential", "parallel")]  # fmt: skip
    cal = fit(runs)
    assert cal.host.apply_per_layer_s == pytest.approx(0.03, rel=1e-3)
    assert cal.apply_per_file_s == pytest.approx(200e-6, rel=1e-3)
    assert cal.apply_per_byte_s == pytest.approx(1e-9, rel=1e-3)
    assert cal.host.worker_apply_per_layer_s == pytest.approx(0.05, rel=1e-3)
    assert cal.worker_apply_per_byte_s == pytest.approx(1.5e-9, rel=1e-3)
    assert "apply_per_layer_s" in cal.uncertainty and "apply_per_layer_s" not in cal.warnings
    host = cal.params(SimParams(network=FAST)).host
    assert host.apply_s(100, 10 * MIB) == pytest.approx(HOST.apply_s(100, 10 * MIB), rel=1e-3)
    assert host.apply_s(100, 10 * MIB, worker=True) == pytest.approx(HOST.apply_s(100, 10 * MIB, worker=True), rel=1e-3)


def test_too_few_distinct_layers_fit_the_slopes_alone_and_say_so():
    """Three layers: no fixed cost is fitted (a warning says why) and the slopes are a two-term fit's, so the
    three layers' apply times are still matched as well as two terms can (not under-predicted by a dropped
    intercept)."""
    img = _image(3)
    seq = simulate(img, "sequential", params=SimParams(network=FAST, host=HOST)).events
    cal = fit([seq])
    assert cal.host.apply_per_layer_s == 0.0
    assert "fewer than" in cal.warnings["apply_per_layer_s"] and "not fitted" in cal.warnings["apply_per_layer_s"]
    host = cal.params(SimParams(network=FAST, host=HostParams(apply_per_layer_s=0.5))).host
    assert host.apply_per_layer_s == 0.0  # never the base's fixed cost under slopes fitted without one
    again = simulate(img, "sequential", params=SimParams(network=FAST, host=host)).events
    # a three-term fit with its intercept dropped would be 3 × 30 ms short; the two-term fit is within half that
    assert abs(sum(_apply_durations(again)) - sum(_apply_durations(seq))) < 0.045
