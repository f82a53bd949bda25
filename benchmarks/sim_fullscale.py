"""Full-scale validation of the simulator (issue 7, item 4): a dataset image, every mode × every network.

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/sim_fullscale.py \
        [--image python-pandas] [--repeat 3] [--cal-rounds 2] [--networks loopback,1Gbit,100Mbit+20ms] \
        [--save-calibrations datasets/calibration] [--save-events FILE] [--work DIR] [--no-fresh-fs] [--json]

The image is a cached dataset build (``soci-lab dataset build NAME``; never built here) copied into an OCI
layout and given a SOCI v2 index with upstream's defaults (4 MiB spans, 10 MiB minimum layer size); the
workload is its committed start-up trace (``datasets/NAME/startup-trace.csv``) replayed as fast as it goes
(its ``t_s`` are strace times: the real replay ignores them, the simulated one is given ``t = 0``).

Each pull has a state directory on a **brand-new ext4 of its own** (a loop device, made like the root file
system, without a journal; ``freshfs.py``), unmounted after the pull: on the shared root ext4 file creation
costs 19–340 µs depending on what was deleted in the minutes before (the inode allocator skips and rescans
recently freed inodes), so an eager pull's time depended on the pulls before it — parallel loopback took
3.8 s or 10.5 s, and three full runs gave 9/9, 6/9 and 7/9 cells within 15 %. ``--no-fresh-fs`` (or no
loop devices) falls back to fresh directories on the root file system, deleted only after the last timing.

The registry (``soci-lab registry serve``) and each shaping proxy (``soci-lab netlab proxy``) run in
processes of their own, as a remote registry would: in the puller's process they took its GIL and slowed
its unpack threads at 1 Gbit by 2× (measured), which no model of a host should have to include.

Runs, all with ``soci_lab.lab.pull(ref, mode, trace=…)`` (mount, replay, unmount): one discarded warm-up
pull per mode; then rounds of one pull per network × mode (modes rotated from round to round):
``--cal-rounds`` **calibration** rounds, whose events are fitted (:func:`soci_lab.sim.fit`) into one
:class:`~soci_lab.sim.Calibration` per network — its network (bandwidth, first-byte time) from that
network's runs, its host from every network's runs (the host is the same, and a burst of the machine's
other load during one network's rounds weighs less); saved with ``--save-calibrations DIR`` as
``DIR/NAME-NETWORK.json`` — spread among ``--repeat`` **validation** rounds, never used for fitting (so a
burst or drift of load from the machine's other users lands on both sides alike). Each cell is simulated
once with its network's calibration and compared with the median of its validation runs. ``uptime`` is
recorded before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freshfs import available as freshfs_available
from freshfs import fresh_ext4

from soci_lab import lab
from soci_lab.artifacts import create_soci_index
from soci_lab.cli.sim import image_from_layout
from soci_lab.images.copy import copy_image
from soci_lab.sim import LazyParams, SimParams, fit, read_trace, simulate

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {"loopback": (None, None), "1Gbit": ("1Gbit", None), "100Mbit+20ms": ("100Mbit", "20ms")}
MODES = ("sequential", "parallel", "lazy")


def soci_lab_cmd(*args: str) -> list[str]:
    """The ``soci-lab`` command of this venv (``python -m soci_lab.cli`` without the entry point)."""
    exe = Path(sys.executable).with_name("soci-lab")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "soci_lab.cli", *args]


def serve(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a ``soci-lab`` server in its own process; return it and the URL it prints first."""
    proc = subprocess.Popen(soci_lab_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"soci-lab {' '.join(args[:2])} did not print its URL (got {url!r})")
    return proc, url


