"""Start-up cold and warm, and request latency as a distribution (issue 17, point 3).

- A real lazy pull's layer ``mount`` events say how each FUSE server was started (``spawn``: a fork of the
  per-host service that was running, the first fork of one the pull started, the private forker, an
  interpreter); :func:`soci_lab.sim.fit_costs.fit_startup` fits cold and warm start-up from them, and the
  model charges the first server of a pull a cold start only when the service was not running.
- ``NetworkParams.rtt_sigma`` / ``rtt_quantiles`` draw each request's round trip from a distribution, and
  :func:`~soci_lab.sim.fit_costs.fit_latency` recovers it from request events.

Before, the events did not say how a server started, every pull's first server paid ``mount_first_s`` and
the round trip was one constant.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from soci_lab.events import EventRecorder, detail
from soci_lab.sim import HostParams, NetworkParams, SimParams, SyntheticSpec, generate, simulate
from soci_lab.sim.fit_costs import COLD_SPAWNS, WARM_SPAWNS, fit_latency, fit_startup

MIB = 1 << 20


def _image():
    return generate(SyntheticSpec(seed=1, compressed_size=12 * MIB, layers=3, span_size=MIB, min_layer_size=MIB))


def test_a_running_service_makes_the_first_server_a_warm_fork() -> None:
    host = HostParams(mount_s=0.02, mount_first_s=1.5)
    cold = simulate(_image(), "lazy", params=SimParams(host=host)).summary["ready_s"]
    warm = simulate(_image(), "lazy", params=SimParams(host=replace(host, service_running=True))).summary["ready_s"]
    assert cold - warm == pytest.approx(1.5 - 0.02, rel=1e-6)


def _events(spawns_per_run: list[list[str]], spawn_s: dict[str, float]):
    """Events shaped as a real lazy pull's: per layer the snapshot's ``mount`` (how=lazy, spawn) asked at 0,
    and its server's own ``mount`` event starting once it is up (forked one at a time)."""
    frames = []
    for r, spawns in enumerate(spawns_per_run):
        rec = EventRecorder(f"run{r}", source="real", strategy="lazy", clock=lambda: 0.0, origin=0.0)
        t = 0.0
        for li, kind in enumerate(spawns):
            t += spawn_s[kind]
            rec.emit("mount", t, t + 0.05, layer=f"sha256:{li}", cpu_s=0.01, entries=10)
            rec.emit("mount", 0.0, t + 0.06, layer=f"sha256:{li}", how="lazy", spawn=kind)
        frames.append(rec.to_frame())
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_startup_is_fitted_cold_and_warm_from_the_spawn_detail() -> None:
    times = {"service-cold": 1.2, "zygote-cold": 1.0, "service-warm": 0.015, "zygote-warm": 0.02, "exec": 1.1}
    frame = _events([["service-cold", "service-warm", "service-warm"], ["service-warm"] * 3,
                     ["zygote-cold", "zygote-warm"], ["service-warm", "service-warm"]], times)
    fit = fit_startup(frame)
    assert fit["mount_first_s"].value == pytest.approx(1.1) and fit["mount_first_s"].n == 2
    assert 0.015 <= fit["mount_s"].value <= 0.02 and fit["mount_s"].n == 8
    assert fit["service_running"].value == pytest.approx(0.5) and fit["service_running"].n == 4
    assert fit["mount_s"].se == fit["mount_s"].se  # a number, not NaN, from 8 samples
    assert fit_startup(frame[frame.kind != "mount"]) == {}


