"""Blob download throughput on loopback: the embedded registry vs CNCF distribution, each read by curl
and by the other clients listed in ``CLIENTS``, in the same run.

One blob of ``--size`` incompressible bytes (default 256 MiB) is pushed to both registries; then, for
``--reps`` rounds (interleaved, in a rotating order, so every pair sees the same machine load), each
client downloads it in full from each registry and the median of each pair is reported, with the ratios
that matter:

- server vs server: embedded / distribution, per client (goal: close to 1 with curl);
- client vs curl: each client / curl, per server (the registry client's goal is >= 0.8).

The embedded registry runs as its own process (``soci-lab registry serve``), as distribution does, so an
in-process Python client does not share a GIL with it. A third contender is one more function in
``CLIENTS``: ``fetch(url, size) -> seconds`` that downloads ``url`` completely and checks the size.

    .venv/bin/python benchmarks/netlab_throughput.py [--size 256MiB] [--reps 7] [--clients curl,httpx] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from soci_lab.netlab import DistributionRegistry
from soci_lab.units import format_size, parse_size

#: fetch(url, expected_size) -> seconds taken to download the whole body
Fetcher = Callable[[str, int], float]
CLIENTS: dict[str, Fetcher] = {}


def contender(name: str) -> Callable[[Fetcher], Fetcher]:
    """Register a client under ``name`` (a decorator)."""

    def add(fn: Fetcher) -> Fetcher:
        CLIENTS[name] = fn
        return fn

    return add


@contender("curl")
def fetch_curl(url: str, size: int) -> float:
    """curl to /dev/null; its own ``time_total`` (process start excluded, as for in-process clients)."""
    out = subprocess.run(
        ["curl", "-sS", "-o", os.devnull, "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if int(float(out[0])) != size:
        raise RuntimeError(f"curl got {out[0]} bytes of {size} from {url}")
    return float(out[1])


@contender("httpx")
def fetch_httpx(url: str, size: int) -> float:
    """Plain httpx streaming with 1 MiB reads (the floor a Python client stands on)."""
    with httpx.Client(timeout=120) as c:
        t0 = time.perf_counter()
        n = 0
        with c.stream("GET", url) as r:
            r.raise_for_status()
            for chunk in r.iter_raw(1 << 20):
                n += len(chunk)
        elapsed = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"httpx got {n} bytes of {size} from {url}")
    return elapsed


def make_blob(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256 digest."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return f"sha256:{h.hexdigest()}"


def push(base: str, repo: str, path: Path, digest: str) -> None:
    """POST + streamed PUT (works with both registries)."""

    def body() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(4 << 20):
                yield chunk

    with httpx.Client(base_url=base, timeout=300) as c:
        location = c.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        sep = "&" if "?" in location else "?"
        headers = {"Content-Length": str(path.stat().st_size), "Content-Type": "application/octet-stream"}
        r = c.put(f"{location}{sep}digest={digest}", content=body(), headers=headers)
        r.raise_for_status()


class EmbeddedProcess:
    """``soci-lab registry serve`` in a child process (a context manager yielding its URL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        code = "import sys; from soci_lab.cli import main; sys.exit(main())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "registry", "serve", "--root", str(self.root), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, of: {', '.join(CLIENTS)}")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    size = parse_size(a.size)
    clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown or "curl" not in clients:
        ap.error(f"--clients must include curl and only known clients ({', '.join(CLIENTS)})")
    with tempfile.TemporaryDirectory(prefix="soci-lab-bench-") as tmp:
        work = Path(tmp)
        blob = work / "blob.bin"
        digest = make_blob(blob, size)
        with EmbeddedProcess(work / "embedded") as embedded_url, DistributionRegistry(work / "dist") as dist:
            servers = {"embedded": embedded_url, "distribution": dist.url}
            for url in servers.values():
                push(url, "bench/blob", blob, digest)
            blob.unlink()
            urls = {name: f"{url}/v2/bench/blob/blobs/{digest}" for name, url in servers.items()}
            for url in urls.values():  # warm-up: page cache, connections, code paths
                fetch_curl(url, size)
            times: dict[tuple[str, str], list[float]] = {(s, c): [] for s in servers for c in clients}
            pairs = [(s, c) for s in urls for c in clients]
            for rep in range(a.reps):
                # rotate the order each round so no pair is always first (or last) after a pause
                for server, client in pairs[rep % len(pairs) :] + pairs[: rep % len(pairs)]:
                    times[(server, client)].append(CLIENTS[client](urls[server], size))
    mbps = {key: size / statistics.median(ts) / 1e6 for key, ts in times.items()}
    result = {
        "size": size,
        "reps": a.reps,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "throughput_MBps": {f"{s}/{c}": round(v, 1) for (s, c), v in mbps.items()},
        "embedded_over_distribution": {c: round(mbps[("embedded", c)] / mbps[("distribution", c)], 3) for c in clients},
        "client_over_curl": {
            f"{s}/{c}": round(mbps[(s, c)] / mbps[(s, "curl")], 3) for s in servers for c in clients if c != "curl"
        },
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    load = os.getloadavg()[0]
    print(f"blob {format_size(size)}, {a.reps} repetitions, median throughput (MB/s = 10^6 bytes/s), load {load:.1f}")
    print(f"{'server':<14}" + "".join(f"{c:>14}" for c in clients))
    for s in servers:
        print(f"{s:<14}" + "".join(f"{mbps[(s, c)]:>14.1f}" for c in clients))
    ratios = result["embedded_over_distribution"]
    print("embedded / distribution: " + ", ".join(f"{c} {v:.3f}" for c, v in ratios.items()))
    if result["client_over_curl"]:
        print("client / curl:           " + ", ".join(f"{k} {v:.3f}" for k, v in result["client_over_curl"].items()))


if __name__ == "__main__":
    main()
