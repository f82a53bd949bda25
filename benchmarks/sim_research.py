"""Research checks at full size (issue 7, item 6): SOCI #114 and the lazy/eager crossover.

1. SOCI issue #114: total time of a lazy run reading 5 % of a 600 MiB image, span size × RTT; prints the
   best span size per RTT (upstream found 8 MiB best with real latency, smaller better without).
2. The crossover: total time of lazy vs parallel (and sequential) pulls as the read fraction grows, per
   network; prints the fraction where lazy stops winning (reported near 30 %, landscape.md §2.3).

Usage: ``.venv/bin/python benchmarks/sim_research.py [--workers 2] [--image synthetic:…]``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from soci_lab.sim.sweep import WorkloadSpec, sweep

SPANS = ["512KiB", "1MiB", "2MiB", "4MiB", "8MiB", "16MiB", "32MiB"]
RTTS = ["0ms", "1ms", "5ms", "20ms", "50ms", "100ms"]
FRACTIONS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
NETWORKS = [("10Gbit", "0.2ms"), ("1Gbit", "1ms"), ("1Gbit", "20ms"), ("100Mbit", "20ms"), ("100Mbit", "50ms")]


def crossover(fractions: list[float], lazy: np.ndarray, eager: np.ndarray) -> float:
    """The read fraction where lazy's total time first reaches eager's (linear interpolation), or NaN."""
    diff = lazy - eager
    for i in range(1, len(fractions)):
        if diff[i - 1] < 0 <= diff[i]:
            a, b = fractions[i - 1], fractions[i]
            return a + (b - a) * (-diff[i - 1]) / (diff[i] - diff[i - 1])
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image", default="synthetic:5,size=600MiB,layers=14")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        for bw in ("1Gbit", "100Mbit"):
            frame = sweep(
                args.image,
                {"mode": ["lazy"], "span_size": SPANS, "rtt": RTTS, "bandwidth": [bw]},
                workload=WorkloadSpec(fraction=0.05, seed=1),
                executor=ex,
            )
            t = frame.pivot(index="span_size", columns="rtt", values="total_s").loc[SPANS, RTTS]
            print(f"\n#114 — lazy total_s, 5 % read, {bw}, {args.image}")
            print(t.round(2).to_string())
            print("best span per RTT: " + ", ".join(f"{r}: {t[r].idxmin()}" for r in RTTS))

        print(f"\ncrossover — total_s by read fraction (1 MiB reads, clustered files), {args.image}")
        rows = []
        for bw, rtt in NETWORKS:
            frame = sweep(
                args.image,
                {
                    "mode": ["lazy", "parallel", "sequential"],
                    "read_fraction": FRACTIONS,
                    "bandwidth": [bw],
                    "rtt": [rtt],
                },
                workload=WorkloadSpec(seed=1, read_size=1 << 20),
                executor=ex,
            )
            t = frame.pivot(index="read_fraction", columns="mode", values="total_s").loc[FRACTIONS]
            x_par = crossover(FRACTIONS, t["lazy"].to_numpy(), t["parallel"].to_numpy())
            x_seq = crossover(FRACTIONS, t["lazy"].to_numpy(), t["sequential"].to_numpy())
            rows.append((bw, rtt, x_par, x_seq))
            print(f"\n{bw}, RTT {rtt}")
            print(t.round(2).to_string())
        print("\ncrossover read fraction (lazy stops winning):")
        print("network            vs parallel   vs sequential")
        for bw, rtt, xp, xs in rows:
            print(f"{bw:>8} {rtt:>6}      {xp:8.2f}      {xs:8.2f}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
