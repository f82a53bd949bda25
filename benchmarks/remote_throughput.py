"""Blob download throughput through soci_lab.remote vs curl, from the embedded registry and distribution.

Usage (from the repository root)::

    .venv/bin/python benchmarks/remote_throughput.py [--size 256MiB] [--runs 5] [--backend asyncio|trio]
                                                      [--registries embedded,distribution] [--json]

For each registry (both on loopback, each in its own process, started here) one random blob is pushed,
then each run fetches it with ``curl`` and with the client, alternating, in the same process run:

- ``curl -o FILE`` vs ``RegistryClient.fetch_blob(path=FILE)`` (the client also hashes every byte, in a
  worker thread overlapping the download, and renames the file only once it matched its digest): the
  goal is a ratio client/curl >= 0.8;
- for context, ``curl | sha256sum`` (curl made to verify too), and the transport alone: the client's
  ``fetch_range_into`` of the whole blob into a sink that drops the bytes vs ``curl -o /dev/null``.

It prints the median MB/s of each, the ratios, and the 1-minute load average (the registry, curl and the
client share the machine's cores with whatever else runs, so a loaded machine lowers every number).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from soci_lab.oci import Digest
from soci_lab.remote import RegistryClient
from soci_lab.units import parse_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_distribution(root: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed (apt package docker-registry)")
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/v2/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("docker-registry did not start") from None
            time.sleep(0.05)


def start_embedded(root: Path) -> tuple[subprocess.Popen, str]:
    """``soci-lab registry serve`` in its own process (so it does not share the client's GIL)."""
    exe = Path(sys.executable).with_name("soci-lab")
    cmd = [str(exe), "registry", "serve", "--root", str(root), "--port", "0"] if exe.exists() else [
        sys.executable, "-m", "soci_lab.cli", "registry", "serve", "--root", str(root), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        raise SystemExit(f"soci-lab registry serve did not print its URL (got {url!r})")
    return proc, url


def curl(url: str, out: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", out, url], check=True)
    return time.perf_counter() - t0


async def client_to_file(rc: RegistryClient, repo: str, digest: Digest, size: int, out: Path) -> float:
    t0 = time.perf_counter()
    await rc.fetch_blob(repo, digest, size, path=out)
    return time.perf_counter() - t0


async def client_discard(rc: RegistryClient, repo: str, digest: Digest, size: int) -> float:
    """The transport alone: the whole blob through ``fetch_range_into`` into a sink that drops it."""

    async def sink(chunk: bytes) -> None:
        return None

    t0 = time.perf_counter()
    n = await rc.fetch_range_into(repo, digest, 0, size - 1, sink)
    if n != size:
        raise SystemExit(f"short read: {n} of {size}")
    return time.perf_counter() - t0


def curl_sha256(url: str) -> float:
    """``curl URL | sha256sum``: what curl costs when it too must verify the bytes (context, not the goal)."""
    t0 = time.perf_counter()
    subprocess.run(f"curl -sS -f '{url}' | sha256sum > /dev/null", shell=True, check=True)
    return time.perf_counter() - t0


async def bench_one(url: str, size: int, runs: int, scratch: Path) -> dict[str, object]:
    data = os.urandom(size)
    repo = "bench/blob"
    async with RegistryClient(url) as rc:
        desc = await rc.push_blob(repo, data)
        del data
        blob_url = rc.blob_url(repo, desc.digest)
        out_curl, out_client = scratch / "curl.out", scratch / "client.out"
        times: dict[str, list[float]] = {"curl_file": [], "client_file": [], "curl_sha256": [], "curl_null": [],
                                         "client_discard": []}
        curl(blob_url, os.devnull)  # warm the page cache and the registry
        for _ in range(runs):
            times["curl_file"].append(await anyio.to_thread.run_sync(curl, blob_url, str(out_curl)))
            times["client_file"].append(await client_to_file(rc, repo, desc.digest, size, out_client))
            times["curl_sha256"].append(await anyio.to_thread.run_sync(curl_sha256, blob_url))
            times["curl_null"].append(await anyio.to_thread.run_sync(curl, blob_url, os.devnull))
            times["client_discard"].append(await client_discard(rc, repo, desc.digest, size))
            out_curl.unlink(missing_ok=True)
            out_client.unlink(missing_ok=True)
    mbps = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
    return {
        "url": url,
        "size": size,
        "runs": runs,
        "MBps": {k: round(v, 1) for k, v in mbps.items()},
        "MBps_runs": {k: [round(size / t / 1e6, 1) for t in v] for k, v in times.items()},
        "ratio": round(mbps["client_file"] / mbps["curl_file"], 3),
        "ratio_vs_curl_sha256": round(mbps["client_file"] / mbps["curl_sha256"], 3),
        "ratio_transport": round(mbps["client_discard"] / mbps["curl_null"], 3),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="256MiB")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--registries", default="embedded,distribution")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    size = parse_size(args.size)
    results = []
    with tempfile.TemporaryDirectory(prefix="soci-lab-bench-") as tmp:
        scratch = Path(tmp)
        for kind in args.registries.split(","):
            (scratch / kind).mkdir()
            if kind == "embedded":
                proc, url = start_embedded(scratch / kind)
            elif kind == "distribution":
                proc, url = start_distribution(scratch / kind)
            else:
                raise SystemExit(f"unknown registry {kind!r}")
            try:
                res = anyio.run(bench_one, url, size, args.runs, scratch, backend=args.backend)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            res["registry"] = kind
            res["backend"] = args.backend
            results.append(res)
            if not args.json:
                m = res["MBps"]
                print(f"{kind:12s} {args.backend:7s} size={size} runs={args.runs}: client (verified, to file) "
                      f"{m['client_file']} MB/s vs curl -o file {m['curl_file']} MB/s: ratio {res['ratio']} "
                      f"[curl|sha256sum {m['curl_sha256']} MB/s, ratio {res['ratio_vs_curl_sha256']}; "
                      f"unverified: client {m['client_discard']} vs curl -o /dev/null {m['curl_null']} MB/s, "
                      f"ratio {res['ratio_transport']}; load {res['loadavg_1min']}]", flush=True)
    if args.json:
        json.dump({"command": " ".join(sys.argv), "results": results}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
