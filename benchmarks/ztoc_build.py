"""zTOC build throughput against ``gzip -dc > /dev/null`` on the same >= 200 MB layer, in the same run.

For each repetition (interleaved, so both see the same machine load): time ``gzip -dc FILE > /dev/null``
(wall and child CPU), then :func:`soci_lab.ztoc.build_ztoc` on the file (wall and process CPU), then
``Ztoc.to_bytes()`` and ``Ztoc.from_bytes()``. Reports medians and the ratio build/gzip (goal <= 1.25).
With ``--zstd`` the same tar recompressed as multi-frame zstd (one frame per span) is measured against
``zstd -dc`` instead.

    .venv/bin/python benchmarks/ztoc_build.py [--reps 3] [--span-size 4MiB] [--zstd] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ztoc_layer import DEFAULT_PATH, ensure_layer, ensure_zstd_layer

from soci_lab.units import parse_size
from soci_lab.ztoc import Ztoc, build_ztoc


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_gzip(path: Path, tool: str = "gzip") -> tuple[float, float]:
    c0, t0 = child_cpu(), time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([tool, "-dc", str(path)], stdout=null, check=True)
    return time.perf_counter() - t0, child_cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--span-size", default="4MiB")
    ap.add_argument("--zstd", action="store_true", help="multi-frame zstd layer vs zstd -dc")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    span = parse_size(a.span_size)
    layer = ensure_zstd_layer(a.layer, span) if a.zstd else ensure_layer(a.layer)
    tool = "zstd" if a.zstd else "gzip"
    rows = []
    z = None
    for _ in range(a.reps):
        gz_wall, gz_cpu = time_gzip(layer, tool)
        p0, t0 = time.process_time(), time.perf_counter()
        z = build_ztoc(layer, span_size=span)
        b_wall, b_cpu = time.perf_counter() - t0, time.process_time() - p0
        t1 = time.perf_counter()
        blob = z.to_bytes()
        ser = time.perf_counter() - t1
        t2 = time.perf_counter()
        Ztoc.from_bytes(blob)
        parse = time.perf_counter() - t2
        rows.append(dict(gzip_wall=gz_wall, gzip_cpu=gz_cpu, build_wall=b_wall, build_cpu=b_cpu,
                         serialize=ser, parse=parse, ztoc_bytes=len(blob)))
    assert z is not None
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out = {
        "layer": str(layer),
        "layer_bytes": layer.stat().st_size,
        "uncompressed_bytes": z.uncompressed_archive_size,
        "entries": len(z.toc),
        "spans": z.span_count,
        "span_size": span,
        "reps": a.reps,
        "median": med,
        "ratio_wall_build_vs_gzip": med["build_wall"] / med["gzip_wall"],
        "ratio_cpu_build_vs_gzip": med["build_cpu"] / med["gzip_cpu"],
        "ratio_wall_build_and_serialize_vs_gzip": (med["build_wall"] + med["serialize"]) / med["gzip_wall"],
        "runs": rows,
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"layer {layer} ({out['layer_bytes'] / 1e6:.0f} MB {tool}, {z.uncompressed_archive_size / 1e6:.0f} MB tar, "
          f"{len(z.toc)} entries, {z.span_count} spans of {span})")
    dc = f"{tool} -dc > /dev/null"
    print(f"{dc:21s}: wall {med['gzip_wall']:.2f} s  cpu {med['gzip_cpu']:.2f} s  (median of {a.reps})")
    print(f"build_ztoc           : wall {med['build_wall']:.2f} s  cpu {med['build_cpu']:.2f} s")
    print(f"Ztoc.to_bytes        : {med['serialize']:.2f} s ({med['ztoc_bytes'] / 1e6:.1f} MB);  "
          f"Ztoc.from_bytes: {med['parse']:.2f} s")
    print(f"ratio build/{tool:9s}: wall {out['ratio_wall_build_vs_gzip']:.2f}x  "
          f"cpu {out['ratio_cpu_build_vs_gzip']:.2f}x  "
          f"(build+serialize wall {out['ratio_wall_build_and_serialize_vs_gzip']:.2f}x; goal <= 1.25x)")


if __name__ == "__main__":
    main()
