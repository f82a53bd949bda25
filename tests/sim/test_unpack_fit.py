"""The whole-layer unpack fit: in-process and worker apply costs, the unpacker's own inflate rate, and what
the eager pullers spend between their last layer and the rootfs mount.

Two kinds of checks: against the simulator's own events (the fit gives back what it ran with), and against
real events — the eager pulls of ``benchmarks/sim_fullscale.py``'s 00:20 UTC run on 2026-11-28
(python-pandas, 3 layers, each pull on a fresh ext4; ``data/python-pandas-eager-unpack.csv``: its
``blob_download``, ``decompress``, ``apply``, ``verify`` and rootfs ``mount`` events). Fitted from its
calibration rounds, the simulator must unpack each layer as long as the real pulls did. Fitted the old way
(one apply cost for both pullers, whole layers at the lazy path's span inflate rate) the simulated unpack
was decompress-bound where the real one is apply-bound: the sequential layers 7 % too slow against the
median of every pull, 12-41 % against the loopback validation pulls (the sequential loopback cell came out
1.14 and 1.32 at full scale).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from soci_lab.config import Config
from soci_lab.events import upgrade_frame
from soci_lab.sim import (
    HostParams,
    LazyParams,
    NetworkParams,
    SimParams,
    SyntheticSpec,
    generate,
    simulate,
    synthetic_trace,
)
from soci_lab.sim.calibrate import Calibration, fit
from soci_lab.sim.image import FileModel, ImageModel, LayerModel

MIB = 1024 * 1024
REAL = Path(__file__).with_name("data") / "python-pandas-eager-unpack.csv"
FAST = NetworkParams(bandwidth=10e9, rtt=0.0, request_overhead=0.0)


# --- the simulator's own events -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image():
    return generate(SyntheticSpec(seed=5, compressed_size=48 * MIB, layers=4, min_layer_size=2 * MIB))


@pytest.mark.parametrize("verify", [True, False])
def test_fit_gives_back_both_apply_costs_and_the_layer_inflate_rate(image, verify):
    """Sequential applies at one cost, the parallel puller's workers at another, whole layers inflate at
    their own rate (not the spans'): a fit of the runs' events finds all three, with or without digests."""
    host = HostParams(
        decompress_rate={"gzip": 150e6, "zstd": 800e6, "none": 4e9}, layer_decompress_rate={"gzip": 420e6},
        apply_per_file_s=300e-6, apply_per_byte_s=4e-9, worker_apply_per_file_s=420e-6, worker_apply_per_byte_s=6e-9,
    )  # fmt: skip
    params = SimParams(network=FAST, host=host)
    config = Config()
    config.disable_verification = not verify
    runs = [simulate(image, m, params=params, config=config).events for m in ("sequential", "parallel")]
    runs.append(simulate(image, "lazy", workload=synthetic_trace(image, 0.3, seed=5), params=params).events)
    cal = fit(runs)
    assert cal.apply_per_file_s == pytest.approx(300e-6, rel=1e-3)
    assert cal.apply_per_byte_s == pytest.approx(4e-9, rel=1e-3)
    assert cal.worker_apply_per_file_s == pytest.approx(420e-6, rel=1e-3)
    assert cal.worker_apply_per_byte_s == pytest.approx(6e-9, rel=1e-3)
    assert cal.layer_decompress_rate["gzip"] == pytest.approx(420e6, rel=1e-3)
    assert cal.decompress_rate["gzip"] == pytest.approx(150e6, rel=1e-3)  # the spans' rate stays the spans'
    again = cal.params(SimParams(network=FAST))
    for mode, events in zip(("sequential", "parallel"), runs, strict=False):
        rerun = simulate(image, mode, params=again, config=config).events
        assert _durations(rerun, "apply") == pytest.approx(_durations(events, "apply"), rel=1e-6)


def test_parallel_applies_at_the_worker_cost_sequential_at_its_own(image):
    """The puller decides where a layer is applied: parallel in a worker, sequential in process."""
    host = HostParams(apply_per_file_s=100e-6, apply_per_byte_s=0.0, worker_apply_per_file_s=500e-6,
                      worker_apply_per_byte_s=0.0, layer_decompress_rate={"gzip": 5e9},
                      disk_write_rate=1e12)  # fmt: skip
    params = SimParams(network=FAST, host=host)
    for mode, per_file in (("sequential", 100e-6), ("parallel", 500e-6)):
        ev = simulate(image, mode, params=params).events
        ap = ev[ev.kind == "apply"]
        entries = ap["entries"]
        assert ((ap.t_end - ap.t_start) / entries).to_numpy() == pytest.approx(per_file, rel=1e-6), mode
        dec = ev[ev.kind == "decompress"].set_index("layer")
        assert (dec.t_end.reindex(ap.layer).to_numpy() <= ap.t_end.to_numpy() + 1e-12).all()


def test_applies_that_shared_the_cores_do_not_count(image):
    """A lazy pull prepares its layers at once, so its unindexed layers are applied side by side, sharing
    the two cores (real: the demo's three local layers 1.5-3× slower than alone); the fit takes the cost
    from applies that ran alone, so it still finds the sequential puller's."""
    host = HostParams(apply_per_file_s=300e-6, apply_per_byte_s=4e-9, layer_decompress_rate={"gzip": 420e6})
    params = SimParams(network=FAST, host=host, lazy=LazyParams(concurrent_mounts=True))
    local = generate(SyntheticSpec(seed=6, compressed_size=24 * MIB, layers=4, min_layer_size=64 * MIB))
    lazy = simulate(local, "lazy", workload=synthetic_trace(local, 0.1, seed=6), params=params).events
    ap = lazy[lazy.kind == "apply"]
    together = [(a0 < b1) and (b0 < a1) for a0, a1 in zip(ap.t_start, ap.t_end, strict=True)
                for b0, b1 in zip(ap.t_start, ap.t_end, strict=True) if (a0, a1) != (b0, b1)]  # fmt: skip
    assert sum(together) >= 4  # at least three layers applied side by side
    cal = fit([lazy, simulate(image, "sequential", params=params).events])
    assert cal.apply_per_file_s == pytest.approx(300e-6, rel=1e-3)
    assert cal.apply_per_byte_s == pytest.approx(4e-9, rel=1e-3)


def test_fit_gives_back_what_the_pullers_spend_before_the_mount(image):
    """From the last layer to the rootfs mount: both eager pullers' finish, and the parallel one's wait for
    its apply workers to exit."""
    host = HostParams(pull_finish_s=0.012, apply_worker_exit_s=0.05, apply_worker_s=0.2)
    params = SimParams(network=FAST, host=host)
    seq, par = (simulate(image, m, params=params) for m in ("sequential", "parallel"))
    cal = fit([seq.events, par.events])
    assert cal.pull_finish_s == pytest.approx(0.012, rel=1e-6)
    assert cal.apply_worker_exit_s == pytest.approx(0.05, rel=1e-6)
    plain = SimParams(network=FAST, host=HostParams(apply_worker_s=0.2))
    assert par.summary["ready_s"] - simulate(image, "parallel", params=plain).summary["ready_s"] == pytest.approx(0.062)
    assert fit([par.events]).apply_worker_exit_s == pytest.approx(0.062, rel=1e-6)  # no sequential pull: all of it


def test_a_calibration_without_the_new_keys_still_loads(tmp_path):
    """Calibrations saved before the per-puller fit load, and both pullers then share their apply cost."""
    old = {"format": "soci_lab.sim.calibration/1", "apply_per_file_s": 5e-5, "apply_per_byte_s": 2e-9,
           "decompress_rate": {"gzip": 2.5e8}, "samples": {}, "notes": {}}  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(pd.Series(old).to_json())
    host = Calibration.load(path).params().host
    assert host.apply_s(10, 1000, worker=True) == host.apply_s(10, 1000) == pytest.approx(10 * 5e-5 + 1000 * 2e-9)
    assert host.layer_decompress_s("gzip", 10**6) == host.decompress_s("gzip", 10**6)


# --- real events ------------------------------------------------------------------------------------


def _real_frames(role: str) -> list[pd.DataFrame]:
    """The fixture's runs of ``role`` (``cal`` or ``val``) as event frames of the events schema."""
    raw = pd.read_csv(REAL)
    frames = []
    for run, g in raw[raw.role == role].groupby("run"):
        attrs = [
            {k: (v if k in ("compression", "what") else int(v)) for k, v in row.items() if pd.notna(v)}
            for row in g[["entries", "files", "compressed_bytes", "compression", "what"]].to_dict("records")
        ]
        frames.append(pd.DataFrame({
            "run_id": run, "source": "real", "strategy": g.strategy.to_numpy(), "kind": g.kind.to_numpy(),
            "t_start": g.t_start.to_numpy(), "t_end": g.t_end.to_numpy(),
            "layer": g.layer.astype(object).where(g.layer.notna(), None).to_numpy(), "span": None,
            "path": None, "bytes": g["bytes"].to_numpy(), "ok": g.ok.to_numpy(), "error": None, "attrs": attrs,
        }).pipe(upgrade_frame))  # fmt: skip
    return frames


def _image_of(frames: list[pd.DataFrame]) -> ImageModel:
    """A three-layer image with the real layers' sizes, entries, files and content bytes (no spans: every
    layer is unpacked whole, as the eager pullers do)."""
    ev = pd.concat(frames)
    ap = ev[ev.kind == "apply"].drop_duplicates("layer").set_index("layer")
    dec = ev[ev.kind == "decompress"].drop_duplicates("layer").set_index("layer")
    layers, files = [], []
    for li, digest in enumerate(sorted(ap.index)):
        a, d = ap.loc[digest], dec.loc[digest]
        n_files, entries, content = int(a["files"]), int(a["entries"]), int(a["bytes"])
        layers.append(LayerModel(digest, "gzip", int(d["compressed_bytes"]), int(d["bytes"])))
        each, extra = divmod(content, n_files)
        files += [FileModel(f"l{li}/f{i}", li, 0, each + (i < extra)) for i in range(n_files)]
        files += [FileModel(f"l{li}/d{i}", li, 0, 0, type="dir") for i in range(entries - n_files)]
    return ImageModel("python-pandas", layers, files)


def _durations(ev: pd.DataFrame, kind: str) -> dict[str, float]:
    e = ev[ev.kind == kind]
    return dict(zip(e.layer, e.t_end - e.t_start, strict=True))


@pytest.fixture(scope="module")
def real():
    cal_runs, val_runs = _real_frames("cal"), _real_frames("val")
    return fit(cal_runs), _image_of(cal_runs), pd.concat(val_runs)


def test_real_whole_layer_inflate_is_faster_than_the_spans_and_than_apply(real):
    """What the real events show: every eager layer's decompress thread finished before its apply (the
    pipeline is apply-bound), and the fitted whole-layer inflate is well above the 250 MB/s of the lazy
    path's span inflater, so the simulated pipeline is apply-bound too."""
    cal, image, val = real
    for run, ev in val.groupby("run_id"):
        dec, ap = _durations(ev, "decompress"), _durations(ev, "apply")
        assert all(dec[layer] < ap[layer] for layer in ap), run
    assert cal.layer_decompress_rate["gzip"] > 350e6
    host = cal.params().host
    for li, layer in enumerate(image.layers):
        entries, _n, content = image.layer_stats(li)
        dec_s = host.layer_decompress_s("gzip", layer.uncompressed_size)
        dec_s += (layer.uncompressed_size + layer.compressed_size) / host.verify_rate
        assert dec_s < host.apply_s(entries, content), layer.digest


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_fitted_unpack_matches_the_real_pulls(real, mode):
    """Simulated with the calibration rounds' fit, each layer's unpack takes within 20 % of the real median
    for it (every round, 15 pulls per mode: single pulls vary by ±25 %), and the three together within 5 %
    — the fit of one apply cost for both pullers, with whole layers at the spans' inflate rate, gave
    +7 % (sequential) and −8 % (parallel)."""
    cal, image, val = real
    every = pd.concat([val, *_real_frames("cal")])
    sim = _durations(simulate(image, mode, params=cal.params(SimParams(network=FAST))).events, "apply")
    ap = every[(every.kind == "apply") & (every.strategy == mode)]
    median = (ap.t_end - ap.t_start).groupby(ap.layer).median()
    for layer, t in sim.items():
        assert t == pytest.approx(median[layer], rel=0.20), layer
    assert sum(sim.values()) == pytest.approx(median.sum(), rel=0.05)


def test_real_parallel_pulls_wait_for_their_workers_to_exit(real):
    """Real pulls: 7-20 ms from the sequential puller's last layer to the rootfs mount, 30-80 ms from the
    parallel puller's (it waits for its apply workers to exit when it closes)."""
    cal, _image, _val = real
    assert 0.005 <= cal.pull_finish_s <= 0.02
    assert 0.02 <= cal.apply_worker_exit_s <= 0.08


def test_worker_applies_cost_more_than_in_process_ones(real):
    """The real parallel puller's worker processes applied the same layers more slowly than the sequential
    puller did in its own process, and the fit keeps the two apart."""
    cal, image, _val = real
    host = cal.params().host
    for li in range(len(image.layers)):
        entries, _n, content = image.layer_stats(li)
        assert host.apply_s(entries, content, worker=True) > 1.05 * host.apply_s(entries, content)
    assert cal.samples["apply"] == cal.samples["worker_apply"] == 18
