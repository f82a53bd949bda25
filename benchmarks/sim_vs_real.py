"""Simulated against real, as JSON for the suite: ``sim_validation.py``'s image, pulls and calibration.

    .venv/bin/python benchmarks/sim_vs_real.py [--mb 64] [--fraction 0.1] [--repeat 3]
                                               [--networks loopback,1Gbit,100Mbit+20ms] [--json]

Why a second script: ``sim_validation.py`` (the simulation room's) prints a table for people; the suite
needs the same cells as data. This one imports that script's ``build`` (the image), ``pulls`` (the real
runs, sorted by time to workload done) and ``NETWORKS``/``MODES``, calibrates on the loopback runs exactly
as it does (after the same discarded warm-up pull per mode) — but with the registry and the shaping
proxies in processes of their own and each pull on a new ext4 of its own (``--no-fresh-fs``: the root file
system), as ``sim_fullscale.py`` (the full-profile version) — and emits per
cell: the real runs' times (every repetition), the simulated time, and whether bytes fetched and request
counts agree exactly (the issue asks for exact agreement on both).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freshfs import available as freshfs_available
from sim_fullscale import serve
from sim_validation import MODES, NETWORKS, build, drop_states, pulls

from soci_lab import lab
from soci_lab.cli.sim import image_from_layout
from soci_lab.sim import LazyParams, SimParams, fit, simulate, synthetic_trace, write_trace
from soci_lab.units import parse_duration, parse_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--networks", default=",".join(n for n, _, _ in NETWORKS))
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="compare the process's first pulls too")
    ap.add_argument("--no-fresh-fs", dest="fresh_fs", action="store_false",
                    help="state directories on the root file system, not a new ext4 per pull")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fresh_fs = a.fresh_fs and freshfs_available()
    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    wanted = set(a.networks.split(",")) | {"loopback"}  # calibration needs the loopback runs
    nets = [n for n in NETWORKS if n[0] in wanted]
    tmp = Path(tempfile.mkdtemp(prefix="sim-vs-real-"))
    try:
        layout = build(tmp, a.mb)
        image = image_from_layout(layout)
        trace = synthetic_trace(image, a.fraction, seed=1, read_size=128 * 1024)
        write_trace(trace, tmp / "trace.csv")
        real: dict[tuple[str, str], Any] = {}
        # registry and proxies in processes of their own (sim_fullscale.py says why: in the puller's process
        # the proxy took its GIL and doubled its apply times at 1 Gbit)
        procs = []
        try:
            reg, reg_url = serve(["registry", "serve", "--port", "0", "--layout", f"img={tmp / 'layout'}"])
            procs.append(reg)
            if a.warmup:  # as sim_validation.py: a process's first pulls pay its cold start (zygote, imports)
                for mode in MODES:
                    lab.pull(f"{reg_url.split('://', 1)[1]}/img:t", mode, trace=str(tmp / "trace.csv"))
            for name, bw, lat in nets:
                url = reg_url
                if bw is not None or lat is not None:
                    proc, url = serve(["netlab", "proxy", "--upstream", reg_url, "--port", "0",
                                       *(["--bandwidth", bw] if bw else []), *(["--latency", lat] if lat else [])])
                    procs.append(proc)
                for mode in MODES:
                    real[(mode, name)] = pulls(f"{url.split('://', 1)[1]}/img:t", mode, tmp / "trace.csv", a.repeat,
                                               fresh_fs=fresh_fs)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=15)
            drop_states()
        cal = fit([run.events for m in MODES for run in real[(m, "loopback")]])
        base = cal.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
        cells = []
        for name, bw, lat in nets:
            net = base.network
            if bw is not None:
                net = replace(net, bandwidth=parse_rate(bw))
            if lat is not None:
                net = replace(net, rtt=net.rtt + parse_duration(lat))
            params = replace(base, network=net)
            for mode in MODES:
                runs = real[(mode, name)]
                r = runs[len(runs) // 2].summary
                s = simulate(image, mode, workload=trace, params=params).summary
                cells.append({
                    "mode": mode,
                    "network": name,
                    "real_done_s": [float(run.summary["workload_done_s"]) for run in runs],
                    "sim_done_s": float(s["workload_done_s"]),
                    "real_ready_s": float(r["ready_s"]),
                    "sim_ready_s": float(s["ready_s"]),
                    "requests_real": sorted({int(run.summary["requests"]) for run in runs}),
                    "requests_sim": int(s["requests"]),
                    "bytes_real": sorted({int(run.summary["bytes_fetched"]) for run in runs}),
                    "bytes_sim": int(s["bytes_fetched"]),
                })
        out = {"mb": a.mb, "fraction": a.fraction, "repeat": a.repeat, "calibration": str(cal), "cells": cells,
               "state_fs": "a new ext4 per pull (loop device, no journal)" if fresh_fs else "root file system"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2 if not a.json else None))


if __name__ == "__main__":
    main()
