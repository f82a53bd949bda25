"""Fits that know what they do not know (issue 17, point 2): every fitted parameter carries an uncertainty,
and a parameter the data cannot identify — too few samples, outside its physical bounds, not one standard
error from 0 — is left unfitted with a warning, so the simulation keeps the base parameters' value (the
documented fallback) instead of a silent zero or an absurd rate. Before, ``compare --sim`` on a small image
set the FUSE read rate to 1.38 MB/s from three reads and the per-request cost to 0, and said nothing.

The reads here are the simulator's kind (``attrs.fuse_requests``, ``attrs.first_read``): each takes
``requests × fuse_op_s + bytes / fuse_read_rate + first read × header_verify_s`` times a noise factor.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.sim import HostParams, fit
from soci_lab.sim.calibrate import BOUNDS, MIN_SAMPLES, Calibration

NAMES = ("fuse_op_s", "fuse_read_rate", "header_verify_s")


def _reads(op, rate, header, requests, nbytes, first, noise) -> pd.DataFrame:
    rows, t = [], 0.0
    for n, b, f, e in zip(requests, nbytes, first, noise, strict=True):
        d = (n * op + b / rate + (header if f else 0.0)) * e
        rows.append(dict(t_start=t, t_end=t + d, bytes=int(b), path=f"/f{len(rows)}",
                         attrs={"fuse_requests": int(n), "first_read": bool(f), "missed": False}))  # fmt: skip
        t += d + 1e-3
    return pd.DataFrame(rows).assign(run_id="r", source="sim", strategy="lazy", kind="file_read", layer="sha256:a",
                                     span=None, ok=True, error=None)  # fmt: skip


def _sane(cal: Calibration) -> None:
    """Each FUSE cost is fitted (within its bounds, one standard error from 0) or unfitted with a warning,
    and the parameters a simulation gets are never 0 nor outside the bounds."""
    for name in NAMES:
        value = getattr(cal, name)
        if value is None:
            assert name in cal.warnings and "not fitted" in cal.warnings[name]
        else:
            lo, hi = BOUNDS[name]
            assert lo <= value <= hi and name not in cal.warnings
            se = cal.uncertainty[name]
            assert se < value or (value == 0 and se <= 1e-9)
    host = cal.params().host
    default = HostParams()
    assert host.fuse_op_s > 0
    rate = host.fuse_read_rate or host.local_read_rate
    assert BOUNDS["fuse_read_rate"][0] <= rate <= BOUNDS["fuse_read_rate"][1]
    if cal.fuse_op_s is None:
        assert host.fuse_op_s == default.fuse_op_s  # the documented fallback: the base parameters'


def test_three_reads_say_nothing_and_the_fit_says_so(tmp_path):
    """The issue's case: three cache-hit reads gave 1.38 MB/s and a zero per-request cost."""
    rng = np.random.default_rng(1)
    ev = _reads(40e-6, 1.5e9, 100e-6, [1, 2, 1], [4096, 200_000, 60_000], [True, False, False],
                1 + 0.3 * rng.uniform(-1, 1, 3))  # fmt: skip
    cal = fit(ev)
    assert cal.samples["fuse_read"] == 3 < MIN_SAMPLES["fuse_read"]
    assert all(getattr(cal, n) is None and "fewer than" in cal.warnings[n] for n in NAMES)
    _sane(cal)
    back = Calibration.load(cal.save(tmp_path / "cal.json"))  # the warnings are kept with the fit
    assert back.warnings == cal.warnings and back.fuse_read_rate is None


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), same=st.booleans(), no_first=st.booleans(), noise=st.floats(0.0, 0.6),
       op=st.floats(1e-6, 1e-3), rate=st.floats(1e6, 5e9), header=st.floats(0.0, 1e-3), seed=st.integers(0, 2**16))
