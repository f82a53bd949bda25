"""Apply one big gzip layer: soci_lab's unpacker against GNU tar, with the parts measured alone.

    .venv/bin/python benchmarks/unpack_apply.py [--src usr/lib/python3.11 ...] [--level 6] [--out FILE.json]

Builds a layer from real system directories with GNU tar + gzip (once, cached under --work), then times,
each into a fresh directory on the same file system, after a ``sync``:

* ``gunzip``        — ``gzip -dc > /dev/null`` (serial zlib inflate, the decompression bound of one core)
* ``isal+sha256``   — soci_lab's producer alone: ISA-L inflate + compressed digest + diffID, no files
* ``gnu-tar``       — ``tar -xzf`` (GNU tar with a gzip child), as root
* ``soci_lab``      — ``apply_layer`` with both digests verified (what a pull does)
* ``soci_lab-noverify`` — ``apply_layer`` without digests

Wall seconds and CPU seconds (user + system, children included) are reported; on a shared machine the CPU
seconds are the steadier number. Results print as a table and, with ``--out``, as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from soci_lab.unpack import apply_layer
from soci_lab.unpack.decompress import INFLATE_IMPL, gzip_chunks

DEFAULT_SRC = ["usr/lib/python3.11", "usr/lib/python3/dist-packages", "usr/share/locale"]


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    subprocess.run(["sync"], check=True)
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", nargs="*", default=DEFAULT_SRC, help="paths under / to put in the layer")
    ap.add_argument("--level", type=int, default=6, help="gzip level")
    ap.add_argument("--work", default="/tmp/soci-lab-bench-unpack")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    blob = work / f"layer-{hashlib.sha1(repr((args.src, args.level)).encode()).hexdigest()[:8]}.tar.gz"
    if not blob.exists():
        tar = subprocess.Popen(["tar", "-C", "/", "--xattrs", "-cf", "-", *args.src], stdout=subprocess.PIPE)
        with open(blob, "wb") as f:
            subprocess.run(["gzip", f"-{args.level}", "-c"], stdin=tar.stdout, stdout=f, check=True)
        tar.wait()
    raw_size = 0
    entries = int(subprocess.run(f"tar -tzf {blob} | wc -l", shell=True, capture_output=True, text=True).stdout)

    def fresh(name: str) -> Path:
        d = work / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        return d

    results: dict[str, list[tuple[float, float]]] = {}

    def gunzip() -> None:
        subprocess.run(f"gzip -dc {blob} > /dev/null", shell=True, check=True)

    def producer() -> None:
        nonlocal raw_size
        ch, uh = hashlib.sha256(), hashlib.sha256()
        n = 0
        for chunk in gzip_chunks(blob, threading.Event(), ch.update):
            uh.update(chunk)
            n += len(chunk)
        raw_size = n

    def gnu_tar() -> None:
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(work / "dest"), "--numeric-owner", "--xattrs"], check=True)

    def ours() -> None:
        apply_layer(blob, work / "dest", compute_digests=True)

    def ours_noverify() -> None:
        apply_layer(blob, work / "dest")

    for _ in range(args.repeat):
        for name, fn in (
            ("gunzip", gunzip),
            (f"{INFLATE_IMPL}+sha256", producer),
            ("gnu-tar", gnu_tar),
            ("soci_lab", ours),
            ("soci_lab-noverify", ours_noverify),
        ):
            fresh("dest")  # outside the timing
            results.setdefault(name, []).append(timed(fn))
    shutil.rmtree(work / "dest", ignore_errors=True)
    load = os.getloadavg()
    out = {
        "blob": str(blob),
        "compressed_bytes": blob.stat().st_size,
        "uncompressed_bytes": raw_size,
        "entries": entries,
        "cpus": os.cpu_count(),
        "loadavg_after": load,
        "results": {k: {"wall_s": min(w for w, _ in v), "cpu_s": min(c for _, c in v)} for k, v in results.items()},
    }
    print(
        f"layer: {out['compressed_bytes'] / 1e6:.0f} MB gzip, {raw_size / 1e6:.0f} MB tar, {entries} entries; "
        f"{os.cpu_count()} cpus, load after {load[0]:.1f}"
    )
    print(f"{'what':<20}{'wall s':>10}{'cpu s':>10}")
    for k, v in out["results"].items():
        print(f"{k:<20}{v['wall_s']:>10.2f}{v['cpu_s']:>10.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
