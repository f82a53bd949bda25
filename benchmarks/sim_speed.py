"""Speed of the simulator (issue 7, item 5).

1. One simulated lazy run of a 2 GiB image in 25 layers with a 10,000-access trace: target < 1 s.
   Timed as ``simulate()`` alone and with the events DataFrame built (``run.events``).
2. A 1,000-point sweep (mode × span size × RTT × bandwidth × read fraction) on the default process pool:
   target "minutes on 2 cores".

Usage: ``.venv/bin/python benchmarks/sim_speed.py [--repeat 5] [--workers 2] [--no-sweep]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from soci_lab.sim import SyntheticSpec, generate, simulate, synthetic_trace
from soci_lab.sim.sweep import WorkloadSpec, sweep

IMAGE = "synthetic:7,size=2GiB,layers=25"
SWEEP_IMAGE = "synthetic:7,size=600MiB,layers=14"
GRID = {
    "mode": ["lazy", "parallel"],
    "span_size": ["1MiB", "2MiB", "4MiB", "8MiB", "16MiB"],
    "rtt": ["0ms", "1ms", "5ms", "20ms", "50ms"],
    "bandwidth": ["25Mbit", "100Mbit", "1Gbit", "10Gbit"],
    "read_fraction": [0.01, 0.05, 0.1, 0.2, 0.3],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--sweep-image", default=SWEEP_IMAGE)
    args = ap.parse_args()

    t = time.perf_counter()
    image = generate(SyntheticSpec.parse(IMAGE))
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    trace = synthetic_trace(image, 0.1, seed=1, max_accesses=10_000)
    t_trace = time.perf_counter() - t
    print(
        f"image {IMAGE}: {image.compressed_size / 2**30:.2f} GiB compressed, {len(image.layers)} layers, "
        f"{sum(len(la.spans) for la in image.layers)} spans, {len(image.files)} files; generated in {t_gen:.2f} s"
    )
    print(f"trace: {len(trace)} accesses ({sum(a.op == 'read' for a in trace)} reads) built in {t_trace:.2f} s")
    simulate(image, "lazy", workload=trace)  # warm imports and caches (image view, file counts)
    for mode in ("lazy", "parallel", "sequential"):
        sim_s, with_frame = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            run = simulate(image, mode, workload=trace)
            sim_s.append(time.perf_counter() - t)
            _ = run.events
            with_frame.append(time.perf_counter() - t)
        s = run.summary
        print(
            f"{mode:10s} simulate() median {statistics.median(sim_s):.3f} s (min {min(sim_s):.3f}); "
            f"with events frame {statistics.median(with_frame):.3f} s; {len(run.recorder)} events; "
            f"ready {s['ready_s']:.2f} s, done {s['workload_done_s']:.2f} s, "
            f"{s['bytes_fetched'] / 2**20:.0f} MiB in {s['requests']} requests"
        )
    if args.no_sweep:
        return
    n = 1
    for values in GRID.values():
        n *= len(values)
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        frame = sweep(args.sweep_image, GRID, workload=WorkloadSpec(seed=1), executor=ex)
    wall = time.perf_counter() - t
    print(
        f"sweep: {n} points of {args.sweep_image} on {args.workers} worker processes "
        f"(cpu_count {os.cpu_count()}) in {wall:.1f} s; host seconds per point: "
        f"median {frame.sim_wall_s.median():.3f} s, max {frame.sim_wall_s.max():.3f} s"
    )


if __name__ == "__main__":
    main()
