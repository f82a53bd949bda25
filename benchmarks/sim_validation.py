"""Validation of the simulator against real pulls (issue 7, item 4): {sequential, parallel, lazy} × networks.

One SOCI v2 image is built into an OCI layout (layers of random and text-like files, indexed with 1 MiB
spans) and served by the embedded registry — directly ("loopback") or through the shaping proxy. Each cell
runs ``soci_lab.lab.pull(ref, mode, trace=…)`` for real (mount, replay a start-up-like trace reading
``--fraction`` of the image, unmount; ``--repeat`` runs, the median compared, every request count seen
printed; one discarded pull per mode first warms the process up) and simulates the same pull. The host
and the per-request latency are calibrated from the loopback runs (``soci_lab.sim.fit``); the shaped
cells add the shaping's bandwidth and latency. Printed per cell: real
and simulated time to ready and to workload done, their error, and requests and MB fetched (real / sim).

Usage: ``.venv/bin/python benchmarks/sim_validation.py [--mb 64] [--fraction 0.1] [--repeat 2]``. Needs
root, /dev/fuse and overlayfs (lazy and eager modes mount).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freshfs import fresh_ext4

from soci_lab import lab
from soci_lab.artifacts.create import create_soci_index
from soci_lab.cli.sim import image_from_layout
from soci_lab.images.build import build_image
from soci_lab.netlab import EmbeddedRegistry
from soci_lab.netlab.proxy import ShapingProxy
from soci_lab.sim import LazyParams, SimParams, fit, simulate, synthetic_trace, write_trace
from soci_lab.units import parse_duration, parse_rate

NETWORKS = [("loopback", None, None), ("1Gbit", "1Gbit", None), ("100Mbit+20ms", "100Mbit", "20ms")]
MODES = ("sequential", "parallel", "lazy")
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"config", b"library", b"python", b"layer", b"span", b"\n"]


def build(tmp: Path, mb: int) -> str:
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
    create_soci_index(ref, min_layer_size=4 << 20, span_size=1 << 20)
    return f"{tmp / 'layout'}:t"


#: where ``pulls`` keeps each pull's state until :func:`drop_states` (after the last timing)
STATES = Path(tempfile.gettempdir()) / f"sim-validation-states-{os.getpid()}"


def pulls(ref: str, mode: str, trace: Path, repeat: int, *, fresh_fs: bool = False) -> list[Any]:
    """``repeat`` real pulls, sorted by time to workload done (the median one is compared). Each keeps its
    files until :func:`drop_states`: deleting a pull's tree right away slows the next pulls' file creation
    (ext4 without a journal; see ``sim_fullscale.py``). ``fresh_fs``: each pull on a new ext4 of its own
    (``freshfs.py``), as ``sim_fullscale.py`` does — on the root file system a pull's file creation still
    depends on the pulls before it (the same layers applied 1.7x slower in the 1 Gbit cells, after the
    loopback ones, than in the loopback cells the host is calibrated from)."""
    runs = []
    for _ in range(max(1, repeat)):
        state = STATES / f"pull-{len(list(STATES.glob('pull-*'))) if STATES.exists() else 0}"
        if fresh_fs:
            with fresh_ext4(state):
                runs.append(lab.pull(ref, mode, trace=str(trace), state_dir=state / "state", keep_state=True))
        else:
            runs.append(lab.pull(ref, mode, trace=str(trace), state_dir=state, keep_state=True))
    return sorted(runs, key=lambda r: r.summary["workload_done_s"])


def drop_states() -> None:
    """Delete the state :func:`pulls` kept (call after the last timing)."""
    shutil.rmtree(STATES, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="compare the process's first pulls too")
    args = ap.parse_args()
    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="sim-validation-"))
    layout = build(tmp, args.mb)
    image = image_from_layout(layout)
    trace = synthetic_trace(image, args.fraction, seed=1, read_size=128 * 1024)
    write_trace(trace, tmp / "trace.csv")
    print(
        f"image: {len(image.layers)} layers ({sum(la.indexed for la in image.layers)} indexed), "
        f"{image.compressed_size / 1e6:.1f} MB compressed, {image.uncompressed_size / 1e6:.1f} MB uncompressed; "
        f"trace: {len(trace)} accesses reading {args.fraction:.0%}"
    )
    real: dict[tuple[str, str], Any] = {}
    with EmbeddedRegistry(root=tmp / "reg", layouts={"img": tmp / "layout"}) as reg:
        if args.warmup:  # the first pulls of a process pay its cold start (zygote, imports): not compared
            for mode in MODES:
                lab.pull(f"{reg.url.split('://', 1)[1]}/img:t", mode, trace=str(tmp / "trace.csv"))
        for name, bw, lat in NETWORKS:
            if bw is None and lat is None:
                host = reg.url.split("://", 1)[1]
                for mode in MODES:
                    real[(mode, name)] = pulls(f"{host}/img:t", mode, tmp / "trace.csv", args.repeat)
                continue
            with ShapingProxy(reg.url, bandwidth=bw, latency=lat) as proxy:
                host = proxy.url.split("://", 1)[1]
                for mode in MODES:
                    real[(mode, name)] = pulls(f"{host}/img:t", mode, tmp / "trace.csv", args.repeat)
    drop_states()  # after the last timing
    cal = fit([run.events for m in MODES for run in real[(m, "loopback")]])
    print(f"calibration from the loopback runs: {cal}")
    # soci_lab.snapshot prepares every layer at once (containerd would call Prepare layer by layer)
    base = cal.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
    print("\nmode        network         ready real/sim (err)       done real/sim (err)      requests r/s   MB r/s")
    for name, bw, lat in NETWORKS:
        net = base.network
        if bw is not None:
            net = replace(net, bandwidth=parse_rate(bw))
        if lat is not None:
            net = replace(net, rtt=net.rtt + parse_duration(lat))
        params = replace(base, network=net)
        for mode in MODES:
            runs = real[(mode, name)]
            r = runs[len(runs) // 2].summary
            seen = sorted({run.summary["requests"] for run in runs})
            s = simulate(image, mode, workload=trace, params=params).summary
            e_ready = (s["ready_s"] - r["ready_s"]) / r["ready_s"]
            e_done = (s["workload_done_s"] - r["workload_done_s"]) / r["workload_done_s"]
            print(
                f"{mode:11s} {name:14s} {r['ready_s']:6.2f} / {s['ready_s']:6.2f} ({e_ready:+6.1%})   "
                f"{r['workload_done_s']:6.2f} / {s['workload_done_s']:6.2f} ({e_done:+6.1%})   "
                f"{'|'.join(map(str, seen)):>6} / {s['requests']:<4d} {r['bytes_fetched'] / 1e6:6.2f} / "
                f"{s['bytes_fetched'] / 1e6:<6.2f}"
            )


if __name__ == "__main__":
    main()
