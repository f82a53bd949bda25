"""Random 4 KiB reads per second through the zTOC against ``indexed_gzip`` with its own index, same file.

Both index the same >= 200 MB gzip layer with the same checkpoint spacing (``--span-size``, default SOCI's
4 MiB; ``indexed_gzip`` takes it as ``spacing``), then serve the same list of uniformly random 4 KiB reads:

* soci_lab: ``Ztoc.read(offset, 4096, fetch)`` with ``fetch`` = ``os.pread`` of the span's compressed bytes,
  i.e. what a lazy loader does on a span-cache miss: fetch the span, check its sha256 digest (``verify``;
  also reported without), inflate from the checkpoint with the shared span engine
  (:mod:`soci_lab.ztoc.span_inflate`: ISA-L, libz where ISA-L cannot start);
* indexed_gzip: ``seek(offset); read(4096)`` on an ``IndexedGzipFile`` after ``build_full_index()``, with
  ``buffer_size=4096`` (its default read-ahead, ``4 * spacing`` = 16 MiB of decompression per random read,
  would be unfair to it); the default is measured too, on a tenth of the reads (``indexed_gzip_default``).

Side by side in the same process, the span engine against the libz-only engine the lazy reader used before
(``SOCI_LAB_SPAN_ENGINE=zlib``): the same unverified random reads (``soci_lab_unverified_libz``) and whole-span
inflate rates (``span_inflate_mb_s``: every ``decompress_span`` of up to ``--spans`` spans, MB/s of output),
with their ratio. ``--raw-mb`` makes a smaller layer for a quick run (cached beside the default one).

Index build times are reported too. Repetitions are interleaved; medians are shown. ``indexed_gzip`` is a
benchmark-only dependency (``.venv/bin/pip install indexed_gzip``); without it only soci_lab is measured.

    .venv/bin/python benchmarks/ztoc_random_read.py [--reads 300] [--reps 3] [--span-size 4MiB] [--raw-mb 640]
        [--spans 40] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ztoc_layer import DEFAULT_PATH, ensure_layer

from soci_lab.units import parse_size
from soci_lab.ztoc import build_ztoc
from soci_lab.ztoc.span_inflate import ENGINE_ENV

try:
    import indexed_gzip
except ImportError:  # pragma: no cover - optional
    indexed_gzip = None


@contextlib.contextmanager
def span_engine(engine: str | None):  # type: ignore[no-untyped-def]
    """The lazy reader's span engine for the block (None: the default)."""
    old = os.environ.pop(ENGINE_ENV, None)
    if engine:
        os.environ[ENGINE_ENV] = engine
    try:
        yield
    finally:
        os.environ.pop(ENGINE_ENV, None)
        if old is not None:
            os.environ[ENGINE_ENV] = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--span-size", default="4MiB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--raw-mb", type=int, default=640, help="size of /usr to pack when the layer is built")
    ap.add_argument("--spans", type=int, default=40, help="spans inflated whole per engine and repetition")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.raw_mb != 640 and a.layer == DEFAULT_PATH:
        a.layer = DEFAULT_PATH.with_name(f"usr-layer-{a.raw_mb}mb.tar.gz")
    layer = ensure_layer(a.layer, raw_mb=a.raw_mb, min_mb=min(200, a.raw_mb // 5))
    span = parse_size(a.span_size)

    t0 = time.perf_counter()
    z = build_ztoc(layer, span_size=span)
    ours_build = time.perf_counter() - t0
    size = z.uncompressed_archive_size
    rnd = random.Random(a.seed)
    offsets = [rnd.randrange(0, size - 4096) for _ in range(a.reads)]
    fd = os.open(layer, os.O_RDONLY)

    def fetch(s: int, e: int) -> bytes:
        return os.pread(fd, e - s, s)

    igz = None
    igz_build = None
    if indexed_gzip is not None:
        t0 = time.perf_counter()
        igz = indexed_gzip.IndexedGzipFile(str(layer), spacing=span, buffer_size=4096)
        igz.build_full_index()
        igz_build = time.perf_counter() - t0
        index_file = Path(str(layer) + ".gzidx")
        igz.export_index(str(index_file))
        igz_default = indexed_gzip.IndexedGzipFile(str(layer), spacing=span, index_file=str(index_file))

    res: dict[str, list[float]] = {
        "soci_lab_verified": [], "soci_lab_unverified": [], "soci_lab_unverified_libz": [],
        "indexed_gzip": [], "indexed_gzip_default": [],
    }
    step = max(1, z.span_count // max(1, a.spans))
    sample = list(range(0, z.span_count, step))[: a.spans]
    spans = [(i, fetch(*z.compressed_range(i))) for i in sample]
    out_bytes = sum(z.uncompressed_range(i)[1] - z.uncompressed_range(i)[0] for i in sample)
    rates: dict[str, list[float]] = {"engine": [], "libz": []}
    with span_engine("zlib"):
        old = [z.decompress(i, d) for i, d in spans[:5]]
    assert old == [z.decompress(i, d) for i, d in spans[:5]]  # the same bytes from both engines
    check = offsets[: min(20, len(offsets))]
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for off in offsets:
            z.read(off, 4096, fetch)
        res["soci_lab_verified"].append(a.reads / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for off in offsets:
            z.read(off, 4096, fetch, verify=False)
        res["soci_lab_unverified"].append(a.reads / (time.perf_counter() - t0))
        with span_engine("zlib"):
            t0 = time.perf_counter()
            for off in offsets:
                z.read(off, 4096, fetch, verify=False)
            res["soci_lab_unverified_libz"].append(a.reads / (time.perf_counter() - t0))
        for name, engine in (("engine", None), ("libz", "zlib"), ("engine", None), ("libz", "zlib")):
            with span_engine(engine):
                t0 = time.perf_counter()
                for i, d in spans:
                    z.decompress(i, d)
                rates[name].append(out_bytes / 1e6 / (time.perf_counter() - t0))
        if igz is not None:
            t0 = time.perf_counter()
            for off in offsets:
                igz.seek(off)
                igz.read(4096)
            res["indexed_gzip"].append(a.reads / (time.perf_counter() - t0))
            few = offsets[: max(1, a.reads // 10)]
            t0 = time.perf_counter()
            for off in few:
                igz_default.seek(off)
                igz_default.read(4096)
            res["indexed_gzip_default"].append(len(few) / (time.perf_counter() - t0))
    if igz is not None:  # same bytes from both
        for off in check:
            igz.seek(off)
            assert igz.read(4096) == z.read(off, 4096, fetch)
        igz.close()
        igz_default.close()
        index_file.unlink()
    os.close(fd)
    med = {k: statistics.median(v) for k, v in res.items() if v}
    out = {
        "layer": str(layer),
        "layer_bytes": layer.stat().st_size,
        "uncompressed_bytes": size,
        "span_size": span,
        "spans": z.span_count,
        "reads": a.reads,
        "reps": a.reps,
        "index_build_s": {"soci_lab": ours_build, "indexed_gzip": igz_build},
        "reads_per_s_median": med,
        "ratio_verified_vs_indexed_gzip": (med["soci_lab_verified"] / med["indexed_gzip"]) if igz_build else None,
        "ratio_unverified_vs_indexed_gzip": (med["soci_lab_unverified"] / med["indexed_gzip"]) if igz_build else None,
        "reads_ratio_engine_vs_libz": med["soci_lab_unverified"] / med["soci_lab_unverified_libz"],
        "span_inflate_mb_s": {k: statistics.median(v) for k, v in rates.items()},
        "span_inflate_ratio_engine_vs_libz": statistics.median(rates["engine"]) / statistics.median(rates["libz"]),
        "spans_inflated": len(sample),
        "runs": res,
        "span_runs": rates,
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"layer {layer} ({out['layer_bytes'] / 1e6:.0f} MB gzip, {size / 1e6:.0f} MB tar), {z.span_count} spans of "
          f"{span}; {a.reads} random 4 KiB reads x {a.reps}")
    print(f"index build: soci_lab {ours_build:.2f} s" + (f", indexed_gzip {igz_build:.2f} s" if igz_build else ""))
    for k, v in med.items():
        print(f"{k:22s}: {v:8.1f} reads/s")
    print(f"span engine vs libz-only (same process): reads {out['reads_ratio_engine_vs_libz']:.2f}x; whole spans "
          f"{out['span_inflate_mb_s']['engine']:.0f} vs {out['span_inflate_mb_s']['libz']:.0f} MB/s = "
          f"{out['span_inflate_ratio_engine_vs_libz']:.2f}x ({len(sample)} spans)")
    if igz_build:
        print(f"ratio soci_lab/indexed_gzip: verified {out['ratio_verified_vs_indexed_gzip']:.2f}x, "
              f"unverified {out['ratio_unverified_vs_indexed_gzip']:.2f}x")


if __name__ == "__main__":
    main()
