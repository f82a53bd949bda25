"""Host profiles (issue 17, point 1): saved, loaded, versioned; bad files refused in one line; a prediction for
an image the profile never saw, from the profile and the network as named."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from soci_lab.errors import SimulationError
from soci_lab.sim import HostParams, LazyParams, NetworkParams, SimParams, SyntheticSpec, generate, simulate
from soci_lab.sim import synthetic_trace as trace_of
from soci_lab.sim.calibrate import fit
from soci_lab.sim.profile import PROFILE_FORMAT, HostProfile, NamedNetwork, default_path, fit_link

MIB = 1 << 20
HOST = HostParams(decompress_rate={"gzip": 150e6, "zstd": 700e6, "none": 4e9}, apply_per_file_s=300e-6,
                  apply_per_byte_s=6e-9, mount_s=0.02)  # fmt: skip
OVERHEAD = 0.002
SUITE_NETS = (NamedNetwork("loopback", None, 0.0), NamedNetwork("200Mbit+10ms", 25e6, 0.010))


def _truth(net: NamedNetwork) -> SimParams:
    bw = 1e9 if net.rate is None else net.rate
    return SimParams(network=NetworkParams(bandwidth=bw, rtt=net.rtt, request_overhead=OVERHEAD), host=HOST,
                     lazy=LazyParams(concurrent_mounts=True))  # fmt: skip


@pytest.fixture(scope="module")
def profile() -> HostProfile:
    """A profile fitted on simulated pulls of two suite-like images (never the one predicted below)."""
    suite = [generate(SyntheticSpec(seed=s, compressed_size=12 * MIB, layers=3, min_layer_size=2 * MIB,
                                    span_size=span, compression=comp))
             for s, span, comp in ((11, 1 * MIB, "gzip"), (12, 2 * MIB, "zstd"))]  # fmt: skip
    runs: dict[str, list] = {}
    for net in SUITE_NETS:
        for image in suite:
            for mode in ("lazy", "parallel", "sequential"):
                work = trace_of(image, 0.2, seed=1) if mode == "lazy" else None
                runs.setdefault(net.name, []).append(simulate(image, mode, workload=work, params=_truth(net)).events)
    loop = fit(runs["loopback"])
    cal = fit([e for v in runs.values() for e in v]).with_network_of(loop)
    link, warnings = fit_link(loop, [(SUITE_NETS[1], fit(runs[SUITE_NETS[1].name]))])
    return HostProfile(calibration=cal, link=link, link_warnings=warnings,
                       suite={"images": [{"name": "cal-a"}, {"name": "cal-b"}]}, machine={"node": "test"})  # fmt: skip


def test_a_profile_round_trips_through_its_file(tmp_path: Path, profile: HostProfile) -> None:
    path = profile.save(tmp_path / "deep" / "profile.json")
    data = json.loads(path.read_text())
    assert data["format"] == PROFILE_FORMAT
    # every parameter listed with its value, uncertainty, samples and warning
    params = data["parameters"]
    assert {"apply_per_file_s", "decompress_rate.gzip", "link.efficiency", "link.overhead_s"} <= set(params)
    for entry in params.values():
        assert set(entry) == {"value", "uncertainty", "samples", "warning"}
    assert params["apply_per_file_s"]["value"] == pytest.approx(300e-6, rel=1e-2)
    assert params["apply_per_file_s"]["samples"] >= 2
    again = HostProfile.load(path)
    assert again.to_dict() == profile.to_dict()
    assert again.images == ["cal-a", "cal-b"]
    assert not list(tmp_path.glob("deep/.*.tmp"))  # written whole, then renamed


def test_the_prediction_for_an_image_the_profile_never_saw(profile: HostProfile) -> None:
    """Another image (other size, layers, spans), another network (one the suite did not run): the profile
    and the named network predict what the true parameters give."""
    image = generate(SyntheticSpec(seed=99, compressed_size=20 * MIB, layers=4, min_layer_size=2 * MIB,
                                   span_size=4 * MIB, median_file_size=32 << 10))  # fmt: skip
    assert image.name not in profile.images
    named = NamedNetwork.parse("100Mbit+20ms")
    for mode in ("lazy", "parallel", "sequential"):
        work = trace_of(image, 0.1, seed=3) if mode == "lazy" else None
        truth = simulate(image, mode, workload=work, params=_truth(named)).summary
        pred = simulate(image, mode, workload=work, params=profile.params(named)).summary
        assert pred["workload_done_s"] == pytest.approx(truth["workload_done_s"], rel=0.05), mode
        assert (pred["bytes_fetched"], pred["requests"]) == (truth["bytes_fetched"], truth["requests"])
    # the network is the one named, not the suite's: its rate and RTT as given, this host's overhead on top
    net = profile.params(named).network
    assert net.rtt == 0.020 and net.bandwidth == pytest.approx(12.5e6, rel=0.03)
    assert net.request_overhead == pytest.approx(OVERHEAD, abs=5e-4)


def test_loopback_takes_the_fitted_link(profile: HostProfile) -> None:
    net = profile.params("loopback").network
    assert net.rtt == 0.0 and net.bandwidth == pytest.approx(1e9, rel=0.05) and net.burst == 0.0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json {", "cannot read a host profile"),
        ("[1, 2]", "not a soci_lab host profile"),
        ('{"format": "soci_lab.sim.calibration/2"}', "not a soci_lab host profile"),
        ('{"format": "soci_lab.host-profile/7"}', "host profile version 7, this soci_lab reads"),
        (f'{{"format": "{PROFILE_FORMAT}"}}', "malformed host profile: no 'calibration'"),
        (f'{{"format": "{PROFILE_FORMAT}", "calibration": []}}', "malformed host profile"),
        (f'{{"format": "{PROFILE_FORMAT}", "calibration": {{"format": "soci_lab.sim.calibration/2", "host": '
         '{"warp_factor": 9}}}', "malformed host profile"),
        (f'{{"format": "{PROFILE_FORMAT}", "calibration": {{"format": "soci_lab.sim.calibration/2"}}, '
         '"link": {"efficiency": 1, "bogus": 2}}', "malformed host profile"),
    ],
)
def test_a_bad_profile_file_is_one_clear_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(SimulationError) as exc:
        HostProfile.load(path)
    text = str(exc.value)
    assert says in text and str(path) in text and "\n" not in text


def test_a_missing_profile_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match="soci-lab calibrate"):
        HostProfile.load(tmp_path / "none.json")


def test_the_default_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOCI_LAB_HOST_PROFILE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "soci-lab" / "host-profile.json"
    monkeypatch.setenv("SOCI_LAB_HOST_PROFILE", str(tmp_path / "x.json"))
    assert default_path() == tmp_path / "x.json"


def test_a_link_the_shaped_runs_did_not_fit_is_a_warning() -> None:
    from soci_lab.sim.calibrate import Calibration

    link, warnings = fit_link(Calibration(), [(NamedNetwork.parse("50Mbit+10ms"), Calibration())])
    assert link.efficiency is None and "link.efficiency" in warnings and "link.overhead_s" in warnings
    # and the named network is then taken as it is, with the simulator's default overhead
    net = link.network(NamedNetwork.parse("50Mbit+10ms"), replace(NetworkParams(), request_overhead=0.0005))
    assert net.bandwidth == 50e6 / 8 and net.rtt == 0.010 and net.request_overhead == 0.0005


def test_what_the_loopback_fit_refused_is_a_warning_of_the_link() -> None:
    """A lean-path latency the loopback runs could not tell from 0 leaves the link's ``fast_overhead_s``
    unset: the profile says why under that name (a quick calibration listed it with no value and no reason)."""
    from soci_lab.sim.calibrate import Calibration

    loop = Calibration()
    loop.network.first_byte_s = 0.002
    loop.warnings["fast_first_byte_s"] = "0 ± 0.012 is not one standard error from 0: not fitted"
    link, warnings = fit_link(loop, [])
    profile = HostProfile(calibration=loop, link=link, link_warnings=warnings)
    entry = profile.parameters()["link.fast_overhead_s"]
    assert entry["value"] is None and "loopback fast_first_byte_s" in entry["warning"]
    for name, entry in profile.parameters().items():  # never a value missing without its reason
        assert entry["value"] is not None or entry["warning"] is not None or not entry["samples"], name
