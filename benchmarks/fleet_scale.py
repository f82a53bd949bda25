"""Fleet scale: hosts → wall time and peak memory of one fleet simulation (soci_lab.sim.fleet).

The issue's goal: 10,000 hosts lazily pulling a 1 GB image with a 5,000-access trace in ≤ 60 s on one
core, ≤ 4 GB. Each point runs in a fresh process (its peak RSS is its own). The image is synthetic
(``--size``), the trace a synthetic start-up trace of ``--accesses`` accesses, the registry's egress
``--egress`` (bytes/s), hosts on 1 Gbit NICs, ``--p2p-seeds`` for peer-to-peer; ``--arrivals all`` makes
one group, ``waves`` one group per wave of ``--wave`` hosts, ``poisson`` one group per host (the engine's
worst case, exact; ``--quantum`` groups hosts arriving within it, an approximation). ``--arrivals`` takes a
comma-separated list (one curve each). The load average is reported with the numbers, and the process's CPU time
(``cpu_s``) beside its wall time: the machine may be shared, and the simulation uses one core.

    flock /tmp/soci-lab-bench.lock python -m benchmarks.fleet_scale --hosts 1,10,100,1000,10000 \
        --arrivals all,waves,poisson
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def point(hosts: int, args: argparse.Namespace) -> dict:
    from soci_lab.sim import SyntheticSpec, generate, synthetic_trace
    from soci_lab.sim.fleet import P2P, Arrivals, FleetSpec, HostPool, Registry, simulate_fleet

    t0 = time.perf_counter()
    image = generate(SyntheticSpec(seed=1, compressed_size=int(args.size)))
    trace = synthetic_trace(image, 0.2, seed=1, max_accesses=args.accesses)
    t1 = time.perf_counter()
    c1 = time.process_time()
    arrivals = {"all": Arrivals("all"), "waves": Arrivals("waves", size=args.wave, interval=args.interval),
                "poisson": Arrivals("poisson", rate=args.rate, quantum=args.quantum)}[args.arrivals]  # fmt: skip
    spec = FleetSpec(pools=(HostPool(hosts, nic=125e6),), registry=Registry(egress=args.egress), arrivals=arrivals,
                     p2p=P2P(args.p2p_seeds) if args.p2p_seeds else None)  # fmt: skip
    run = simulate_fleet(image, args.mode, spec, workload=trace)
    t2 = time.perf_counter()
    c2 = time.process_time()
    s = run.summary()
    return {
        "hosts": hosts, "mode": args.mode, "arrivals": args.arrivals, "quantum": args.quantum,
        "p2p_seeds": args.p2p_seeds, "accesses": len(trace),
        "image_bytes": image.compressed_size, "setup_s": round(t1 - t0, 2), "wall_s": round(t2 - t1, 2),
        "cpu_s": round(c2 - c1, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "groups": s["groups"], "recomputes": run.checks["recomputes"], "max_flows": run.checks["max_flows"],
        "requests_per_host": int(run.groups.requests.iloc[0]),
        "ready_p50_s": s["ready_p50_s"], "done_p50_s": s["workload_done_p50_s"], "done_p99_s": s["workload_done_p99_s"],
        "registry_bytes": s["registry_bytes"],
        "load_avg": os.getloadavg()[0],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,10,100,1000,10000")
    ap.add_argument("--mode", default="lazy")
    ap.add_argument("--arrivals", default="all", help="all, waves, poisson, or a comma-separated list")
    ap.add_argument("--wave", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--quantum", type=float, default=0.0, help="poisson: round arrivals to this (s)")
    ap.add_argument("--size", type=float, default=1e9)
    ap.add_argument("--p2p-seeds", type=int, default=0, help="peer-to-peer with this many seeds (0: none)")
    ap.add_argument("--accesses", type=int, default=5000)
    ap.add_argument("--egress", type=float, default=1.25e9)
    ap.add_argument("--json", action="store_true", help="one JSON object (every point) on stdout")
    ap.add_argument("--point", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point is not None:
        print(json.dumps(point(args.point, args)))
        return
    kinds = args.arrivals.split(",")
    if any(k not in ("all", "waves", "poisson") for k in kinds):
        ap.error(f"--arrivals: all, waves or poisson, not {args.arrivals!r}")
    skip = ("hosts", "point", "arrivals", "json")
    rest = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    load = os.getloadavg()
    print(f"load average at start: {load}", file=sys.stderr)
    points = []
    for kind in kinds:
        for n in (int(x) for x in args.hosts.split(",")):
            cmd = [sys.executable, str(Path(__file__).resolve()), *rest, f"--arrivals={kind}", "--point", str(n)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout
            points.append(json.loads(out))
            if not args.json:
                print(out.strip(), flush=True)
    if args.json:
        print(json.dumps({"load_avg_start": load, "load_avg_end": os.getloadavg(), "points": points}))


if __name__ == "__main__":
    main()