def test_draws_that_cannot_tell_a_parameter_warn_and_fall_back(n, same, no_first, noise, op, rate, header, seed):
    """Any draw — few reads, reads all of one size (bytes and requests in proportion: the per-request and
    per-byte costs are one unknown), no first read (no header check to see), heavy noise — gives for each
    cost a value it can stand behind or a warning and the fallback; never 0 or an absurd rate."""
    rng = np.random.default_rng(seed)
    requests = np.full(n, 2) if same else rng.integers(1, 33, n)
    nbytes = requests * (128 << 10) if same else rng.integers(1, 4 << 20, n)
    first = np.zeros(n, dtype=bool) if no_first else rng.uniform(0, 1, n) < 0.3
    cal = fit(_reads(op, rate, header, requests, nbytes, first, 1 + noise * rng.uniform(-1, 1, n)))
    _sane(cal)
    if n < MIN_SAMPLES["fuse_read"]:
        assert all(getattr(cal, name) is None for name in NAMES)
    if no_first and n >= MIN_SAMPLES["fuse_read"]:
        assert cal.header_verify_s is None and "no first read" in cal.warnings["header_verify_s"]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(40, 200), op=st.floats(20e-6, 500e-6), rate=st.floats(100e6, 2e9),
       header_share=st.floats(0.2, 1.0), sigma=st.floats(0.0, 0.03), seed=st.integers(0, 2**16))  # fmt: skip
def test_well_posed_draws_recover_the_truth_within_the_reported_uncertainty(n, op, rate, header_share, sigma,
                                                                             seed):  # fmt: skip
    """Varied sizes (each read's requests and bytes cost alike), a third of the reads first reads whose
    header check is 20-100 % of a typical read, a few percent of noise: every cost is fitted, no warning,
    and each lies within four of its standard errors of the truth (a rate by its cost per byte)."""
    rng = np.random.default_rng(seed)
    requests = rng.integers(1, 33, n)
    per_request = max(1, int(op * rate))  # bytes whose copy costs one request's
    nbytes = np.maximum(1, (requests * per_request * rng.uniform(0.2, 2.0, n)).astype(int))
    header = header_share * float(np.median(requests * op + nbytes / rate))
    first = rng.uniform(0, 1, n) < 0.3
    first[:3] = True
    cal = fit(_reads(op, rate, header, requests, nbytes, first, np.exp(sigma * rng.standard_normal(n))))
    assert not cal.warnings, cal.warnings
    tol = 1e-12
    assert abs(cal.fuse_op_s - op) <= 4 * cal.uncertainty["fuse_op_s"] + tol
    assert abs(cal.header_verify_s - header) <= 4 * cal.uncertainty["header_verify_s"] + tol
    assert abs(cal.fuse_read_rate - rate) <= 4 * cal.uncertainty["fuse_read_rate"] + rate * 1e-9
    assert cal.params().host.fuse_read_rate == pytest.approx(cal.fuse_read_rate)


def test_every_parameter_fitted_from_a_run_set_carries_its_uncertainty():
    """A lazy, a parallel and a sequential simulated pull of one image: each parameter fitted from them
    (except the bandwidth found from transfers in flight, the shaper's bucket and the per-connection cap,
    which no resampling of one run's requests measures) has a standard error, finite where it came from
    more than one sample, and a zero only where the fit is exact."""
    from soci_lab.sim import SyntheticSpec, generate, simulate, synthetic_trace
    from soci_lab.sim.calibrate import HOST_KEYS

    image = generate(SyntheticSpec(seed=6, compressed_size=30 * (1 << 20), layers=4, min_layer_size=1 << 20))
    trace = synthetic_trace(image, 0.3, seed=6)
    cal = fit([simulate(image, m, workload=trace).events for m in ("lazy", "parallel", "sequential")])
    scalars = [*HOST_KEYS, "first_byte_s", "apply_per_file_s", "apply_per_byte_s", "worker_apply_per_file_s",
               "worker_apply_per_byte_s"]  # fmt: skip
    fitted = [k for k in scalars if getattr(cal, k) is not None]
    assert {"mount_s", "fuse_op_s", "fuse_read_rate", "apply_per_file_s", "start_s"} <= set(fitted)
    missing = [k for k in fitted if k not in cal.uncertainty]
    assert not missing, missing
    for algo in cal.decompress_rate:
        assert f"decompress_rate.{algo}" in cal.uncertainty
    assert not cal.warnings or all("not fitted" in w for w in cal.warnings.values())
    text = json.dumps(cal.to_dict(), allow_nan=False)  # strict JSON: an unknown uncertainty is null
    assert json.loads(text)["uncertainty"].keys() == cal.uncertainty.keys()
