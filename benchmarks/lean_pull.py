"""Parallel eager pulls with chunked downloads: chunks on the fast path vs through httpx vs whole layers.

Usage (from the repository root; time it under the shared lock)::

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/lean_pull.py [--layers DIR ...] [--chunk 8MiB]
        [--repeat 3] [--work /tmp/soci-lab-bench-lean-pull] [--json]

Builds one image (a gzip layer per directory, ``soci_lab.images.build_image``) in Debian's distribution
registry on loopback, then pulls it cold with :class:`ParallelPuller` in three modes, alternating within
every round:

- ``chunks-lean``: ``--chunk`` ranged chunks, which take the fast path (``FAST_MIN_BYTES`` as shipped; the
  mode keeps the name of the hand-written lean path the fast path replaced, so older results compare);
- ``chunks-httpx``: the same chunks with the fast path's threshold set above the chunk size, so they go
  through httpx and the event loop (what 8 MiB chunks did when the threshold was 16 MiB);
- ``whole``: one GET per layer (``concurrent_download_chunk_size=""``).

Each pull's state lives on a new ext4 of its own (``--fs fresh``, the default: ``freshfs.py``; on the root
file system a pull's time depends on what earlier pulls deleted) or in a new directory of ``--work``.
Reported: median wall seconds and CPU seconds of this process and its children per mode, and the ratios to
``chunks-httpx``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freshfs import available, fresh_ext4

import soci_lab.remote.ranges as ranges
from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.fastpath import FAST_MIN_BYTES
from soci_lab.images import build_image
from soci_lab.netlab import DistributionRegistry
from soci_lab.remote import RegistryClient
from soci_lab.units import parse_size
from soci_lab.unpack import ParallelPuller, RegistryBlobSource, image_layer_specs

LAYERS = ["/usr/lib/python3.11", "/usr/lib/python3/dist-packages", "/usr/share/locale", "/usr/share/doc"]
MODES = ("chunks-lean", "chunks-httpx", "whole")


def cpu() -> float:
    """CPU seconds of this process and its reaped children (the puller's apply workers are processes)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


async def pull(host: str, ref: str, root: Path, chunk: str) -> None:
    async with RegistryClient(host, insecure=True) as client:
        resolved = await client.resolve_image(ref)
        specs = image_layer_specs(resolved.layers, resolved.config.diff_ids)
        source = RegistryBlobSource(client, resolved.reference.repository)
        mounts = [root / "snapshots" / str(i) / "fs" for i in range(len(specs))]
        cfg = ParallelPullUnpackConfig(
            enable=True,
            concurrent_download_chunk_size=chunk,
            max_concurrent_downloads=50,
            max_concurrent_downloads_per_image=10,
            max_concurrent_unpacks=2,
            max_concurrent_unpacks_per_image=2,
        )
        async with ParallelPuller(root / "state", source, config=cfg) as p:
            await p.pull(str(resolved.manifest_descriptor.digest), specs, mounts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="*", default=[p for p in LAYERS if os.path.isdir(p)])
    ap.add_argument("--chunk", default="8MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/tmp/soci-lab-bench-lean-pull")
    ap.add_argument(
        "--fs",
        default="fresh",
        choices=["fresh", "root"],
        help="each pull on a new ext4 (loop device, direct I/O; see freshfs.py) or on --work's",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.fs == "fresh" and not available():
        raise SystemExit("--fs fresh needs loop devices and mkfs.ext4 (or pass --fs root)")
    chunk = parse_size(args.chunk)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    with DistributionRegistry(root=work / "registry") as reg:
        ref = f"{reg.host_port}/bench/lean-pull:latest"
        built = build_image(args.layers, ref, insecure=True)
        size = sum(layer.descriptor.size for layer in built.layers)
        print(f"image: {len(built.layers)} layers, {size / 1e6:.0f} MB gzip", file=sys.stderr)
        for i in range(args.repeat):
            for mode in MODES:
                root = work / f"pull-{mode}-{i}"
                threshold = FAST_MIN_BYTES if mode == "chunks-lean" else chunk + 1
                with contextlib.ExitStack() as stack:
                    if args.fs == "fresh":
                        stack.enter_context(fresh_ext4(root, direct_io=True))
                    stack.enter_context(mock.patch.object(ranges, "FAST_MIN_BYTES", threshold))
                    c0, t0 = cpu(), time.perf_counter()
                    anyio.run(pull, reg.host_port, ref, root, "" if mode == "whole" else str(chunk))
                    wall, used = time.perf_counter() - t0, cpu() - c0
                times[mode].append((wall, used))
                print(f"round {i} {mode:13s} {wall:6.2f} s wall {used:6.2f} CPU-s", file=sys.stderr, flush=True)
                shutil.rmtree(root, ignore_errors=True)
    med = {m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for m, v in times.items()}
    base = med["chunks-httpx"]
    for m in MODES:
        print(
            f"{m:13s} wall {med[m][0]:6.2f} s ({med[m][0] / base[0]:.2f}x httpx chunks)  "
            f"CPU {med[m][1]:6.2f} s ({med[m][1] / base[1]:.2f}x)",
            file=sys.stderr,
        )
    if args.json:
        json.dump(
            {
                "command": " ".join(sys.argv),
                "chunk": chunk,
                "image_gzip_bytes": size,
                "runs": {m: v for m, v in times.items()},
                "median": med,
            },
            sys.stdout,
            indent=1,
        )
        print()


if __name__ == "__main__":
    main()
