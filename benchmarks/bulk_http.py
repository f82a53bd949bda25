"""Bulk GETs (ranges of 512 KiB-8 MiB, whole layers) side by side: the registry client, httpx, urllib3, curl.

Usage (from the repository root; time it under the shared lock, the machine has two cores)::

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/bulk_http.py \\
        [--size 64MiB] [--chunks 8MiB,2MiB,512KiB] [--runs 5] [--backend asyncio|trio] [--json]

One registry (``soci-lab registry serve``) runs as a child process and one random blob is pushed. Modes,
alternating within every run:

- ``client``: :class:`soci_lab.remote.RegistryClient` as shipped (bodies of ``FAST_MIN_BYTES`` and more
  on its fast path);
- ``httpx``: the same client with every GET through httpx (the threshold raised out of reach);
- ``urllib3``: a bare ``urllib3.PoolManager`` driven from worker threads (no retries, no events): what the
  library costs by itself;
- ``curl``: one ``curl`` process per workload (all ranges in one invocation, over one keep-alive
  connection), the peer a C client sets.

Workloads: ``mem`` reads the blob as sequential ranged GETs of ``chunk`` bytes into memory (lazy loading's
way); ``layer`` downloads the whole blob to a file and checks its sha256 (the eager puller's way; curl
writes the file and ``sha256sum`` reads it back, timed together). Reported per cell: the median wall time
and client CPU time (all threads; curl's from ``getrusage`` of children), and each mode's ratio to curl.
The 1-minute load average is printed with them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_throughput import start_embedded

import soci_lab.remote.ranges as ranges
from soci_lab.remote import RegistryClient
from soci_lab.units import parse_size

MODES = ("client", "httpx", "urllib3", "curl")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _chunks(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + chunk, size) - 1) for lo in range(0, size, chunk)]


async def _client(mode: str, url: str, repo: str, digest: str, size: int, chunk: int, out: Path) -> None:
    threshold = 1 << 62 if mode == "httpx" else ranges.FAST_MIN_BYTES
    with mock.patch.object(ranges, "FAST_MIN_BYTES", threshold):
        async with RegistryClient(url) as rc:
            if chunk:
                blob_url = rc.blob_url(repo, digest)
                for lo, hi in _chunks(size, chunk):
                    if len(await rc.get_content_with_range(blob_url, lo, hi)) != hi - lo + 1:
                        raise SystemExit("short range")
            else:
                await rc.fetch_blob(repo, digest, size, path=out)


def _urllib3(url: str, repo: str, digest: str, size: int, chunk: int, out: Path) -> None:
    import urllib3

    pool = urllib3.PoolManager(retries=False)
    blob_url = f"{url}/v2/{repo}/blobs/{digest}"
    try:
        if chunk:
            for lo, hi in _chunks(size, chunk):
                r = pool.request("GET", blob_url, headers={"Range": f"bytes={lo}-{hi}"}, preload_content=False)
                data = r.read()
                r.release_conn()
                if len(data) != hi - lo + 1:
                    raise SystemExit("short range")
        else:
            r = pool.request("GET", blob_url, preload_content=False)
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            with open(out, "wb") as f:
                while n := r.readinto(buf):
                    h.update(memoryview(buf)[:n])
                    f.write(memoryview(buf)[:n])
            r.release_conn()
            if "sha256:" + h.hexdigest() != digest:
                raise SystemExit("digest mismatch")
    finally:
        pool.clear()


def _curl(url: str, repo: str, digest: str, size: int, chunk: int, out: Path) -> None:
    blob_url = f"{url}/v2/{repo}/blobs/{digest}"
    if chunk:
        cfg = out.with_suffix(".curlrc")
        cfg.write_text("next\n".join(f'url = "{blob_url}"\nrange = {lo}-{hi}\noutput = "/dev/null"\nfail\n'
                                     for lo, hi in _chunks(size, chunk)))
        subprocess.run(["curl", "-sS", "-f", "-K", str(cfg)], check=True)
    else:
        subprocess.run(f"curl -sS -f -o '{out}' '{blob_url}' && sha256sum '{out}' > /dev/null", shell=True,
                       check=True)


async def one(mode: str, url: str, repo: str, digest: str, size: int, chunk: int, out: Path) -> tuple[float, float]:
    c0, k0, w0 = time.process_time(), _children_cpu(), time.perf_counter()
    if mode in ("client", "httpx"):
        await _client(mode, url, repo, digest, size, chunk, out)
    elif mode == "urllib3":
        await anyio.to_thread.run_sync(_urllib3, url, repo, digest, size, chunk, out)
    else:
        await anyio.to_thread.run_sync(_curl, url, repo, digest, size, chunk, out)
    w1, c1, k1 = time.perf_counter(), time.process_time(), _children_cpu()
    return w1 - w0, (c1 - c0) + (k1 - k0)


async def bench(url: str, size: int, chunks: list[int], runs: int, scratch: Path) -> list[dict]:
    repo = "bench/bulk"
    async with RegistryClient(url) as rc:
        desc = await rc.push_blob(repo, os.urandom(size))
    digest = str(desc.digest)
    rows = []
    for chunk in [*chunks, 0]:
        out = scratch / "out"
        times: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        await one("client", url, repo, digest, size, chunk, out)  # warm up
        for _ in range(runs):
            for mode in MODES:
                out.unlink(missing_ok=True)
                times[mode].append(await one(mode, url, repo, digest, size, chunk, out))
        med = {m: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for m, v in times.items()}
        row: dict = {"workload": "mem" if chunk else "layer", "chunk": chunk, "size": size,
                     "load1": round(os.getloadavg()[0], 2)}
        for m in MODES:
            row[m] = {"wall": round(med[m][0], 4), "cpu": round(med[m][1], 4),
                      "wall/curl": round(med[m][0] / med["curl"][0], 3),
                      "cpu/curl": round(med[m][1] / med["curl"][1], 3)}
        rows.append(row)
        print(_line(row), flush=True, file=sys.stderr)
    return rows


def _size(n: int) -> str:
    if not n:
        return "whole"
    return f"{n >> 20}MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10}KiB"


def _line(r: dict) -> str:
    cells = " ".join(f"{m} {r[m]['wall']:.3f}s/{r[m]['cpu']:.3f}cpu ({r[m]['wall/curl']:.2f}x,{r[m]['cpu/curl']:.2f}x)"
                     for m in MODES)
    return f"{r['workload']:5s} {_size(r['chunk']):>6s} | {cells} | load {r['load1']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="64MiB")
    p.add_argument("--chunks", default="8MiB,2MiB,512KiB")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    size = parse_size(args.size)
    chunks = [parse_size(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory(prefix="soci-lab-bench-") as tmp:
        scratch = Path(tmp)
        (scratch / "registry").mkdir()
        proc, url = start_embedded(scratch / "registry")
        try:
            rows = anyio.run(bench, url, size, chunks, args.runs, scratch, backend=args.backend)
        finally:
            proc.terminate()
            proc.wait(10)
    if args.json:
        json.dump({"command": " ".join(sys.argv), "backend": args.backend, "size": size, "runs": args.runs,
                   "rows": rows}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
