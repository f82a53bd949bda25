"""``soci-lab mount``, ``umount`` and ``run`` as scripts use them (docs/cli.md): names, flags, exit codes,
JSON keys — and that nothing stays mounted or running afterwards, also when the serving process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from snaptools import CLI_CODE, MAIN, children_of, our_processes, soci_lab

from soci_lab.snapshot import find_state_dir, mounts_under
from soci_lab.snapshot.state import ProcessRef

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")

MOUNT_KEYS = {"mode", "ready_s", "bytes_fetched", "requests", "layers", "events"}
UMOUNT_KEYS = {"bytes_fetched", "requests", "spans_fetched", "spans_total"}
RUN_KEYS = MOUNT_KEYS | {"cmd_s", "total_s", "exit_code", "files_read", "bytes_read"}


def _processes(record) -> list[ProcessRef]:  # type: ignore[no-untyped-def]
    procs = [lay.process for lay in record.layers if lay.process is not None]
    return [*procs, record.server] if record.server is not None else procs


def _nothing_left(mnt: Path, record, state_root: Path) -> None:  # type: ignore[no-untyped-def]
    assert mounts_under(mnt) == []
    assert mounts_under(state_root) == []
    assert not any(p.alive() for p in _processes(record)), "a serving process survived umount"
    assert find_state_dir(mnt) is None
    assert not state_root.exists() or not any(state_root.iterdir())


@pytest.mark.parametrize("mode", ["lazy", "parallel"])
def test_mount_background_then_umount_json(small_image, mnt: Path, snapshot_roots, mode: str) -> None:  # type: ignore[no-untyped-def]
    out = soci_lab("mount", small_image.ref, str(mnt), "--mode", mode, "--background", "--json")
    doc = json.loads(out.stdout)
    assert set(doc) >= MOUNT_KEYS and doc["mode"] == mode and doc["ready_s"] > 0
    want = ["lazy", "local", "lazy"] if mode == "lazy" else ["parallel"] * 3
    assert [lay["how"] for lay in doc["layers"]] == want
    assert set(doc["layers"][0]) >= {"digest", "how", "bytes_fetched"}
    assert doc["requests"] > 0 and doc["bytes_fetched"] > 0
    assert (mnt / "etc/config").read_text() == "local layer\n"
    assert len((mnt / "data/two.bin").read_bytes()) == 3 << 20
    state = find_state_dir(mnt)
    assert state is not None
    record = state.read_record()
    assert record.server is not None and record.server.alive() and record.server.pid != os.getpid()
    out = soci_lab("umount", str(mnt), "--json")
    totals = json.loads(out.stdout)
    assert set(totals) == UMOUNT_KEYS
    if mode == "lazy":
        assert totals["spans_total"] > 0 and 0 < totals["spans_fetched"] <= totals["spans_total"]
        assert totals["bytes_fetched"] > doc["bytes_fetched"]  # the spans read after ready
    else:
        assert totals["spans_total"] == 0 and totals["bytes_fetched"] == doc["bytes_fetched"]
    _nothing_left(mnt, record, snapshot_roots["state"])


def test_umount_after_kill9_of_the_serving_process(small_image, mnt: Path, snapshot_roots) -> None:  # type: ignore[no-untyped-def]
    soci_lab("mount", small_image.ref, str(mnt), "--mode", "lazy", "--background")
    record = find_state_dir(mnt).read_record()
    assert (mnt / "etc/config").read_text() == "local layer\n"
    zygotes = children_of(record.server.pid, "soci_lab.lazy.zygote")  # the server's pre-warmed forker, if any
    os.kill(record.server.pid, signal.SIGKILL)
    fuse = [lay.process for lay in record.layers if lay.process is not None]
    assert len(fuse) == 2
    os.kill(fuse[0].pid, signal.SIGKILL)  # one FUSE server dies too: its mount is left dangling
    deadline = time.monotonic() + 10
    while (record.server.alive() or fuse[0].alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounts_under(mnt) != []  # still mounted, nobody serving
    out = soci_lab("umount", str(mnt), "--json")
    assert set(json.loads(out.stdout)) == UMOUNT_KEYS
    _nothing_left(mnt, record, snapshot_roots["state"])
    assert our_processes([mnt, snapshot_roots["state"]]) == []
    deadline = time.monotonic() + 10  # the zygote leaves when its parent is gone
    while any(os.path.exists(f"/proc/{z}") for z in zygotes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [z for z in zygotes if _alive(z)], "the killed server's zygote outlived it"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_foreground_mount_serves_until_sigterm(small_image, mnt: Path, snapshot_roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "events.csv"
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI_CODE, "mount", small_image.ref, str(mnt), "--mode", "lazy", "--json",
         "--events", str(events)],
        cwd=MAIN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        doc = json.loads(proc.stdout.readline())
        assert set(doc) >= MOUNT_KEYS
        assert (mnt / "data/one.bin").stat().st_size == 3 << 20
        (mnt / "data/one.bin").read_bytes()
        record = find_state_dir(mnt).read_record()
        assert record.server.pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            soci_lab("umount", str(mnt), check=False)
    _nothing_left(mnt, record, snapshot_roots["state"])
    from soci_lab.events import read_events

    ev = read_events(events)  # the merged events: the parent's and the FUSE servers'
    assert {"ready", "mount", "span_fetch", "unmount", "http_request"} <= set(ev["kind"])


def test_run_json_trace_and_cleanup(sample_layout: Path, tmp_path: Path, snapshot_roots) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "trace.csv"
    out = soci_lab("run", f"oci:{sample_layout}:v1", "--mode", "lazy", "--json", "--trace-out", str(trace), "--",
                   "/bin/sh", "/app/run.sh")  # fmt: skip
    doc = json.loads(out.stdout)
    assert set(doc) >= RUN_KEYS
    assert doc["exit_code"] == 0 and doc["files_read"] > 10 and doc["bytes_read"] > 100_000
    assert 0 < doc["cmd_s"] <= doc["total_s"]
    assert "lazy" in {lay["how"] for lay in doc["layers"]}
    lines = trace.read_text().splitlines()
    # the recorded trace keeps each call's duration (strace -T): the optional sixth column of cli.md
    assert lines[0] == "t_s,op,path,offset,size,dur_s" and any(",read,/app/run.sh," in ln for ln in lines)
    state = snapshot_roots["state"]
    assert not state.exists() or not any(state.iterdir())


def test_run_reports_a_failing_command(sample_layout: Path) -> None:
    out = soci_lab("run", f"oci:{sample_layout}:v1", "--mode", "sequential", "--json", "--", "/bin/sh", "-c",
                   "exit 3", check=False)  # fmt: skip
    assert out.returncode == 3  # the command's own exit code, as docker run passes it (issue 16)
    assert json.loads(out.stdout)["exit_code"] == 3


def test_usage_and_runtime_errors(tmp_path: Path, mnt: Path) -> None:
    bad_mode = soci_lab("mount", "oci:/nowhere:v1", str(mnt), "--mode", "eager", check=False)
    assert bad_mode.returncode == 2
    no_cmd = soci_lab("run", "oci:/nowhere:v1", "--mode", "lazy", check=False)
    assert no_cmd.returncode == 2
    missing = soci_lab("mount", f"oci:{tmp_path / 'none'}:v1", str(mnt), "--mode", "lazy", "--background",
                       check=False)  # fmt: skip
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    not_mounted = soci_lab("umount", str(mnt), check=False)
    assert not_mounted.returncode == 1 and "not mounted by soci-lab" in not_mounted.stderr
    assert mounts_under(mnt) == []


def test_mount_takes_a_soci_style_config(small_image, mnt: Path, tmp_path: Path, snapshot_roots) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text(
        "[pull_modes.soci_v1]\nenable = true\n\n[pull_modes.soci_v2]\nenable = false\n\n"
        "[pull_modes.parallel_pull_unpack]\nexperimental_parallel_pull_as_fallback = true\n"
    )
    doc = json.loads(soci_lab("mount", small_image.ref, str(mnt), "--mode", "lazy", "--config", str(config),
                              "--background", "--json").stdout)  # fmt: skip
    # the image has a v2 index only: with v2 off, v1 finds nothing (NoIndex) and the fallback is parallel
    assert [lay["how"] for lay in doc["layers"]] == ["parallel"] * 3
    record = find_state_dir(mnt).read_record()
    assert (mnt / "etc/config").read_text() == "local layer\n"
    soci_lab("umount", str(mnt))
    _nothing_left(mnt, record, snapshot_roots["state"])