def test_round_trips_are_drawn_from_the_distribution_and_the_fit_recovers_it() -> None:
    net = NetworkParams(bandwidth=1e9, rtt=0.02, request_overhead=0.0, rtt_sigma=0.5, rtt_seed=7)
    run = simulate(_image(), "lazy", params=SimParams(network=net))
    http = run.events[run.events.kind == "http_request"]
    durations = (http.t_end - http.t_start).to_numpy()
    small = durations[http.bytes.to_numpy() < 64 * 1024]
    assert len(set(np.round(small, 9))) > len(small) // 2  # not one constant
    fit = fit_latency(run.events, bandwidth=1e9)
    assert fit["rtt"].value == pytest.approx(0.02, rel=0.5)
    assert fit["rtt_sigma"].value == pytest.approx(0.5, abs=3 * fit["rtt_sigma"].se + 0.1)
    again = simulate(_image(), "lazy", params=SimParams(network=net)).events
    assert ((again.t_end - again.t_start).to_numpy() == (run.events.t_end - run.events.t_start).to_numpy()).all()
    # the empirical quantiles: every draw lies between the first and the last
    q = fit["rtt_quantiles"]
    qnet = replace(net, rtt_sigma=0.0, rtt_quantiles=q)
    qrun = simulate(_image(), "lazy", params=SimParams(network=qnet)).events
    qhttp = qrun[(qrun.kind == "http_request") & (qrun.bytes <= 2)]  # the blob resolves: latency alone
    qdur = qhttp.t_end - qhttp.t_start
    assert len(qdur) and (qdur >= q[0] - 1e-9).all() and (qdur <= q[-1] + 1e-9).all()


def test_a_bad_distribution_is_refused() -> None:
    from soci_lab.errors import SimulationError

    with pytest.raises(SimulationError, match="rtt_sigma"):
        NetworkParams(rtt_sigma=-1)
    with pytest.raises(SimulationError, match="rtt_quantiles"):
        NetworkParams(rtt_quantiles=(0.2, 0.1))


def test_a_real_lazy_pull_says_how_each_server_started(tmp_path) -> None:
    lab = pytest.importorskip("soci_lab.lab")
    ok, why = lab.can_mount()
    if not ok:
        pytest.skip(f"cannot mount here: {why}")
    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.images.build import build_image
    from soci_lab.netlab import EmbeddedRegistry

    dirs = []
    for li in range(2):
        d = tmp_path / f"src{li}"
        d.mkdir()
        (d / f"f{li}").write_bytes(bytes(range(256)) * 64)
        dirs.append(d)
    build_image(dirs, f"oci:{tmp_path / 'layout'}:t")
    create_soci_index(f"oci:{tmp_path / 'layout'}:t", min_layer_size=0, span_size=64 << 10)
    with EmbeddedRegistry(root=tmp_path / "reg", layouts={"img": tmp_path / "layout"}) as reg:
        host = reg.url.split("://", 1)[1]
        events = lab.pull(f"{host}/img:t", "lazy").events
    mounts = events[(events.kind == "mount")]
    lazy = mounts[detail(mounts, "how") == "lazy"]
    assert len(lazy) == 2
    kinds = set(detail(lazy, "spawn"))
    assert kinds <= COLD_SPAWNS | WARM_SPAWNS and kinds
    # at most one cold start in a pull (its first server's; the others are warm forks)
    assert sum(k in COLD_SPAWNS for k in detail(lazy, "spawn")) <= 1


def test_calibrate_fits_start_up_by_how_servers_started() -> None:
    """``sim.fit`` uses the spawn detail: runs whose first server was a warm fork of the running service do
    not make a cold start (before, each run's first server was taken as one)."""
    from soci_lab.sim import fit

    times = {"service-cold": 1.2, "service-warm": 0.015}
    warm_only = fit(_events([["service-warm"] * 3, ["service-warm"] * 2], times))
    assert warm_only.host.mount_first_s is None and "mount_first_s" in warm_only.warnings
    assert warm_only.host.mount_s == pytest.approx(0.015)
    mixed = fit(_events([["service-cold", "service-warm", "service-warm"], ["service-warm"] * 3], times))
    assert mixed.host.mount_first_s == pytest.approx(1.2) and mixed.samples["mount_first"] == 1
    assert mixed.host.mount_s == pytest.approx(0.015) and mixed.samples["mount"] == 5


def test_a_run_with_a_cold_start_is_not_one_with_the_service_running_whatever_the_event_order() -> None:
    """Layers are prepared at once: their mount events may list a warm fork before the run's cold start."""
    times = {"service-cold": 1.2, "service-warm": 0.015}
    frame = _events([["service-cold", "service-warm"]], times)
    frame.loc[(frame.kind == "mount") & frame.path.isna(), "t_start"] = 0.0  # every layer asked at once
    flipped = frame.iloc[::-1].reset_index(drop=True)
    assert fit_startup(flipped)["service_running"].value == 0.0