def uptime() -> str:
    """The ``uptime`` line (load averages) at this moment."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def prepare(name: str, work: Path) -> tuple[Path, Path]:
    """The dataset image as an indexed OCI layout under ``work``, and its committed trace."""
    from soci_lab.datasets.build import cached_build

    built = cached_build(name)
    if built is None:
        raise SystemExit(f"no cached build of {name} (soci-lab dataset build {name})")
    trace = REPO / "datasets" / name / "startup-trace.csv"
    if not trace.exists():
        raise SystemExit(f"no committed trace for {name}")
    layout = work / "layout"
    if (work / "layout.done").exists():  # kept from an earlier run with the same --work
        return layout, trace
    copy_image(built.image, f"oci:{layout}:t")
    create_soci_index(f"oci:{layout}:t", version="v2")
    (work / "layout.done").touch()
    return layout, trace


def rounds(cal: int, val: int) -> list[str]:
    """The order of calibration and validation rounds: calibration rounds spread evenly among the
    validation ones (``V C V C V`` for 2 and 3), so that a drift of the machine's load during the run
    biases neither side."""
    cal, val = max(1, cal), max(1, val)
    slots = ["val"] * (cal + val)
    for i in range(cal):
        slots[(2 * i + 1) * (cal + val) // (2 * cal)] = "cal"
    return slots


def summary_of(run: Any) -> dict[str, float]:
    s = run.summary
    return {k: float(s[k]) for k in ("ready_s", "workload_done_s", "bytes_fetched", "requests")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="python-pandas")
    ap.add_argument("--repeat", type=int, default=3, help="validation runs per cell")
    ap.add_argument("--cal-rounds", type=int, default=2, help="calibration runs per cell (fitted, not compared)")
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--save-calibrations", metavar="DIR", help="write DIR/IMAGE-NETWORK.json per network")
    ap.add_argument("--save-events", metavar="FILE", help="pickle every real run's events (for analysis)")
    ap.add_argument("--work", metavar="DIR", help="build the layout here and keep it (default: a temporary one)")
    ap.add_argument("--no-fresh-fs", dest="fresh_fs", action="store_false",
                    help="state directories on the root file system, not a new ext4 per pull")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    nets = a.networks.split(",")
    unknown = set(nets) - set(NETWORKS)
    if unknown:
        raise SystemExit(f"unknown networks: {', '.join(sorted(unknown))} (known: {', '.join(NETWORKS)})")
    t_start = time.monotonic()
    load_before = uptime()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="sim-fullscale-"))
    work.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    cal_runs: dict[str, list[Any]] = {n: [] for n in nets}
    val: dict[tuple[str, str], list[dict[str, float]]] = {(m, n): [] for n in nets for m in MODES}
    saved: dict[str, Any] = {"cal": {}, "val": {}}
    try:
        layout, trace_path = prepare(a.image, work)
        image = image_from_layout(f"{layout}:t")
        trace = [type(x)(0.0, x.op, x.path, x.offset, x.size) for x in read_trace(trace_path)]
        reg, reg_url = serve(["registry", "serve", "--port", "0", "--layout", f"img={layout}"])
        procs.append(reg)
        hosts: dict[str, str] = {}
        for n in nets:
            bw, lat = NETWORKS[n]
            if bw is None and lat is None:
                hosts[n] = reg_url.split("://", 1)[1]
                continue
            args = ["netlab", "proxy", "--upstream", reg_url, "--port", "0"]
            args += ["--bandwidth", bw] if bw else []
            args += ["--latency", lat] if lat else []
            proc, url = serve(args)
            procs.append(proc)
            hosts[n] = url.split("://", 1)[1]

        states = work / "states"
        pulled = itertools.count()

        fresh_fs = a.fresh_fs and freshfs_available()

        def pull(n: str, mode: str) -> Any:
            # each pull on a new file system, or in a fresh directory kept until the end: deleting a pull's
            # 13,000 files made the next pulls' file creation 4x slower (module docstring)
            state = states / f"pull-{next(pulled)}"
            if not fresh_fs:
                return lab.pull(f"{hosts[n]}/img:t", mode, trace=str(trace_path), state_dir=state, keep_state=True)
            with fresh_ext4(state):
                return lab.pull(f"{hosts[n]}/img:t", mode, trace=str(trace_path), state_dir=state / "state",
                                keep_state=True)

        for mode in MODES:  # a process's first pulls pay its cold start (zygote, imports): not used
            pull(nets[0], mode)
        for rnd, role in enumerate(rounds(a.cal_rounds, a.repeat)):
            for k, n in enumerate(nets):
                order = MODES[(rnd + k) % 3:] + MODES[: (rnd + k) % 3]
                for mode in order:
                    run = pull(n, mode)
                    if role == "cal":
                        cal_runs[n].append(run)
                    else:
                        val[(mode, n)].append(summary_of(run))
                    if a.save_events:
                        saved[role].setdefault((mode, n), []).append((run.events, run.summary))
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work / "states", ignore_errors=True)  # after the last timing
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if a.save_events:
        with open(a.save_events, "wb") as fh:
            pickle.dump(saved, fh)
    cells = []
    cals: dict[str, Any] = {}
    host = fit([r.events for n in nets for r in cal_runs[n]])  # one host, whatever the network
    for n in nets:
        cal = host.with_network_of(fit([r.events for r in cal_runs[n]]))
        cal.notes.update({
            "made_by": f"benchmarks/sim_fullscale.py --image {a.image} (calibration rounds)",
            "runs": {m: a.cal_rounds for m in MODES},
            "fitted": f"network from this network's calibration runs; host from those of {', '.join(nets)}",
            "image": f"dataset {a.image}, SOCI v2 index, 4 MiB spans, 10 MiB minimum layer size",
            "network": f"{n}: " + ("embedded registry (own process), unshaped" if n == "loopback" else
                                   f"soci-lab netlab proxy (own process) {NETWORKS[n]}"),
            "host": f"{platform.node()} {platform.machine()} Linux {platform.release()}",
            "python": platform.python_version(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        })
        cals[n] = cal
        if a.save_calibrations:
            cal.save(Path(a.save_calibrations) / f"{a.image}-{n}.json")
        params = cal.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
        for mode in MODES:
            s = simulate(image, mode, workload=trace, params=params).summary
            runs = val[(mode, n)]
            done = [r["workload_done_s"] for r in runs]
            ready = [r["ready_s"] for r in runs]
            cells.append({
                "mode": mode, "network": n,
                "real_done_s": done, "sim_done_s": float(s["workload_done_s"]),
                "real_ready_s": ready, "sim_ready_s": float(s["ready_s"]),
                "ratio_done": float(s["workload_done_s"]) / statistics.median(done),
                "requests_real": sorted({int(r["requests"]) for r in runs}), "requests_sim": int(s["requests"]),
                "bytes_real": sorted({int(r["bytes_fetched"]) for r in runs}), "bytes_sim": int(s["bytes_fetched"]),
            })
    out = {
        "image": a.image, "repeat": a.repeat,
        "image_compressed_mb": image.compressed_size / 1e6, "image_uncompressed_mb": image.uncompressed_size / 1e6,
        "layers": len(image.layers), "indexed_layers": sum(la.indexed for la in image.layers),
        "accesses": len(trace), "uptime_before": load_before, "uptime_after": uptime(),
        "state_fs": "a new ext4 per pull (loop device, no journal)" if fresh_fs else "root file system",
        "wall_s": time.monotonic() - t_start, "calibrations": {n: c.to_dict() for n, c in cals.items()},
        "cells": cells,
    }
    if a.json:
        print(json.dumps(out))
        return
    print(f"image {a.image}: {out['layers']} layers ({out['indexed_layers']} indexed), "
          f"{out['image_compressed_mb']:.1f} MB compressed, {out['image_uncompressed_mb']:.1f} MB uncompressed; "
          f"trace {len(trace)} accesses; {a.repeat} validation runs per cell")
    print(f"before: {load_before}\nafter:  {out['uptime_after']}\nwall: {out['wall_s']:.0f} s")
    print(table(cells))


def table(cells: list[dict[str, Any]]) -> str:
    """The markdown table of the cells: real median (spread), sim, ratio, ready, exact-equal columns."""
    lines = ["| mode | network | real done, median (min–max) | sim done | sim/real | real ready | sim ready "
             "| requests equal | bytes equal |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        d = c["real_done_s"]
        req = c["requests_real"] == [c["requests_sim"]]
        byt = c["bytes_real"] == [c["bytes_sim"]]
        lines.append(
            f"| {c['mode']} | {c['network']} | {statistics.median(d):.2f} s ({min(d):.2f}–{max(d):.2f}) "
            f"| {c['sim_done_s']:.2f} s | {c['ratio_done']:.2f} | {statistics.median(c['real_ready_s']):.2f} s "
            f"| {c['sim_ready_s']:.2f} s "
            f"| {'yes' if req else 'no'} ({'/'.join(map(str, c['requests_real']))} vs {c['requests_sim']}) "
            f"| {'yes' if byt else 'no'} ({'/'.join(f'{b / 1e6:.2f}' for b in c['bytes_real'])} vs "
            f"{c['bytes_sim'] / 1e6:.2f} MB) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
