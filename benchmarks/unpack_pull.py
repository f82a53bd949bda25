"""Eager pulls of one image from the real distribution registry on loopback: parallel vs sequential vs peers.

    .venv/bin/python benchmarks/unpack_pull.py [--layers usr/lib/python3.11 usr/share/locale ...]
        [--chunk 8mb] [--unpacks 2] [--out FILE.json]

Builds an image (one layer per directory given, ``soci_lab.images.build_image``, gzip) and pushes it to
Debian's ``docker-registry`` (CNCF distribution) started on a free loopback port, then pulls it cold
(fresh state directories; the registry's files stay in the page cache, as they would on a fast network):

* ``soci_lab-parallel``  — :class:`ParallelPuller`, chunked ranged GETs, ``--unpacks`` layers at once
* ``soci_lab-sequential`` — :class:`SequentialPuller` (containerd 1.6: ≤ 3 downloads, in-order unpack)
* ``skopeo+umoci``       — ``skopeo copy docker://… oci:…`` then ``umoci raw unpack`` (when installed)
* ``network``            — every blob fetched once with the same client and thrown away (the network bound)
* ``decompress``         — every blob inflated (ISA-L) on all cores, no files (the decompression bound)
* ``disk-writes``        — GNU tar extracting the already-inflated layer tars, one per core at once
  (the file-creation bound); ``parallel_over_bound`` divides by the slowest of the three bounds

``ctr images pull`` (containerd 1.6) is not run: containerd is not installed on this machine kind.
Wall and CPU seconds (children included) are printed and written to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio

from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.events import EventRecorder
from soci_lab.images import build_image
from soci_lab.netlab import DistributionRegistry
from soci_lab.remote import RegistryClient
from soci_lab.unpack import ApplyOptions, ParallelPuller, RegistryBlobSource, SequentialPuller, image_layer_specs
from soci_lab.unpack.decompress import gzip_chunks

DEFAULT_LAYERS = [
    "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages",
    "/usr/share/locale",
    "/usr/share/doc",
    "/usr/include",
    "/usr/share/perl",
    "/usr/lib/gcc",
    "/usr/share/man",
]


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="*", default=[p for p in DEFAULT_LAYERS if os.path.isdir(p)])
    ap.add_argument("--chunk", default="8mb")
    ap.add_argument("--unpacks", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", default="/tmp/soci-lab-bench-pull")
    ap.add_argument("--skip", nargs="*", default=[], help="modes to skip")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each soci_lab mode (best kept)")
    ap.add_argument("--file-workers", type=int, default=0, help="ApplyOptions.file_workers for soci_lab")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, dict[str, float]] = {}

    with DistributionRegistry(root=work / "registry") as reg:
        ref = f"{reg.host_port}/bench/eager:latest"
        t0 = time.perf_counter()
        built = build_image(args.layers, ref, insecure=True)
        build_s = time.perf_counter() - t0
        comp = sum(layer.descriptor.size for layer in built.layers)
        uncomp = sum(layer.uncompressed_size for layer in built.layers)
        entries = sum(layer.entries for layer in built.layers)
        print(
            f"image: {len(built.layers)} layers, {comp / 1e6:.0f} MB gzip, {uncomp / 1e6:.0f} MB tar, "
            f"{entries} entries (built and pushed in {build_s:.0f} s)"
        )

        async def resolve(client: RegistryClient):  # type: ignore[no-untyped-def]
            resolved = await client.resolve_image(ref)
            return resolved, image_layer_specs(resolved.layers, resolved.config.diff_ids)

        def run(name: str, coro_fn) -> None:  # type: ignore[no-untyped-def]
            if name in args.skip:
                return
            for old in ("parallel", "sequential", "skopeo"):  # earlier runs' trees, removed outside the timing
                shutil.rmtree(work / old, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            c0, t = cpu(), time.perf_counter()
            extra = coro_fn()
            got = {"wall_s": time.perf_counter() - t, "cpu_s": cpu() - c0, **(extra or {})}
            print(f"{name:<22}{got['wall_s']:>8.2f} s wall {got['cpu_s']:>8.2f} s cpu")
            if name not in results or got["wall_s"] < results[name]["wall_s"]:
                results[name] = got

        def pull(mode: str):  # type: ignore[no-untyped-def]
            def go() -> dict[str, float]:
                root = work / mode
                rec = EventRecorder(strategy=mode)
                opts = ApplyOptions(file_workers=args.file_workers)

                async def amain() -> None:
                    async with RegistryClient(reg.host_port, insecure=True) as client:
                        resolved, specs = await resolve(client)
                        source = RegistryBlobSource(client, resolved.reference.repository)
                        mounts = [root / "snapshots" / str(i) / "fs" for i in range(len(specs))]
                        key = str(resolved.manifest_descriptor.digest)
                        if mode == "parallel":
                            cfg = ParallelPullUnpackConfig(
                                enable=True,
                                concurrent_download_chunk_size=args.chunk,
                                max_concurrent_downloads=50,
                                max_concurrent_downloads_per_image=10,
                                max_concurrent_unpacks=max(args.unpacks, 1),
                                max_concurrent_unpacks_per_image=max(args.unpacks, 1),
                            )
                            async with ParallelPuller(
                                root / "state", source, config=cfg, recorder=rec, options=opts
                            ) as p:
                                await p.pull(key, specs, mounts)
                        else:
                            seq = SequentialPuller(root / "state", source, recorder=rec, options=opts)
                            await seq.pull(key, specs, mounts)

                anyio.run(amain)
                df = rec.to_frame()
                apply = df[df.kind == "apply"]
                return {"apply_busy_s": float((apply.t_end - apply.t_start).sum())}

            return go

        for _ in range(args.repeat):  # alternate, keep the best of each (the machine may be shared)
            run("soci_lab-parallel", pull("parallel"))
            run("soci_lab-sequential", pull("sequential"))

        def network() -> None:
            async def amain() -> None:
                async with RegistryClient(reg.host_port, insecure=True) as client:
                    resolved, specs = await resolve(client)
                    source = RegistryBlobSource(client, resolved.reference.repository)

                    async def sink(_: bytes) -> None:
                        return None

                    async with anyio.create_task_group() as tg:
                        for s in specs:
                            tg.start_soon(source.fetch, s, sink)

            anyio.run(amain)

        run("network", network)

        def decompress() -> None:
            blobs = sorted((work / "registry").rglob("blobs/sha256/*/*/data"), key=lambda p: -p.stat().st_size)
            gz = [b for b in blobs if b.open("rb").read(2) == b"\x1f\x8b"]
            with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                list(pool.map(lambda b: sum(len(c) for c in gzip_chunks(b, threading.Event())), gz))

        run("decompress", decompress)

        # the disk-writes bound: GNU tar creating the same files from already-decompressed layer tars,
        # as many extractions at once as there are cores
        tars = work / "tars"
        tars.mkdir()
        blobs = [b for b in (work / "registry").rglob("blobs/sha256/*/*/data") if b.open("rb").read(2) == b"\x1f\x8b"]
        for i, b in enumerate(blobs):
            with open(tars / f"{i}.tar", "wb") as f:
                for chunk in gzip_chunks(b, threading.Event()):
                    f.write(chunk)

        def disk_writes() -> None:
            out = work / "parallel"  # removed before the next run

            def one(t: Path) -> None:
                d = out / t.stem
                d.mkdir(parents=True)
                subprocess.run(["tar", "-xf", str(t), "-C", str(d), "--numeric-owner"], check=True)

            with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                list(pool.map(one, sorted(tars.iterdir())))

        run("disk-writes(gnu tar -x)", disk_writes)

        if shutil.which("skopeo") and shutil.which("umoci"):

            def skopeo_umoci() -> None:
                d = work / "skopeo"
                d.mkdir()
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        f"docker://{ref}",
                        f"oci:{d / 'oci'}:latest",
                    ],
                    check=True,
                )
                subprocess.run(
                    ["umoci", "raw", "unpack", "--image", f"{d / 'oci'}:latest", str(d / "rootfs")], check=True
                )

            run("skopeo+umoci", skopeo_umoci)

    out = {
        "layers": args.layers,
        "compressed_bytes": comp,
        "uncompressed_bytes": uncomp,
        "entries": entries,
        "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "results": results,
    }
    if "soci_lab-parallel" in results and "soci_lab-sequential" in results:
        bound = max(results.get(k, {}).get("wall_s", 0) for k in ("network", "decompress", "disk-writes(gnu tar -x)"))
        out["parallel_over_sequential"] = (
            results["soci_lab-parallel"]["wall_s"] / results["soci_lab-sequential"]["wall_s"]
        )
        out["parallel_over_bound"] = results["soci_lab-parallel"]["wall_s"] / bound if bound else None
        if "skopeo+umoci" in results:
            out["parallel_over_skopeo_umoci"] = (
                results["soci_lab-parallel"]["wall_s"] / results["skopeo+umoci"]["wall_s"]
            )
    print(json.dumps({k: v for k, v in out.items() if k.startswith("parallel_")}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
