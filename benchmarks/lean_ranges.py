"""Ranged GETs of one blob in chunks: httpx vs the fast path (urllib3's keep-alive pool on worker threads).

Usage (from the repository root; time it under the shared lock, the machine has two cores)::

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/lean_ranges.py \\
        [--size 64MiB] [--chunks 8MiB,2MiB,1MiB,512KiB,256KiB,64KiB] [--runs 5] [--registry embedded|distribution]
        [--backend asyncio|trio] [--json]

One registry is started as a child process (so the client's GIL is its own) and one random blob pushed. For
each chunk size the blob is read in ``size / chunk`` ranged GETs, in two workloads:

- ``file``: the parallel puller's way: 4 tasks take chunks in turn and write them at their offsets in one
  file (``os.pwrite``; the fast path pumps them from the connection on worker threads);
- ``mem``: lazy loading's way: one task, each range read into memory (``get_content_with_range``).

Each workload runs in two modes, alternating within every run: ``httpx`` (every GET through httpx and the
event loop) and ``lean-pool`` (every GET on the fast path, reusing its keep-alive connections; the mode keeps
the name of the hand-written lean path it replaced, so older results compare). Reported per cell: the median
wall time, the client's CPU time (``time.process_time``, all its threads) and the registry process's CPU time
(from ``/proc``), and the ratio of the fast path to httpx. The 1-minute load average is printed with them.
benchmarks/bulk_http.py compares both with bare urllib3 and curl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest import mock

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_throughput import start_distribution, start_embedded

import soci_lab.remote.ranges as ranges
from soci_lab.remote import RegistryClient
from soci_lab.units import parse_size

MODES = ("httpx", "lean-pool")
WORKERS = 4
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class FileChunk:
    """Writes one chunk at its offset of a file; a pumpable sink (the fast path writes from its own thread)."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.pos = offset

    async def __call__(self, chunk: bytes) -> None:
        await anyio.to_thread.run_sync(self.store_part, memoryview(chunk))

    async def drain(self) -> None:
        return None

    def split_sink(self) -> FileChunk:
        return self

    def pumped(self, n: int) -> None:
        return None

    def hash_part(self, data: memoryview) -> None:
        return None

    def store_part(self, data: memoryview) -> None:
        while data:
            n = os.pwrite(self.fd, data, self.pos)
            data = data[n:]
            self.pos += n


def chunk_list(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + chunk, size) - 1) for lo in range(0, size, chunk)]


async def file_workload(rc: RegistryClient, repo: str, digest: str, size: int, chunk: int, out: Path) -> None:
    todo = chunk_list(size, chunk)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:

        async def worker() -> None:
            while todo:
                lo, hi = todo.pop(0)
                n = await rc.fetch_range_into(repo, digest, lo, hi, FileChunk(fd, lo))
                if n != hi - lo + 1:
                    raise SystemExit(f"short chunk {lo}-{hi}: {n}")

        async with anyio.create_task_group() as tg:
            for _ in range(WORKERS):
                tg.start_soon(worker)
    finally:
        os.close(fd)


async def mem_workload(rc: RegistryClient, repo: str, digest: str, size: int, chunk: int, out: Path) -> None:
    url = rc.blob_url(repo, digest)
    for lo, hi in chunk_list(size, chunk):
        data = await rc.get_content_with_range(url, lo, hi)
        if len(data) != hi - lo + 1:
            raise SystemExit(f"short range {lo}-{hi}")


WORKLOADS: dict[str, Callable[..., Awaitable[None]]] = {"file": file_workload, "mem": mem_workload}


async def one(
    mode: str, url: str, repo: str, digest: str, size: int, chunk: int, workload: str, out: Path, server_pid: int
) -> tuple[float, float, float]:
    """(wall, client CPU, server CPU) seconds of one workload run in ``mode``, with a fresh client."""
    threshold = 1 << 62 if mode == "httpx" else 0
    with mock.patch.object(ranges, "FAST_MIN_BYTES", threshold):
        async with RegistryClient(url) as rc:
            s0, c0, w0 = proc_cpu(server_pid), time.process_time(), time.perf_counter()
            await WORKLOADS[workload](rc, repo, digest, size, chunk, out)
            w1, c1, s1 = time.perf_counter(), time.process_time(), proc_cpu(server_pid)
    return w1 - w0, c1 - c0, s1 - s0


async def bench(url: str, server_pid: int, size: int, chunks: list[int], runs: int, scratch: Path) -> list[dict]:
    repo = "bench/ranges"
    async with RegistryClient(url) as rc:
        desc = await rc.push_blob(repo, os.urandom(size))
    digest = str(desc.digest)
    out = scratch / "out"
    rows = []
    for workload in WORKLOADS:
        for chunk in chunks:
            times: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
            await one("httpx", url, repo, digest, size, chunk, workload, out, server_pid)  # warm up
            for _ in range(runs):
                for mode in MODES:
                    times[mode].append(await one(mode, url, repo, digest, size, chunk, workload, out, server_pid))
            med = {m: [statistics.median(t[i] for t in v) for i in range(3)] for m, v in times.items()}
            row: dict = {"workload": workload, "chunk": chunk, "requests": len(chunk_list(size, chunk))}
            for m in MODES:
                row[m] = {"wall": round(med[m][0], 4), "cpu": round(med[m][1], 4), "server_cpu": round(med[m][2], 4)}
            for m in MODES[1:]:
                row[f"{m}/httpx"] = {
                    k: round(med[m][i] / med["httpx"][i], 3) if med["httpx"][i] else None
                    for i, k in enumerate(("wall", "cpu", "server_cpu"))
                }
            row["load1"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(_line(row), flush=True, file=sys.stderr)
    return rows


def _size(n: int) -> str:
    return f"{n >> 20}MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10}KiB"


def _line(r: dict) -> str:
    h, p = r["httpx"], r["lean-pool"]
    return (
        f"{r['workload']:4s} {_size(r['chunk']):>7s} x{r['requests']:<5d} "
        f"wall s httpx {h['wall']:.3f} fast {p['wall']:.3f} (fast/httpx {r['lean-pool/httpx']['wall']:.2f}) | "
        f"client CPU s httpx {h['cpu']:.3f} fast {p['cpu']:.3f} (fast/httpx {r['lean-pool/httpx']['cpu']:.2f}) | "
        f"server CPU s httpx {h['server_cpu']:.2f} fast {p['server_cpu']:.2f} "
        f"| load {r['load1']}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="64MiB")
    p.add_argument("--chunks", default="8MiB,2MiB,1MiB,512KiB,256KiB,64KiB")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--registry", default="embedded", choices=["embedded", "distribution"])
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    size = parse_size(args.size)
    chunks = [parse_size(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory(prefix="soci-lab-bench-") as tmp:
        scratch = Path(tmp)
        (scratch / "registry").mkdir()
        start = start_embedded if args.registry == "embedded" else start_distribution
        proc, url = start(scratch / "registry")
        try:
            rows = anyio.run(bench, url, proc.pid, size, chunks, args.runs, scratch, backend=args.backend)
        finally:
            proc.terminate()
            proc.wait(10)
    if args.json:
        json.dump(
            {
                "command": " ".join(sys.argv),
                "registry": args.registry,
                "backend": args.backend,
                "size": size,
                "runs": args.runs,
                "rows": rows,
            },
            sys.stdout,
            indent=2,
        )
        print()


if __name__ == "__main__":
    main()
