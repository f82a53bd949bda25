"""The background fetcher, simulated against real (issue 7): a lazy pull that idles long enough for the
fetcher to run, on a real FUSE mount and in the simulator calibrated from that same pull's events.

Real: one serving process per layer, each silent ``silence_period`` after its own mount, then one span per
``layers × fetch_period`` (``soci_lab.lazy.background.per_process_period``). Simulated: one fetcher, silent
until ``silence_period`` after the latest mount (upstream's ``Pause`` on every mount), then one span per
``fetch_period`` round robin over the layers. Both skip spans read on demand. Over the idle time they must
start the same number of background fetches per layer, give or take the phase of the per-process timers,
and fetch the same spans from the start of each layer. (Found by this test: the simulated fetcher used to
start ``silence_period`` after the *first* mount — 37 fetches against 32 real, 5 too many. And on a loaded
host: the real servers started after a 1.8 s cold start of the pre-warmed process, then 15 ms apart; one
median of both spread the simulated servers 0.9 s apart and the simulated fetcher fetched layers not yet
mounted, 38 against 33. The first server's start is now fitted apart (``mount_first_s``) and a layer joins
the simulated fetcher on its mount, as upstream's resolver does: ``test_bg_mounts.py``.)

Needs root, /dev/fuse and overlayfs (CI has them).
"""

from __future__ import annotations

import random

import pytest

from soci_lab.events import detail
from soci_lab.sim import Access, LazyParams, SimParams, fit, simulate, write_trace

SILENCE_MS = 300
PERIOD_MS = 40
IDLE_S = 1.5


def _background(frame) -> dict[str, list[int]]:
    """Per layer, the spans fetched in the background by the end of the workload, in fetch order."""
    done = float(frame[frame.kind == "workload"].t_end.max())
    sf = frame[(frame.kind == "span_fetch") & frame.ok & (frame.t_end <= done)]
    bg = (detail(sf, "reason") == "background").fillna(False) | detail(sf, "background").fillna(False).astype(bool)
    out: dict[str, list[int]] = {}
    for layer, span in zip(sf[bg].sort_values("t_start").layer, sf[bg].sort_values("t_start").span, strict=True):
        out.setdefault(str(layer), []).append(int(span))
    return out


def test_background_fetcher_agrees_with_a_real_pull(tmp_path):
    lab = pytest.importorskip("soci_lab.lab")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")
    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.cli.sim import image_from_layout
    from soci_lab.config import Config
    from soci_lab.images.build import build_image
    from soci_lab.netlab import EmbeddedRegistry

    rnd = random.Random(11)
    dirs = []
    for li in range(2):
        d = tmp_path / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        for i in range(48):
            (d / f"f{i:03d}").write_bytes(rnd.randbytes(400_000))
        dirs.append(tmp_path / f"l{li}")
    ref = f"oci:{tmp_path / 'layout'}:t"
    build_image(dirs, ref)
    create_soci_index(ref, min_layer_size=1 << 20, span_size=1 << 20)
    image = image_from_layout(f"{tmp_path / 'layout'}:t")
    assert all(la.indexed for la in image.layers) and min(len(la.spans) for la in image.layers) >= 18
    # one read at the start (a span near the end of layer 0, so the fetcher's walk from span 0 is not
    # shortened by it), then nothing until IDLE_S: the fetcher has the pull to itself
    trace = [Access(0.0, "open", "/d0/f020"), Access(0.0, "read", "/d0/f020", 0, 4096), Access(IDLE_S, "stat", "/d1")]
    write_trace(trace, tmp_path / "trace.csv")
    cfg = Config()
    cfg.background_fetch.silence_period_msec = SILENCE_MS
    cfg.background_fetch.fetch_period_msec = PERIOD_MS
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        host = reg.url.split("://", 1)[1]
        real = lab.pull(f"{host}/img:t", "lazy", trace=str(tmp_path / "trace.csv"), config=cfg, speed=1.0)
    params = fit(real.events).params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
    sim = simulate(image, "lazy", workload=trace, config=cfg, params=params)
    got_real, got_sim = _background(real.events), _background(sim.events)
    # ~ (IDLE_S - mount - silence) / period fetches in all, fewer than the spans: a wrong period or
    # silence shows
    total_real, total_sim = sum(map(len, got_real.values())), sum(map(len, got_sim.values()))
    assert total_real >= 10, got_real
    assert abs(total_sim - total_real) <= max(3, 0.15 * total_real), (got_real, got_sim)
    for layer in {**got_real, **got_sim}:
        r, s = got_real.get(layer, []), got_sim.get(layer, [])
        assert abs(len(r) - len(s)) <= 2, (layer, r, s)
        n = min(len(r), len(s))
        assert r[:n] == s[:n], (layer, r, s)  # the same spans, from the start of the layer on
