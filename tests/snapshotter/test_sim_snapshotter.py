"""The simulator's snapshotter path (``SimParams(snapshotter=True)``): one long-lived daemon, so a pull pays no
start-up of its own — no cold first layer-server fork (lazy), no apply-worker start (parallel) — and nothing
else changes."""

from __future__ import annotations

import dataclasses

import pytest

from soci_lab.sim import HostParams, SimParams, SyntheticSpec, generate, simulate, synthetic_trace

COLD_FORK_S = 1.8
WORKER_START_S = 0.6


@pytest.fixture(scope="module")
def image():  # type: ignore[no-untyped-def]
    return generate(SyntheticSpec.parse("synthetic:3,size=24MiB,layers=3,min_layer=1MiB"))


def _run(image, mode: str, snapshotter: bool):  # type: ignore[no-untyped-def]
    host = HostParams(mount_s=0.01, mount_first_s=COLD_FORK_S, apply_worker_s=WORKER_START_S)
    params = SimParams(host=host, snapshotter=snapshotter)
    return simulate(image, mode, workload=synthetic_trace(image, 0.05), params=params)


@pytest.mark.parametrize(("mode", "saved"), [("lazy", COLD_FORK_S - 0.01), ("parallel", WORKER_START_S)])
def test_the_snapshotter_path_charges_no_per_pull_start_up(image, mode: str, saved: float) -> None:  # type: ignore[no-untyped-def]
    per_pull, daemon = _run(image, mode, False), _run(image, mode, True)
    ready_gap = per_pull.summary["ready_s"] - daemon.summary["ready_s"]
    # the whole start-up comes off the time to ready (a little less where it overlapped other work)
    assert 0.5 * saved < ready_gap <= saved + 1e-6
    # the same requests and bytes: only start-up differs
    assert daemon.summary["requests"] == per_pull.summary["requests"]
    assert daemon.summary["bytes_fetched"] == per_pull.summary["bytes_fetched"]


def test_sequential_is_unchanged(image) -> None:  # type: ignore[no-untyped-def]
    a, b = _run(image, "sequential", False), _run(image, "sequential", True)
    assert a.summary["ready_s"] == b.summary["ready_s"]
    assert dataclasses.replace(SimParams(), snapshotter=True).snapshotter
