"""The benchmark layer for the ztoc benchmarks: a real, mixed-content gzip layer of at least 200 MB.

Files of ``/usr`` (binaries, libraries, text, compressed docs — what container layers hold) are taken in
sorted order until the tar holds ``--raw-mb`` MB, then written with GNU tar and compressed with
``gzip -6``. The result is cached (default ``/tmp/soci_lab_bench/usr-layer.tar.gz``) so later runs and the
other benchmark reuse it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

DEFAULT_PATH = Path(os.environ.get("SOCI_LAB_BENCH_DIR", "/tmp/soci_lab_bench")) / "usr-layer.tar.gz"


def ensure_layer(path: Path = DEFAULT_PATH, raw_mb: int = 640, root: str = "/usr", min_mb: int = 200) -> Path:
    """Return the cached gzip layer, creating it first if absent (about a minute of gzip -6)."""
    if path.exists() and path.stat().st_size >= min_mb * 1_000_000:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    total = 0
    limit = raw_mb * 1_000_000
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names.append(os.path.relpath(dirpath, "/"))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            names.append(os.path.relpath(p, "/"))
            total += st.st_size
        if total >= limit:
            break
    listing = path.with_suffix(".list")
    listing.write_text("\n".join(names) + "\n")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", "/", "--no-recursion", "-cf", "-", "-T", str(listing)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        gz = subprocess.Popen(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=out)
        assert tar.stdout is not None
        tar.stdout.close()
        gz.wait()
        tar.wait()
    tmp.rename(path)
    if path.stat().st_size < min_mb * 1_000_000:
        raise SystemExit(f"{path} is only {path.stat().st_size / 1e6:.0f} MB; raise --raw-mb")
    return path


def ensure_zstd_layer(gz_path: Path = DEFAULT_PATH, frame_size: int = 4 << 20, level: int = 3) -> Path:
    """The same tar as the gzip layer, recompressed as multi-frame zstd (one frame per ``frame_size``)."""
    import gzip

    from soci_lab.ztoc import compress_zstd_frames

    gz_path = ensure_layer(gz_path)
    out = gz_path.with_name(f"usr-layer.frames{frame_size}.tar.zst")
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
        compress_zstd_frames(src, dst, frame_size, level)  # type: ignore[arg-type]
    tmp.rename(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--path", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--raw-mb", type=int, default=640)
    a = ap.parse_args()
    p = ensure_layer(a.path, a.raw_mb)
    print(p, p.stat().st_size)
