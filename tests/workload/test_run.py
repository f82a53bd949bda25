"""run_in_rootfs / RunningWorkload on the mini rootfs: readiness rules, timings, exit codes, users, and
nothing left behind — mounts, processes (daemons included) — whether the command succeeds or fails."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from soci_lab.errors import InvalidInput, ReadinessTimeout, WorkloadError
from soci_lab.events import EventRecorder
from soci_lab.workload import Readiness, RunningWorkload, mounts_under, processes_in, run_in_rootfs

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("needs_root")]


def test_exit_readiness_times_a_script(mini_rootfs: Path) -> None:
    rec = EventRecorder()
    r = run_in_rootfs(mini_rootfs, ["/bin/sh", "-c", "cat /data/hello.txt; sleep 0.2"], "exit", 10, recorder=rec)
    assert r.ready and r.exit_code == 0 and not r.timed_out
    assert r.cmd_s is not None and 0.2 <= r.cmd_s < 5
    assert r.output_tail == ["hello, rootfs"]
    kinds = list(rec.to_frame().kind)
    assert kinds == ["ready", "workload"]
    assert mounts_under(mini_rootfs) == []


def test_line_readiness_stops_a_server_and_its_daemons(mini_rootfs: Path) -> None:
    script = "setsid sleep 300 & sleep 300 & echo listening; exec sleep 300"
    w = RunningWorkload(mini_rootfs, ["/bin/sh", "-c", script], Readiness.parse("line:^listening$"))
    with w:
        ready = w.wait_ready(10)
        assert ready < 5
        assert len(processes_in(mini_rootfs)) >= 3  # sh's sleep, its background sleep, the setsid daemon
        assert sorted(os.path.basename(p) for p in mounts_under(mini_rootfs)) == ["dev", "proc", "shm", "sys"]
    assert processes_in(mini_rootfs) == []
    assert mounts_under(mini_rootfs) == []


def test_path_readiness_and_user(mini_rootfs: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    os.system(f"cp -a {mini_rootfs} {root}")
    (root / "data").chmod(0o777)
    r = run_in_rootfs(root, ["/bin/sh", "-c", "sleep 0.3; echo $(stat -L -c %u /proc/self) > /data/ready; sleep 60"],
                      "path:/data/ready", 10, user="worker")
    assert r.ready and r.exit_code is None  # stopped after readiness
    assert 0.25 <= r.cmd_s < 5
    time.sleep(0.05)
    assert (root / "data/ready").read_text().strip() == "4242"
    assert (root / "data/ready").stat().st_uid == 4242


def test_cwd_and_env(mini_rootfs: Path) -> None:
    r = run_in_rootfs(mini_rootfs, ["/bin/sh", "-c", 'echo "$PWD $GREETING"'], "exit", 10, cwd="/data",
                      env={"PATH": "/bin", "GREETING": "hi"})
    assert r.output_tail == ["/data hi"]


def test_failure_before_readiness_names_the_output_and_cleans_up(mini_rootfs: Path) -> None:
    with pytest.raises(WorkloadError, match=r"exited with 3 before readiness line:never; last output: boom"):
        run_in_rootfs(mini_rootfs, ["/bin/sh", "-c", "echo boom; exit 3"], "line:never", 10)
    with pytest.raises(WorkloadError, match="exited with 1"):
        run_in_rootfs(mini_rootfs, ["/bin/false"], "exit", 10)
    with pytest.raises(WorkloadError, match=r"cannot start|exited with 127"):
        run_in_rootfs(mini_rootfs, ["/bin/not-there"], "exit", 10)
    assert mounts_under(mini_rootfs) == [] and processes_in(mini_rootfs) == []


def test_timeout_kills_the_tree(mini_rootfs: Path) -> None:
    t0 = time.monotonic()
    r = run_in_rootfs(mini_rootfs, ["/bin/sh", "-c", "sleep 300 & exec sleep 300"], "line:ready", 0.5)
    assert r.timed_out and not r.ready and r.cmd_s is None
    assert time.monotonic() - t0 < 8
    with pytest.raises(ReadinessTimeout, match="not ready"):
        run_in_rootfs(mini_rootfs, ["/bin/sleep", "300"], "exit", 0.3, raise_on_timeout=True)
    assert processes_in(mini_rootfs) == []


def test_readiness_rules_parse() -> None:
    assert str(Readiness.parse("exit")) == "exit"
    assert Readiness.parse("line:^ready on \\d+").matches_line("ready on 80")
    assert Readiness.parse("path:/run/x.sock") == Readiness("path", "/run/x.sock")
    for bad in ("", "line:", "path:relative", "sometimes", "line:([unclosed"):
        with pytest.raises(InvalidInput):
            Readiness.parse(bad)


def test_a_mount_failure_leaves_nothing(mini_rootfs: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    os.system(f"cp -a {mini_rootfs} {root}")
    os.rmdir(root / "sys")
    os.symlink("/sys", root / "sys")  # refused: a symlink would mount onto the host's /sys
    with pytest.raises(WorkloadError, match="symlink"):
        run_in_rootfs(root, ["/bin/true"], "exit", 5)
    assert mounts_under(root) == []


def test_a_rootfs_path_with_a_space(mini_rootfs: Path, tmp_path: Path) -> None:
    root = tmp_path / "with space" / "root fs"
    root.parent.mkdir()
    os.system(f"cp -a '{mini_rootfs}' '{root}'")
    w = RunningWorkload(root, ["/bin/sh", "-c", "echo ready; exec sleep 60"], "line:ready")
    with w:
        w.wait_ready(10)
        assert len(mounts_under(root)) == 4
    assert mounts_under(root) == [] and processes_in(root) == []
