"""The fleet model against real concurrent pulls: N hosts (separate processes) through ONE shaping proxy.

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/fleet_real.py \\
        [--hosts 2,4,8] [--modes lazy,parallel,sequential] [--egress 40Mbit] [--mb 16] [--fraction 0.1] \\
        [--repeat 2] [--cal-rounds 2] [--json]

Issue 19, point 4. The image is ``sim_validation.py``'s kind (``--mb`` of text and random files in five layers,
a SOCI v2 index with 1 MiB spans over layers of 1 MiB or more), the workload a synthetic trace reading
``--fraction`` of its files. The
embedded registry (``soci-lab registry serve``) and ONE shaping proxy (``soci-lab netlab proxy --bandwidth
EGRESS``: one token bucket shared by every download, so it plays the registry's egress) run in processes of
their own. Each "host" is a worker process of its own (``python benchmarks/fleet_real.py --worker``) with its
own state directories, pulling through the proxy with :func:`soci_lab.lab.pull` (mount, replay the trace,
unmount): every worker first makes one discarded pull per mode straight from the registry (a process's first
pulls pay its cold start), then N workers are armed and released together, so the N pulls start at once.

Calibration and validation are kept apart: ``--cal-rounds`` rounds of one lone pull per mode (N = 1) through
the same proxy are fitted (:func:`soci_lab.sim.fit`) into the host calibration and the network it saw (the
rate one host gets through the proxy and the first-byte time); the N ≥ 2 runs are never fitted. The fleet
model (:func:`soci_lab.sim.fleet.simulate_fleet`) then runs N hosts arriving at once, each host the
single-host model under that calibration (its NIC the fitted rate), behind a registry whose egress is the
proxy's ``--bandwidth`` setting (a configuration, not a fit). Real hosts pool every validation round of
a cell; the median and p90 (nearest rank) of their time to ready and to workload done are compared with the
fleet's, and each real host's bytes fetched and request count with the model's per host (exact).

The machine's two cores are shared by the N hosts here (and by other users): the model gives each host a
machine of its own. So the egress is kept narrow enough that the network, not the CPU, decides the time;
``uptime`` is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("lazy", "parallel", "sequential")


# --- the worker: one host ---------------------------------------------------------------------------------


def worker() -> None:
    """Read one JSON command a line: ``{"op": "pull", ref, mode, trace, state, events?, arm?}``. With ``arm``
    it answers ``{"armed": true}`` and waits for a ``go`` line before pulling. Answers the run's summary."""
    from soci_lab import lab

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            return
        if cmd.get("arm"):
            print(json.dumps({"armed": True}), flush=True)
            if sys.stdin.readline().strip() != "go":
                return
        run = lab.pull(cmd["ref"], cmd["mode"], trace=cmd["trace"], state_dir=cmd["state"], keep_state=True)
        if cmd.get("events"):
            run.events.to_pickle(cmd["events"])
        s = run.summary
        print(json.dumps({k: float(s[k]) for k in ("ready_s", "workload_done_s", "bytes_fetched", "requests")}),
              flush=True)  # fmt: skip


