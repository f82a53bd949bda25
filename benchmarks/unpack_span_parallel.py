"""Serial inflate against span-parallel inflate from zTOC checkpoints, on one big gzip layer.

    .venv/bin/python benchmarks/unpack_span_parallel.py [--mb 200] [--level 6] [--workers 2] [--out FILE.json]

Builds (once, cached under --work) a gzip layer of about ``--mb`` MB compressed from real system files
(GNU tar of /usr/lib, /usr/share, /usr/bin until the size is reached, ``gzip -LEVEL``), and its zTOC
(``build_ztoc``, 4 MiB spans — not timed: the zTOC comes with the SOCI index). Then times, with the file in the
page cache, each producing the whole decompressed stream (what :func:`~soci_lab.unpack.apply_layer` hashes
and untars) and, for the "+sha256" rows, hashing it as the diffID the way the producer thread does:

* ``zlib serial``        — :mod:`zlib` ``decompressobj`` over 1 MiB reads (one core)
* ``isal serial``        — :func:`soci_lab.unpack.decompress.gzip_chunks` (the serial path: ISA-L when installed)
* ``span-parallel E xN`` — :class:`soci_lab.unpack.spanpar.ZtocSpanDecompressor` with N worker threads,
  engine E: ``zlib`` (libz through ctypes) or ``isal`` (ISA-L behind a synthetic aligned prefix, libz
  for the spans where no prefix exists)

Wall and CPU seconds (process user + system) are printed; with ``--out`` as JSON too. The machine is shared:
repeat (``--repeat``) and read the best wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from soci_lab.unpack.decompress import INFLATE_IMPL, gzip_chunks
from soci_lab.unpack.spanpar import ZtocSpanDecompressor
from soci_lab.ztoc import Ztoc, build_ztoc

SOURCES = ["usr/lib/x86_64-linux-gnu", "usr/share", "usr/bin", "usr/lib"]


def cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def build_layer(work: Path, mb: int, level: int, ratio: float = 2.6) -> Path:
    """A layer of about ``mb`` MB compressed: files under ``SOURCES`` up to ``ratio × mb`` MB uncompressed."""
    blob = work / f"layer-{mb}mb-l{level}.tar.gz"
    if blob.exists():
        return blob
    names, total = [], 0
    for src in SOURCES:
        for dirpath, dirnames, filenames in os.walk("/" + src):
            dirnames.sort()
            names.append(dirpath[1:])
            for fn in sorted(filenames):
                p = os.path.join(dirpath, fn)
                if os.path.islink(p) or not os.path.isfile(p) or not os.access(p, os.R_OK):
                    continue
                names.append(p[1:])
                total += os.path.getsize(p)
            if total >= ratio * mb * 1_000_000:
                break
        if total >= ratio * mb * 1_000_000:
            break
    lst = work / "files.txt"
    lst.write_text("\n".join(names) + "\n")
    tmp = blob.with_suffix(".part")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", "/", "--no-recursion", "--ignore-failed-read", "-cf", "-", "-T", str(lst)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        subprocess.run(["gzip", f"-{level}", "-n"], stdin=tar.stdout, stdout=out, check=True)
        tar.wait()
    tmp.rename(blob)
    return blob


def zlib_chunks(path: Path) -> Iterator[bytes]:
    d = zlib.decompressobj(31)
    with open(path, "rb", buffering=0) as f:
        while block := f.read(1 << 20):
            yield d.decompress(block)
    yield d.flush()


def consume(gen: Iterator[bytes], digest: bool) -> tuple[int, str]:
    h = hashlib.sha256() if digest else None
    n = 0
    for c in gen:
        n += len(c)
        if h is not None:
            h.update(c)
    return n, h.hexdigest() if h is not None else ""


def timed(fn: Callable[[], tuple[int, str]]) -> tuple[float, float, int, str]:
    c0, t0 = cpu(), time.perf_counter()
    n, d = fn()
    return time.perf_counter() - t0, cpu() - c0, n, d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="compressed size of the layer, MB")
    ap.add_argument("--level", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--engines", nargs="*", default=["zlib", "isal"])
    ap.add_argument("--span-size", type=int, default=4 << 20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", default="/tmp/soci-lab-bench-spanpar")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    blob = build_layer(work, args.mb, args.level)
    zpath = blob.with_suffix(f".ztoc{args.span_size}")
    if zpath.exists():
        zt = Ztoc.from_bytes(zpath.read_bytes())
    else:
        t0 = time.perf_counter()
        zt = build_ztoc(blob, span_size=args.span_size)
        print(f"zTOC built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        zpath.write_bytes(zt.to_bytes())
    size = blob.stat().st_size
    with open(blob, "rb") as f:  # warm the page cache
        while f.read(8 << 20):
            pass
    load0 = os.getloadavg()
    stop = threading.Event()
    cases: list[tuple[str, Callable[[bool], Iterator[bytes]]]] = [
        ("zlib serial", lambda d: zlib_chunks(blob)),
        (f"{INFLATE_IMPL} serial", lambda d: gzip_chunks(blob, stop)),
    ]
    engines: dict[str, dict[str, int]] = {}

    def span_parallel(w: int, engine: str) -> Iterator[bytes]:
        sd = ZtocSpanDecompressor(zt, workers=w, engine=engine)
        engines[engine] = sd.spans_by_engine
        return sd.chunks(blob, stop)

    for engine in args.engines:
        for w in args.workers:
            cases.append((f"span-parallel {engine} x{w}", lambda d, w=w, e=engine: span_parallel(w, e)))
    rows = []
    ref: dict[bool, str] = {}
    for name, make in cases:
        for digest in (False, True):
            best = None
            for _ in range(args.repeat):
                wall, cpus, n, d = timed(lambda make=make, digest=digest: consume(make(digest), digest))
                if digest and ref.setdefault(digest, d) != d:
                    raise SystemExit(f"{name}: diffID differs from the first case's")
                if best is None or wall < best[0]:
                    best = (wall, cpus, n)
            assert best is not None
            rows.append({"case": name + (" +sha256" if digest else ""), "wall_s": round(best[0], 3),
                         "cpu_s": round(best[1], 3), "out_mb": round(best[2] / 1e6, 1),
                         "mb_per_s_out": round(best[2] / 1e6 / best[0], 1)})
            print(f"{rows[-1]['case']:<28} {best[0]:7.2f} s wall {best[1]:7.2f} s cpu "
                  f"{rows[-1]['mb_per_s_out']:8.1f} MB/s out", flush=True)
    result = {"layer_mb": round(size / 1e6, 1), "uncompressed_mb": rows[0]["out_mb"], "spans": zt.span_count,
              "span_size": args.span_size, "level": args.level, "cores": os.cpu_count(), "spans_by_engine": engines,
              "loadavg_before": load0, "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
