"""The committed startup traces and numbers (datasets/<name>/) agree with each other: the trace loads,
its distinct bytes are the startup.json numbers, and startup ends at readiness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soci_lab.datasets import RECIPES
from soci_lab.workload import load_trace

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_committed_startup_matches_its_trace(name: str) -> None:
    trace = load_trace(DATASETS / name / "startup-trace.csv")
    doc = json.loads((DATASETS / name / "startup.json").read_text())
    assert doc["name"] == name and doc["readiness"] == RECIPES[name].readiness
    assert doc["bytes_read"] == trace.bytes_read()
    assert doc["rows"] == len(trace)
    assert doc["fraction_read"] == pytest.approx(doc["bytes_read"] / doc["image_bytes"])
    assert doc["image_bytes"] == sum(lay["uncompressed_size"] for lay in doc["layers"])
    assert 0 < doc["fraction_read_syscalls"] <= doc["fraction_read"] < 0.5
    assert trace.duration <= doc["cmd_s"] + 0.01
    assert doc["mapped_pages"] is True
    # the trace-free check: what a cold page cache took in covers what the trace says was read
    assert doc["bytes_resident_cold"] >= 0.9 * doc["bytes_read"]
    assert any(r.path == RECIPES[name].cmd[0] for r in trace)  # the program itself was opened
    assert not any(r.path.startswith(("/proc/", "/sys/", "/dev/")) for r in trace)