class Host:
    """A worker process (see :func:`worker`)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip

    def send(self, msg: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((msg if isinstance(msg, str) else json.dumps(msg)) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a host worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.send({"op": "quit"})
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def build(tmp: Path, mb: int) -> str:
    """``sim_validation.py``'s image (five layers of text and random files, ``mb`` MB in all) with a SOCI v2
    index of 1 MiB spans over every layer of at least 1 MiB (so a small image has indexed layers too)."""
    import random

    from sim_validation import WORDS

    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.images.build import build_image

    rnd = random.Random(7)
    dirs = []
    for li, share in enumerate((0.4, 0.3, 0.15, 0.1, 0.05)):
        d = tmp / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        used, i, budget = 0, 0, share * mb * 1_000_000
        while used < budget:
            size = int(min(budget - used, rnd.lognormvariate(10, 1.5))) + 1
            text = b" ".join(rnd.choice(WORDS) for _ in range(size // 6 + 1))[:size]
            (d / f"f{i:05d}").write_bytes(rnd.randbytes(size) if i % 2 else text)
            used += size
            i += 1
        dirs.append(tmp / f"l{li}")
    ref = f"oci:{tmp / 'layout'}:t"
    build_image(dirs, ref)
    create_soci_index(ref, min_layer_size=1 << 20, span_size=1 << 20)
    return f"{tmp / 'layout'}:t"


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as :meth:`soci_lab.sim.fleet.FleetRun.summary`."""
    v = sorted(values)
    return v[max(1, -(-int(p * len(v)) // 100)) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hosts", default="2,4,8", help="concurrent pulls per cell (comma-separated)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--egress", default="40Mbit", help="the shaping proxy's bandwidth (the registry's egress)")
    ap.add_argument("--mb", type=int, default=16, help="image size (MB of files before compression)")
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of the files the trace reads")
    ap.add_argument("--repeat", type=int, default=2, help="validation rounds per cell")
    ap.add_argument("--cal-rounds", type=int, default=2, help="lone pulls per mode, fitted (never compared)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    if a.worker:
        worker()
        return

    from sim_fullscale import rounds, serve, soci_lab_cmd, uptime

    from soci_lab import lab
    from soci_lab.cli.sim import image_from_layout
    from soci_lab.sim import LazyParams, SimParams, fit, synthetic_trace, write_trace
    from soci_lab.sim.fleet import FleetSpec, HostPool, Registry, simulate_fleet
    from soci_lab.units import parse_rate

    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    sizes = sorted({int(x) for x in a.hosts.split(",")})
    modes = a.modes.split(",")
    if set(modes) - set(MODES) or min(sizes) < 1:
        raise SystemExit(f"--modes: {', '.join(MODES)}; --hosts: positive counts")
    t_start = time.monotonic()
    load_before = uptime()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-real-"))
    env = {**os.environ, "SOCI_LAB_SERVICE_DIR": str(tmp / "service")}  # a service of our own, stopped at the end
    procs: list[subprocess.Popen[str]] = []
    hosts: list[Host] = []
    cal_events: list[Any] = []
    real: dict[tuple[int, str], list[dict[str, float]]] = {(n, m): [] for n in sizes for m in modes}
    try:
        layout = build(tmp, a.mb)
        image = image_from_layout(layout)
        trace = synthetic_trace(image, a.fraction, seed=1, read_size=128 * 1024)
        write_trace(trace, tmp / "trace.csv")
        reg, reg_url = serve(["registry", "serve", "--port", "0", "--layout", f"img={tmp / 'layout'}"])
        procs.append(reg)
        proxy, proxy_url = serve(["netlab", "proxy", "--upstream", reg_url, "--port", "0", "--bandwidth", a.egress])
        procs.append(proxy)
        direct, shaped = f"{reg_url.split('://', 1)[1]}/img:t", f"{proxy_url.split('://', 1)[1]}/img:t"
        hosts = [Host(env) for _ in range(max(sizes))]
        counter = iter(range(10**9))

        def state() -> str:
            return str(tmp / "states" / f"pull-{next(counter)}")  # kept until the end (see sim_fullscale.py)

        for mode in modes:  # each worker's cold start, straight from the registry: not used
            for h in hosts:
                h.send({"op": "pull", "ref": direct, "mode": mode, "trace": str(tmp / "trace.csv"), "state": state()})
            for h in hosts:
                h.answer()
        for rnd, role in enumerate(rounds(a.cal_rounds, a.repeat)):
            order = modes[rnd % len(modes) :] + modes[: rnd % len(modes)]
            for mode in order:
                if role == "cal":  # one host alone through the proxy: fitted
                    ev = str(tmp / f"cal-{rnd}-{mode}.pkl")
                    hosts[0].send({"op": "pull", "ref": shaped, "mode": mode, "trace": str(tmp / "trace.csv"),
                                   "state": state(), "events": ev})  # fmt: skip
                    hosts[0].answer()
                    cal_events.append(ev)
                    continue
                for n in sizes:  # n hosts at once: compared, never fitted
                    for h in hosts[:n]:
                        h.send({"op": "pull", "ref": shaped, "mode": mode, "trace": str(tmp / "trace.csv"),
                                "state": state(), "arm": True})  # fmt: skip
                    for h in hosts[:n]:
                        h.answer()
                    for h in hosts[:n]:
                        h.send("go")
                    real[(n, mode)] += [h.answer() for h in hosts[:n]]
        import pandas as pd

        cal = fit([pd.read_pickle(p) for p in cal_events])
    finally:
        for h in hosts:
            h.close()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(soci_lab_cmd("service", "stop"), env=env, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    params = cal.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
    rate = params.network.bandwidth
    egress = parse_rate(a.egress)
    cells = []
    for n in sizes:
        for mode in modes:
            spec = FleetSpec(pools=(HostPool(n, nic=rate),), registry=Registry(egress=egress), sample_hosts=())
            s = simulate_fleet(image, mode, spec, workload=trace, params=params)
            per_host = s.groups.iloc[0]
            runs = real[(n, mode)]
            cell: dict[str, Any] = {"hosts": n, "mode": mode, "real_hosts": len(runs)}
            for key, name in (("ready_s", "ready"), ("workload_done_s", "workload_done")):
                vals = [r[key] for r in runs]
                for p, tol in ((50, 0.15), (90, 0.25)):
                    real_p, sim_p = percentile(vals, p), float(s.summary()[f"{name}_p{p}_s"])
                    cell[f"{name}_p{p}"] = {"real": real_p, "sim": sim_p, "ratio": sim_p / real_p,
                                            "within": abs(sim_p / real_p - 1) <= tol}  # fmt: skip
            cell["bytes_real"] = sorted({int(r["bytes_fetched"]) for r in runs})
            cell["bytes_sim"] = int(per_host.bytes_fetched)
            cell["requests_real"] = sorted({int(r["requests"]) for r in runs})
            cell["requests_sim"] = int(per_host.requests)
            cell["exact"] = (cell["bytes_real"], cell["requests_real"]) == ([cell["bytes_sim"]], [cell["requests_sim"]])
            cells.append(cell)
    out = {
        "egress": a.egress, "egress_bytes_per_s": egress, "fitted_rate_bytes_per_s": rate,
        "mb": a.mb, "fraction": a.fraction, "accesses": len(trace), "repeat": a.repeat, "cal_rounds": a.cal_rounds,
        "image_compressed_mb": image.compressed_size / 1e6,
        "fitted_on": f"{len(cal_events)} lone pulls (N = 1) through the same proxy; the N >= 2 runs are not fitted",
        "calibration": cal.to_dict(), "uptime_before": load_before, "uptime_after": uptime(),
        "wall_s": time.monotonic() - t_start, "cells": cells,
    }  # fmt: skip
    if a.json:
        print(json.dumps(out))
        return
    print(
        f"egress {a.egress} (one host measured {rate / 1e6:.2f} MB/s through it); image "
        f"{out['image_compressed_mb']:.1f} MB compressed; trace {len(trace)} accesses; {a.repeat} rounds per cell"
    )
    print(f"calibration: {out['fitted_on']}")
    print(f"before: {load_before}\nafter:  {out['uptime_after']}\nwall: {out['wall_s']:.0f} s")
    print(table(cells))


def table(cells: list[dict[str, Any]]) -> str:
    """The agreement table (markdown): N × mode, real and simulated median and p90, their ratio."""
    rows = ["| N | mode | what | real p50 | sim p50 | ratio | real p90 | sim p90 | ratio | bytes, requests |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        for name in ("ready", "workload_done"):
            m, p = c[f"{name}_p50"], c[f"{name}_p90"]
            mark = lambda x: f"{x['ratio']:.2f}" + ("" if x["within"] else " ✗")  # noqa: E731
            exact = (
                "exact"
                if c["exact"]
                else (f"real {c['bytes_real']}/{c['requests_real']} sim {c['bytes_sim']}/{c['requests_sim']}")
            )
            rows.append(f"| {c['hosts']} | {c['mode']} | {name} | {m['real']:.2f} s | {m['sim']:.2f} s | {mark(m)} | "
                        f"{p['real']:.2f} s | {p['sim']:.2f} s | {mark(p)} | {exact} |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    main()
