"""The simulated background fetcher and the layer servers' start-up, as the real lazy pull has them: a layer
joins the fetcher's round robin when it is mounted (no server, no fetch), and the first server of a pull
waits for the pre-warmed process (a cold start) where the next ones are forks of it (warm), fitted apart.
(Found by ``test_bgfetch_vs_real`` on a loaded host: real servers forked 15 ms apart after a 1.8 s cold
start, one median of both spread the simulated ones 0.9 s apart, and the simulated fetcher, fetching every
layer from the first mount on, started 5 fetches more than the real ones.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.config import Config
from soci_lab.events import detail
from soci_lab.sim import Access, LazyParams, SimParams, SyntheticSpec, fit, generate, simulate

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def image():
    spec = SyntheticSpec(seed=5, compressed_size=24 * MIB, layers=3, min_layer_size=1 * MIB, span_size=1 * MIB)
    return generate(spec)


def _params(first: float, warm: float, *, concurrent: bool) -> SimParams:
    p = SimParams(lazy=LazyParams(concurrent_mounts=concurrent))
    return replace(p, host=replace(p.host, mount_s=warm, mount_first_s=first))


@settings(max_examples=12, deadline=None)
@given(first=st.floats(0.05, 2.0), warm=st.floats(0.002, 0.3), concurrent=st.booleans())
def test_no_background_fetch_of_a_layer_before_its_mount(image, first, warm, concurrent):
    cfg = Config()
    cfg.background_fetch.silence_period_msec = 10
    cfg.background_fetch.fetch_period_msec = 5
    trace = [Access(3.0, "stat", "/")]
    ev = simulate(image, "lazy", workload=trace, config=cfg, params=_params(first, warm, concurrent=concurrent)).events
    mounted = ev[(ev.kind == "mount") & (detail(ev, "how") == "lazy")]
    at = dict(zip(mounted.layer, mounted.t_end, strict=True))
    bg = ev[(ev.kind == "span_fetch") & detail(ev, "background").fillna(False).astype(bool)]
    assert len(bg) > 0
    for layer, t0 in zip(bg.layer, bg.t_start, strict=True):
        assert t0 >= at[layer], (layer, t0, at[layer])


@settings(max_examples=10, deadline=None)
@given(first=st.floats(0.05, 2.0), warm=st.floats(0.002, 0.3))
def test_the_fit_tells_a_cold_first_server_from_warm_forks(image, first, warm):
    sim = simulate(image, "lazy", workload=[Access(0.0, "stat", "/")], params=_params(first, warm, concurrent=True))
    cal = fit(sim.events)
    assert cal.mount_first_s == pytest.approx(first, rel=1e-6)
    assert cal.mount_s == pytest.approx(warm, rel=1e-6)
    assert cal.params().host.mount_first_s == pytest.approx(first, rel=1e-6)
