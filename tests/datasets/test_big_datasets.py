"""The three big recipes — python-pandas, nodejs, postgresql — when their builds are in the cache (a build
takes 1-3 minutes each; `soci-lab dataset build NAME` makes them): each starts chrooted and reaches its
readiness rule, and its committed startup trace replays on it with no failed row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from soci_lab.datasets import cached_build
from soci_lab.workload import load_trace, mounts_under, replay_trace, run_in_rootfs

pytestmark = [pytest.mark.slow, pytest.mark.root]
DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.mark.parametrize("name", ["python-pandas", "nodejs", "postgresql"])
def test_big_dataset_starts_and_its_trace_replays(name: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    built = cached_build(name)
    if built is None:
        pytest.skip(f"{name} is not built; `soci-lab dataset build {name}` makes it (1-3 min)")
    recipe = built.recipe
    rootfs = tmp_path / "rootfs"
    assert os.system(f"cp -a {built.rootfs} {rootfs}") == 0
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": "/root", **recipe["env"]}
    r = run_in_rootfs(rootfs, recipe["cmd"], recipe["readiness"], recipe["timeout_s"], user=recipe["user"], env=env)
    assert r.ready, r.output_tail[-5:]
    assert mounts_under(rootfs) == []
    assert [lay["name"] for lay in built.layers] == ["base", "runtime", "application"]

    doc = json.loads((DATASETS / name / "startup.json").read_text())
    if doc["dataset_key"] != built.key:
        pytest.skip("the committed trace was recorded from another build")
    result = replay_trace(built.rootfs, load_trace(DATASETS / name / "startup-trace.csv"), strict_size=True)
    assert result.failed == 0, result.errors
