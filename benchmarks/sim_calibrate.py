"""Fit a simulator calibration from real pulls of the sample image on loopback, and save it (issue 7, item 3).

Builds the sample image (``soci_lab.images.build_sample_image``, as ``soci-lab demo`` does) into the embedded
registry, gives it a SOCI v2 index (upstream's defaults: 4 MiB spans, 10 MiB minimum layer size), pulls it
for real in each mode with the demo's start-up trace (``soci_lab.lab.pull``: mount, replay, unmount;
one discarded warm-up pull per mode, then ``--repeat`` times each), fits :func:`soci_lab.sim.fit` on every
run's events and writes the :class:`~soci_lab.sim.Calibration` as JSON, with where and how it was made in
its ``notes``.

Usage: ``.venv/bin/python benchmarks/sim_calibrate.py [--out datasets/calibration/sample-loopback.json]
[--repeat 2] [--scale 1]``. Needs root, /dev/fuse and overlayfs. Then
``soci-lab simulate --calibration FILE …`` simulates with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import tempfile
from pathlib import Path

from soci_lab import lab
from soci_lab.artifacts import create_soci_index
from soci_lab.demo import startup_trace
from soci_lab.images import build_sample_image, sample_image_trees
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.sim import fit
from soci_lab.sim.calibrate import HOST_KEYS

MODES = ("sequential", "parallel", "lazy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="datasets/calibration/sample-loopback.json")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    work = Path(tempfile.mkdtemp(prefix="sim-calibrate-"))
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            ref = f"{reg.host_port}/sample:latest"
            build_sample_image(ref, work / "trees", scale=args.scale)
            trace = startup_trace(sample_image_trees(work / "trees-view", scale=args.scale), work / "trace.csv")
            create_soci_index(ref, version="v2")
            for mode in MODES:  # a process's first pulls pay its cold start (the zygote's fork server, imports)
                lab.pull(ref, mode, trace=str(trace))
            runs = [lab.pull(ref, mode, trace=str(trace)) for _ in range(max(1, args.repeat)) for mode in MODES]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cal = fit([r.events for r in runs])
    cal.notes.update(
        {
            "made_by": f"benchmarks/sim_calibrate.py --repeat {args.repeat} --scale {args.scale}",
            "runs": {m: sum(r.strategy.split("+")[0] == m for r in runs) for m in MODES},
            "image": f"soci_lab sample image (scale {args.scale}), SOCI v2 index, 4 MiB spans",
            "network": "loopback (embedded registry, unshaped)",
            "host": f"{platform.node()} {platform.machine()} Linux {platform.release()}",
            "python": platform.python_version(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    path = cal.save(args.out)
    print(f"wrote {path}")
    for key in ("bandwidth", "first_byte_s", "decompress_rate", "apply_per_file_s", "apply_per_byte_s",
                *HOST_KEYS):  # fmt: skip
        print(f"  {key:24s} {getattr(cal, key)}")


if __name__ == "__main__":
    main()
