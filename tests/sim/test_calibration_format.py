"""The calibration's form: a network part and a host part (as :class:`SimParams`), saved nested; the flat
files written before the split (the committed ones) still load and give the same parameters."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from soci_lab.errors import SimulationError
from soci_lab.sim import HostParams, NetworkParams, calibrate
from soci_lab.sim.calibrate import EVENT_DETAILS, FLAT_FORMAT, FORMAT, Calibration, HostFit, NetworkFit

CALIBRATIONS = Path(__file__).resolve().parents[2] / "datasets" / "calibration"
COMMITTED = sorted(CALIBRATIONS.glob("*.json"))
META = {"format", "samples", "notes", "uncertainty", "warnings"}


def _expected_host(flat: dict) -> HostParams:
    """What the flat file's values make of the default host, worked out from the file alone: each value under
    its own name, the rates per algorithm merged into the defaults'."""
    base = HostParams()
    values = {}
    for key, value in flat.items():
        if key in META or key not in {f.name for f in fields(HostParams)} or value is None:
            continue
        if isinstance(value, dict):
            value = {**getattr(base, key), **value}
        values[key] = value
    return HostParams(**{**{f.name: getattr(base, f.name) for f in fields(HostParams)}, **values})


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_a_flat_calibration_loads_into_its_parts_and_saves_nested(path, tmp_path):
    """A committed (flat, format /1) file: every fitted value lands in its part, the parameters are the
    file's values on the defaults (the first byte all RTT, as before the split), and saved again it is nested
    (format /2) and loads to the same calibration and the same parameters."""
    flat = json.loads(path.read_text())
    if flat["format"] == FORMAT:  # regenerated since the split: the flat form an older writer gave it
        parts = {**flat.pop("network"), **flat.pop("host")}
        flat = {**flat, **parts, "format": FLAT_FORMAT}
    assert flat["format"] == FLAT_FORMAT
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    cal = Calibration.load(tmp_path / "flat.json")
    net_keys, host_keys = {f.name for f in fields(NetworkFit)}, {f.name for f in fields(HostFit)}
    assert set(flat) - META <= net_keys | host_keys  # every value goes somewhere
    for key in set(flat) - META:
        part = cal.network if key in net_keys else cal.host
        assert getattr(part, key) == flat[key], key
        assert getattr(cal, key) == flat[key], key  # the compatibility property reads the part
    params = cal.params()
    assert params.host == _expected_host(flat)
    net = params.network
    fb, fast = flat["first_byte_s"], flat.get("fast_first_byte_s")
    rtt = fb if fast is None else min(fb, fast)  # no RTT given: the cheaper path's first byte is all RTT
    assert (net.bandwidth, net.rtt, net.request_overhead) == (flat["bandwidth"], rtt, fb - rtt)
    assert net.conn_cap == (flat["conn_cap"] or NetworkParams().conn_cap)
    assert net.burst == (flat["burst"] or NetworkParams().burst)
    assert net.fast_request_overhead == (None if fast is None else fast - rtt)

    saved = json.loads(cal.save(tmp_path / "nested.json").read_text())
    assert saved["format"] == FORMAT
    assert set(saved) == META | {"network", "host"}
    assert saved["network"]["bandwidth"] == flat["bandwidth"] and saved["host"]["mount_s"] == flat["mount_s"]
    again = Calibration.load(tmp_path / "nested.json")
    assert again.network == cal.network and again.host == cal.host and again.samples == cal.samples
    assert again.params() == params


def test_the_flat_attributes_are_read_only():
    """``cal.bandwidth`` and the like read the parts; writing one is refused (it would not reach the part)."""
    cal = Calibration(network=NetworkFit(bandwidth=5e6), host=HostFit(mount_s=0.2))
    assert (cal.bandwidth, cal.mount_s, cal.fuse_op_s) == (5e6, 0.2, None)
    with pytest.raises(AttributeError):
        cal.bandwidth = 1.0
    assert cal.network.bandwidth == 5e6


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"format": FORMAT, "network": [], "host": {}}, "must be objects"),
        ({"format": FORMAT, "network": {"bandwith": 1e6}}, "bandwith"),
        ({"format": FORMAT, "host": {"mount_s": 0.1}, "extra": 1}, "extra"),
        ({"format": FLAT_FORMAT, "bandwidth": 1e6, "mystery_s": 1.0}, "mystery_s"),
        ({"network": {}, "host": {}}, "not a soci_lab calibration"),
    ],
)
def test_a_malformed_calibration_is_one_clear_error(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SimulationError, match=match) as exc:
        Calibration.load(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_every_event_detail_the_fit_reads_is_declared():
    """The details read by name (``_attr(frame, "key")``) are the ones :data:`EVENT_DETAILS` declares, and
    an undeclared one is refused rather than read as missing."""
    source = inspect.getsource(calibrate)
    read = set(re.findall(r'_attr\(\w+, "(\w+)"\)', source))
    declared = {k for keys in EVENT_DETAILS.values() for k in keys}
    assert read and read == declared
    with pytest.raises(KeyError, match="EVENT_DETAILS"):
        calibrate._attr(pd.DataFrame({"kind": ["apply"], "entries": [3]}), "undeclared")
