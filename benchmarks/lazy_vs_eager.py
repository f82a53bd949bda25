"""Lazy against eager: time to workload done with a start-up trace, unshaped and at 100 Mbit / 20 ms.

    .venv/bin/python benchmarks/lazy_vs_eager.py [--images sample[,minbase,python-pandas,...]] [--scale 0.3]
                                                 [--reps 3] [--networks loopback,100Mbit+20ms] [--json]

Why: lazy loading is worth its machinery only if a container reaches "workload done" sooner than after an
eager pull; this measures that on real pulls (``soci_lab.lab.pull(ref, mode, trace=…)``: mount, replay the
trace on the rootfs, unmount) for ``lazy``, ``parallel`` and ``sequential``, interleaved, ``--reps`` times.

Images: ``sample`` is :func:`soci_lab.images.build_sample_image` (at ``--scale``) with the trace of
:func:`soci_lab.demo.startup_trace`; a dataset name (``minbase``, ``python-pandas``, ``nodejs``,
``postgresql``) uses its cached build (never built here — ``soci-lab dataset build`` does that) and its
committed ``datasets/NAME/startup-trace.csv``; names without a cached build are skipped and reported.
Each image is copied into the embedded registry and given a SOCI v2 index (upstream defaults); the shaped
network is :class:`soci_lab.netlab.ShapingProxy` in front of that registry.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from soci_lab import lab
from soci_lab.artifacts import create_soci_index
from soci_lab.images.copy import copy_image
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.proxy import ShapingProxy

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {"loopback": (None, None), "100Mbit+20ms": ("100Mbit", "20ms")}
MODES = ("lazy", "parallel", "sequential")


def add_image(name: str, reg: EmbeddedRegistry, work: Path, scale: float) -> tuple[str, Path] | str:
    """Put image ``name`` into ``reg`` with a SOCI v2 index; return (repo:tag, trace path) or why not."""
    if name == "sample":
        from soci_lab.demo import startup_trace
        from soci_lab.images import build_sample_image, sample_image_trees

        build_sample_image(f"{reg.host_port}/sample:latest", work / "trees", scale=scale)
        trees = sample_image_trees(work / "trees-view", scale=scale)
        trace = startup_trace(trees, work / "sample-trace.csv")
        shutil.rmtree(work / "trees", ignore_errors=True)
        shutil.rmtree(work / "trees-view", ignore_errors=True)
    else:
        from soci_lab.datasets.build import cached_build

        built = cached_build(name)
        if built is None:
            return "no cached build (soci-lab dataset build NAME)"
        trace = REPO / "datasets" / name / "startup-trace.csv"
        if not trace.exists():
            return "no committed trace"
        copy_image(built.image, f"{reg.host_port}/{name}:latest", insecure=True)
    # upstream's 10 MiB minimum layer size, scaled down with a scaled-down sample image (else nothing is indexed)
    min_layer = int((10 << 20) * min(1.0, scale)) if name == "sample" else 10 << 20
    create_soci_index(f"{reg.host_port}/{name}:latest", version="v2", min_layer_size=min_layer)
    return f"{name}:latest", trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="sample")
    ap.add_argument("--scale", type=float, default=0.3, help="sample image scale")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lazy-vs-eager-"))
    out: dict[str, Any] = {"reps": a.reps, "scale": a.scale, "cells": [], "skipped": {}}
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            images: dict[str, tuple[str, Path]] = {}
            for name in a.images.split(","):
                got = add_image(name, reg, work, a.scale)
                if isinstance(got, str):
                    out["skipped"][name] = got
                else:
                    images[name] = got
            for net in a.networks.split(","):
                bw, lat = NETWORKS[net]
                proxy = ShapingProxy(reg.url, bandwidth=bw, latency=lat) if bw or lat else None
                if proxy is not None:
                    proxy.__enter__()
                try:
                    base = (proxy.url if proxy else reg.url).split("://", 1)[1]
                    for name, (ref, trace) in images.items():
                        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
                        for rep in range(a.reps):
                            order = MODES[rep % 3:] + MODES[: rep % 3]
                            for mode in order:
                                s = lab.pull(f"{base}/{ref}", mode, trace=str(trace)).summary
                                runs[mode].append({k: float(s[k]) for k in
                                                   ("ready_s", "workload_done_s", "bytes_fetched", "requests")})
                                print(f"{net} {name} {mode}: done {s['workload_done_s']:.2f} s", file=sys.stderr,
                                      flush=True)
                        cell = {"network": net, "image": name,
                                "workload_done_s": {m: [r["workload_done_s"] for r in v] for m, v in runs.items()},
                                "ready_s": {m: [r["ready_s"] for r in v] for m, v in runs.items()},
                                "bytes_fetched": {m: statistics.median(r["bytes_fetched"] for r in v)
                                                  for m, v in runs.items()}}
                        out["cells"].append(cell)
                finally:
                    if proxy is not None:
                        proxy.__exit__(None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    for c in out["cells"]:
        med = {m: statistics.median(v) for m, v in c["workload_done_s"].items()}
        print(f"{c['network']:14s} {c['image']:14s} " + "  ".join(f"{m} {v:6.2f} s" for m, v in med.items()))
    for k, v in out["skipped"].items():
        print(f"skipped {k}: {v}")


if __name__ == "__main__":
    main()
