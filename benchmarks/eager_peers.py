"""Eager pulls against their peers, cold, from the real distribution registry on loopback, in one run.

    .venv/bin/python benchmarks/eager_peers.py [--size quick|full] [--reps 3] [--cache DIR] [--json]

Why: issue 5 asks whether soci_lab's parallel eager pull beats containerd 1.6 (goal: at most 0.7x its
time) and how close it gets to the machine's physical bound (goal: within 1.3x). This script measures every
contender on the same image, served by the same Debian ``docker-registry`` (CNCF distribution), in
interleaved repetitions, so all of them see the same machine load:

* ``soci_lab-parallel``   — :class:`soci_lab.unpack.ParallelPuller` (whole-layer GETs, 10 at once; one unpack
  per core);
* ``soci_lab-sequential`` — :class:`soci_lab.unpack.SequentialPuller` (containerd-1.6-like);
* ``containerd``          — ``ctr images pull --plain-http`` against a containerd 1.6 (Debian bookworm's
  ``containerd``) started here with its own root, state dir, socket and a minimal config, a fresh one per
  repetition (cold content store). ``ctr images pull`` fetches **and unpacks** into the overlayfs
  snapshotter, so this is pull+unpack — the same work the soci_lab modes do;
* ``skopeo+umoci``        — ``skopeo copy docker://… oci:…`` then ``umoci raw unpack``;
* the bound's parts, each measured here: ``network`` (``curl -o /dev/null`` of every layer blob at once),
  ``decompress`` (``pigz -dc`` of every layer, as many at once as there are cores), ``decompress_isal``
  (the same with ISA-L's ``python -m isal.igzip -d -c``, ~3x faster here; the bound takes the faster of the
  two), ``hash`` (sha256 of every blob and every decompressed tar — the compressed digest and the diffID
  every verifying puller computes — with OpenSSL through :mod:`hashlib`, as many at once as there are
  cores; coreutils ``sha256sum`` here runs ~8x slower, without SHA-NI) and two disk-write
  rates: ``disk`` (the image's uncompressed bytes streamed into one file and ``fdatasync``-ed) and
  ``disk_tree`` (GNU ``tar -xf`` of the layers' already-decompressed tars, from the page cache, as many at
  once as there are cores — writing the image's *files*). ``bound_s`` is the slowest of network, decompress
  and ``disk``; ``bound_tree_s`` the slowest of network, decompress and ``disk_tree``.

Every timing also records the CPU it used (``cpu_s``: user + system of this process and of its waited-for
children — the apply workers, curl, pigz, tar, containerd and ctr; not the registry's). The parts are each
timed with both cores to themselves, but a pull needs them all at once on the same cores, so
``bound_cpu_s`` = (CPU of network + faster decompress + hash + disk_tree) / cores is a second lower bound: a
pull doing at least that work cannot finish sooner even if it kept every core busy.

And every timing records the **whole machine's** busy CPU over it (``machine_cpu_s``, from ``/proc/stat``):
this counts what the per-process figures miss — the registry serving the GETs (on loopback the network part
costs CPU on both ends: curl ~0.2 CPU-s, the registry more), kernel threads writing pages back, containerd's
daemon — and shows how busy a contender kept the cores. ``files`` is the ``disk_tree`` timing up to the end
of the ``tar -xf`` runs (before ``sync``: the files in the page cache, as every pull leaves them), and
``bound_machine_cpu_s`` = (machine CPU of network + faster decompress + hash + files) / cores: the work the
machine must do for a verified pull, whoever does it, spread perfectly over the cores.

Every timing writes onto a **new ext4 of its own** (``--fs fresh``, the default; :mod:`benchmarks.freshfs`, made
without a journal like the root one, on a loop device that reads and writes its backing file with
``O_DIRECT``), so no contender inherits another's file-system state. Measured 2026-11-28 00:50, six minutes
after 240,000 files were deleted on the root file system: ``tar -xf`` of one 24,000-entry layer took 2.60 s
there and 0.62 s on a fresh ext4; streaming 1.2 GB with ``fdatasync`` 1.57 s on the root, 0.90-1.11 s on
the fresh one with direct I/O, 1.07-4.34 s through a buffered loop device (each page copied once more into
the root's page cache). The image file, mkfs, mount and unmount are outside the timing. ``--fs root`` times
on the cache directory's file system instead; there trees are not deleted between timings (``--cleanup
defer``, the default): each contender's output is renamed
into ``trash/`` and everything is removed after the last repetition. This machine's root file system is ext4
**without a journal**, where the inode allocator skips inodes freed in the last 60 s (300 s more while their
inode table block is dirty: ``recently_deleted()`` in ``fs/ext4/ialloc.c``), rescanning them from the start
of the group on every create. Right after a 40,000-file tree is deleted, creating a file near it costs
100-340 us of kernel time instead of ~17 us, so deleting the previous contender's tree before a timing charged
whoever ran next with that deletion (the 13-34 s spread of earlier runs). ``--cleanup between`` keeps the old
behaviour (delete before each contender, outside the timing) to measure that case.

Images (built once with :func:`soci_lab.images.build_image` into an OCI layout under ``--cache`` and copied
into the registry each run): ``tiny`` = 8 layers of 0.5 MB (for the suite's test); ``quick`` = 8
generated layers of 5 MB; ``full`` = the ``/usr`` trees of
``unpack_pull.py`` (one layer each) plus one large generated layer, >= 1 GB uncompressed in >= 8 layers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import freshfs  # benchmarks/ is on sys.path: this file runs as a script

from soci_lab.config import ParallelPullUnpackConfig
from soci_lab.images import build_image
from soci_lab.images.copy import copy_image
from soci_lab.netlab import DistributionRegistry
from soci_lab.oci import OCILayout
from soci_lab.remote import RegistryClient
from soci_lab.unpack import ParallelPuller, RegistryBlobSource, SequentialPuller, image_layer_specs

FULL_DIRS = [
    "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages",
    "/usr/share/locale",
    "/usr/share/doc",
    "/usr/include",
    "/usr/share/perl",
    "/usr/lib/gcc",
    "/usr/share/man",
]
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"config", b"library", b"python", b"layer", b"span", b"\n"]
DEFAULT_CACHE = Path(os.environ.get("SOCI_LAB_BENCH_DIR", "/tmp/soci_lab_bench")) / "eager"


def _cpu_s() -> float:
    """User + system CPU of this process and of its waited-for children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_cpu_s() -> float:
    """CPU-seconds all cores of the machine have been busy since boot (``/proc/stat``: user, nice, system,
    irq, softirq; not idle, I/O wait or steal). Unlike :func:`_cpu_s` it counts what a contender makes others
    do: the registry serving its GETs, kernel threads writing its pages back, containerd's daemon."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def ensure_tools() -> dict[str, str | None]:
    """Install the peers that are missing (Debian packages; idempotent) and say where each one is."""
    need = {"containerd": "containerd", "ctr": "containerd", "skopeo": "skopeo", "umoci": "umoci",
            "pigz": "pigz", "curl": "curl", "docker-registry": "docker-registry"}
    missing = sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})
    if missing and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", *missing],
                       env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {tool: shutil.which(tool) for tool in need}


def gen_tree(root: Path, mb: float, seed: int, big_files: int = 0) -> Path:
    """Write ``mb`` MB of files under ``root``: ``big_files`` large ones (half random, half text-like), the
    rest small (lognormal sizes, alternately random and text-like) in 40 directories."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    budget = int(mb * 1_000_000)
    if big_files:
        per = budget // 2 // big_files
        for i in range(big_files):
            with open(root / f"big{i}.bin", "wb") as f:
                f.write(rng.randbytes(per // 2))
                text = b" ".join(rng.choice(WORDS) for _ in range(200_000))
                left = per - per // 2
                while left > 0:
                    f.write(text[:left])
                    left -= len(text)
        budget -= per * big_files
    i = 0
    while budget > 0:
        size = min(budget, int(rng.lognormvariate(9, 1.6)) + 1)
        d = root / f"d{i % 40}"
        d.mkdir(exist_ok=True)
        text = b" ".join(rng.choice(WORDS) for _ in range(size // 6 + 1))[:size]
        data = rng.randbytes(size) if i % 2 else text
        (d / f"f{i:06d}").write_bytes(data)
        budget -= size
        i += 1
    return root


def ensure_image(size: str, cache: Path) -> Path:
    """The benchmark image as an OCI layout under ``cache`` (built once; reused while it exists)."""
    layout = cache / f"{size}-layout"
    if (layout / "index.json").exists():
        return layout
    trees = cache / f"{size}-trees"
    shutil.rmtree(trees, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)
    if size in ("tiny", "quick"):
        dirs = [gen_tree(trees / f"l{i}", 0.5 if size == "tiny" else 5, seed=i) for i in range(8)]
    else:
        dirs = [d for d in FULL_DIRS if os.path.isdir(d)]
        dirs.append(str(gen_tree(trees / "large", 450, seed=99, big_files=4)))
    build_image(dirs, f"oci:{layout}:latest")
    shutil.rmtree(trees, ignore_errors=True)
    return layout


def image_stats(layout: Path) -> dict[str, int]:
    """Layer count, compressed and uncompressed bytes of the layout's image (from its manifest)."""
    lay = OCILayout(layout)
    idx = json.loads((layout / "index.json").read_text())
    man = json.loads(lay.blob_path(idx["manifests"][0]["digest"]).read_bytes())
    comp = sum(d["size"] for d in man["layers"])
    uncomp = 0
    for d in man["layers"]:
        out = subprocess.run(["pigz", "-dc", str(lay.blob_path(d["digest"]))], stdout=subprocess.PIPE,
                             check=True).stdout
        uncomp += len(out)
    return {"layers": len(man["layers"]), "compressed_bytes": comp, "uncompressed_bytes": uncomp,
            "layer_digests": [d["digest"] for d in man["layers"]]}  # type: ignore[dict-item]


class Containerd:
    """A containerd started for one pull: own root, state, socket and a minimal config under ``base``."""

    def __init__(self, base: Path, trash: Path | None = None) -> None:
        self.base = base
        self.trash = trash
        self.sock = base / "containerd.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Containerd:
        self.base.mkdir(parents=True, exist_ok=True)
        cfg = self.base / "config.toml"
        cfg.write_text(
            "version = 2\n"
            f'root = "{self.base / "root"}"\n'
            f'state = "{self.base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", '
            '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
            '"io.containerd.snapshotter.v1.aufs"]\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{self.base / "ttrpc.sock"}"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
        )
        log = open(self.base / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sock.exists() and subprocess.run(
                ["ctr", "--address", str(self.sock), "version"], capture_output=True
            ).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"containerd did not start; see {self.base / 'containerd.log'}")

    def pull(self, ref: str) -> None:
        subprocess.run(["ctr", "--address", str(self.sock), "images", "pull", "--plain-http", ref],
                       check=True, stdout=subprocess.DEVNULL)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # snapshots are overlayfs-free directories until mounted; nothing of ours stays mounted
        if self.trash is not None and self.base.exists():
            self.trash.mkdir(parents=True, exist_ok=True)
            os.rename(self.base, self.trash / f"containerd-{time.monotonic_ns()}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def skopeo_umoci(ref: str, dest: Path) -> None:
    """``skopeo copy`` of ``ref`` (plain HTTP) into an OCI layout under ``dest``, then ``umoci raw unpack``."""
    dest.mkdir(parents=True)
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{dest / 'oci'}:latest"], check=True)
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{dest / 'oci'}:latest", str(dest / "rootfs")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def decompress_all(blobs: list[Path], argv: list[str], at_once: int | None = None) -> None:
    """``argv + [blob]`` (e.g. ``pigz -dc``) for every blob into /dev/null, ``at_once`` (default: cores) at a
    time, largest first."""
    def one(p: Path) -> None:
        subprocess.run([*argv, str(p)], stdout=subprocess.DEVNULL, check=True)

    with ThreadPoolExecutor(at_once or os.cpu_count() or 2) as pool:
        list(pool.map(one, sorted(blobs, key=lambda p: -p.stat().st_size)))


def extract_all(tars: list[Path], root: Path, at_once: int | None = None) -> None:
    """GNU ``tar -xf`` of every tar into ``root/<its stem>``, ``at_once`` (default: cores) at a time, largest
    first."""
    def one(t: Path) -> None:
        d = root / t.stem
        d.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(t), "-C", str(d)], check=True, stderr=subprocess.DEVNULL)

    with ThreadPoolExecutor(at_once or os.cpu_count() or 2) as pool:
        list(pool.map(one, sorted(tars, key=lambda p: -p.stat().st_size)))


def soci_pull(host_port: str, repo_ref: str, mode: str, root: Path) -> None:
    """One soci_lab eager pull of ``repo_ref`` into ``root`` (``parallel`` or ``sequential``)."""
    ref = f"{host_port}/{repo_ref}"
    cpus = os.cpu_count() or 2

    async def amain() -> None:
        async with RegistryClient(host_port, insecure=True) as client:
            resolved = await client.resolve_image(ref)
            specs = image_layer_specs(resolved.layers, resolved.config.diff_ids)
            source = RegistryBlobSource(client, resolved.reference.repository)
            mounts = [root / "snapshots" / str(i) / "fs" for i in range(len(specs))]
            key = str(resolved.manifest_descriptor.digest)
            if mode == "parallel":
                # whole-layer downloads (upstream's default chunk size): on loopback the network is not what
                # limits, and only a layer downloaded front to back can be applied while it downloads
                # (soci_lab.slotqueue). 8 MiB chunks through httpx and the event loop (when the lean path
                # began at 16 MiB): 4.74 s / 8.14 CPU-s against 4.12 s / 7.15 CPU-s whole; on pooled lean
                # connections (FAST_MIN_BYTES is 512 KiB since) 1.39 s against 1.26 s whole on a 161 MB
                # image (benchmarks/lean_pull.py, 2026-11-28)
                cfg = ParallelPullUnpackConfig(
                    enable=True, concurrent_download_chunk_size="", max_concurrent_downloads=50,
                    max_concurrent_downloads_per_image=10, max_concurrent_unpacks=cpus,
                    max_concurrent_unpacks_per_image=cpus,
                )
                async with ParallelPuller(root / "state", source, config=cfg) as p:
                    await p.pull(key, specs, mounts)
            else:
                await SequentialPuller(root / "state", source).pull(key, specs, mounts)

    anyio.run(amain)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "quick", "full"], default="quick")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--skip", nargs="*", default=[], help="contenders to skip")
    ap.add_argument("--cleanup", choices=["defer", "between"], default="defer",
                    help="defer: remove every tree after the last timing (default); between: before each contender")
    ap.add_argument("--fs", choices=["fresh", "root"], default="fresh",
                    help="fresh: every timing on a new ext4 (loop device, direct I/O; the default where loop "
                    "devices work); root: the cache directory's file system, whatever state earlier deletes left")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.fs == "fresh" and not freshfs.available():
        print("no loop devices or mkfs.ext4 here: timing on the root file system", file=sys.stderr)
        a.fs = "root"
    tools = ensure_tools()
    a.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    layout = ensure_image(a.size, a.cache)
    build_s = time.perf_counter() - t0
    stats = image_stats(layout)
    digests = stats.pop("layer_digests")
    work = Path(tempfile.mkdtemp(prefix="eager-peers-", dir=a.cache))
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    machine_cpus: dict[str, list[float]] = {}
    trash = work / "trash" if a.cleanup == "defer" else None
    try:
        with DistributionRegistry(root=work / "registry") as reg:
            repo_ref = "bench/eager:latest"
            copy_image(f"oci:{layout}:latest", f"{reg.host_port}/{repo_ref}", insecure=True)
            ref = f"{reg.host_port}/{repo_ref}"
            blob_urls = [f"{reg.url}/v2/bench/eager/blobs/{d}" for d in digests]
            lay = OCILayout(layout)
            blobs = [lay.blob_path(d) for d in digests]

            out_root = [work]  # where the current timing writes: work/, or the fresh ext4 mounted for it

            def fresh(name: str) -> Path:
                """A contender's output directory; the loop removed earlier runs' trees before the timing."""
                return out_root[0] / name

            def c_parallel() -> None:
                soci_pull(reg.host_port, repo_ref, "parallel", fresh("parallel"))

            def c_sequential() -> None:
                soci_pull(reg.host_port, repo_ref, "sequential", fresh("sequential"))

            def c_skopeo() -> None:
                skopeo_umoci(ref, fresh("skopeo"))

            def c_network() -> None:
                procs = [subprocess.Popen(["curl", "-sf", "-o", os.devnull, u]) for u in blob_urls]
                if any(p.wait() for p in procs):
                    raise RuntimeError("curl failed")

            def c_decompress() -> None:
                decompress_all(blobs, ["pigz", "-dc"])

            def c_decompress_isal() -> None:
                def one(p: Path) -> None:
                    subprocess.run([sys.executable, "-m", "isal.igzip", "-d", "-c", str(p)],
                                   stdout=subprocess.DEVNULL, check=True)

                with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                    list(pool.map(one, sorted(blobs, key=lambda p: -p.stat().st_size)))

            def c_hash() -> None:
                def one(p: Path) -> None:
                    h = hashlib.sha256()
                    with open(p, "rb", buffering=0) as f:
                        while block := f.read(1 << 20):
                            h.update(block)  # releases the GIL: the threads hash on every core

                files = [*blobs, *tars.iterdir()]
                with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                    list(pool.map(one, sorted(files, key=lambda p: -p.stat().st_size)))

            def c_disk() -> None:
                # on the root file system whatever --fs says: one big file does not meet the inode allocator's
                # history, and the fresh loop device's direct I/O writes back at ~300 MB/s (1.2 GB: 3.6-4.4 s)
                # where the root file system's own write-back reaches ~850 MB/s (1.3-1.6 s); a bound takes the
                # faster path the machine has
                path = work / "disk.bin"
                block = os.urandom(4 << 20)
                left = stats["uncompressed_bytes"]
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    while left > 0:
                        left -= os.write(fd, block[: min(left, len(block))])
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                    path.unlink()

            tars = work / "tars"
            tars.mkdir()
            for i, b in enumerate(blobs):  # decompressed once, outside any timing; stays in the page cache
                with open(tars / f"{i}.tar", "wb") as out:
                    subprocess.run(["pigz", "-dc", str(b)], stdout=out, check=True)

            def c_disk_tree() -> None:
                root = fresh("tree")

                t = time.perf_counter()
                m = _machine_cpu_s()
                extract_all(list(tars.iterdir()), root)
                # the files alone (in the page cache, as a pull leaves them): recorded as the "files" part
                c_disk_tree.files = (time.perf_counter() - t, _machine_cpu_s() - m)  # type: ignore[attr-defined]
                subprocess.run(["sync", "-f", str(root)], check=True)  # as much as disk (fdatasync) pays

            contenders = {
                "soci_lab-parallel": c_parallel,
                "soci_lab-sequential": c_sequential,
                "network": c_network,
                "decompress": c_decompress,
                "decompress_isal": c_decompress_isal,
                "hash": c_hash,
                "disk": c_disk,
                "disk_tree": c_disk_tree,
            }
            if tools["containerd"] and tools["ctr"]:
                def c_containerd() -> None:
                    with Containerd(out_root[0] / "containerd", trash if a.fs == "root" else None) as cd:
                        t = time.perf_counter()
                        m = _machine_cpu_s()
                        cd.pull(ref)
                        c_containerd.last = time.perf_counter() - t  # type: ignore[attr-defined]
                        c_containerd.machine = _machine_cpu_s() - m  # type: ignore[attr-defined]

                contenders["containerd"] = c_containerd
            if tools["skopeo"] and tools["umoci"]:
                contenders["skopeo+umoci"] = c_skopeo
            for name in a.skip:
                contenders.pop(name, None)
            c_network()  # warm-up: registry files into the page cache, code paths loaded
            for rep in range(a.reps):
                names = list(contenders)
                names = names[rep % len(names):] + names[: rep % len(names)]
                for name in names:
                    for old in ("parallel", "sequential", "skopeo", "tree"):  # outside the timing
                        if not (work / old).exists():
                            continue
                        if trash is not None:
                            trash.mkdir(exist_ok=True)
                            os.rename(work / old, trash / f"{old}-{rep}-{name}")
                        else:
                            shutil.rmtree(work / old)
                    subprocess.run(["sync"], check=True)
                    with contextlib.ExitStack() as stack:
                        if a.fs == "fresh":
                            out_root[0] = stack.enter_context(freshfs.fresh_ext4(work / "fs", "8G", direct_io=True))
                        cpu0 = _cpu_s()
                        machine0 = _machine_cpu_s()
                        t = time.perf_counter()
                        contenders[name]()
                        took = time.perf_counter() - t
                        machine = _machine_cpu_s() - machine0
                        cpu = _cpu_s() - cpu0
                        out_root[0] = work
                    if name == "containerd":  # the daemon's start and stop are not the pull
                        took = c_containerd.last  # type: ignore[attr-defined]
                        machine = c_containerd.machine  # type: ignore[attr-defined]
                    times.setdefault(name, []).append(took)
                    cpus.setdefault(name, []).append(cpu)
                    machine_cpus.setdefault(name, []).append(machine)
                    if name == "disk_tree":
                        files_s, files_machine = c_disk_tree.files  # type: ignore[attr-defined]
                        times.setdefault("files", []).append(files_s)
                        machine_cpus.setdefault("files", []).append(files_machine)
                    print(f"rep {rep} {name:22s} {took:7.2f} s  {cpu:6.2f} CPU-s  machine {machine:6.2f} CPU-s",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    med_machine = {k: statistics.median(v) for k, v in machine_cpus.items()}
    dec = min((k for k in ("decompress", "decompress_isal") if k in med), key=med.get, default=None)  # type: ignore[arg-type]
    cpu_parts = {k: med_cpu[k] for k in ("network", dec or "decompress", "hash", "disk_tree") if k in med_cpu}
    cores = os.cpu_count() or 1
    bound_cpu = sum(cpu_parts.values()) / cores if len(cpu_parts) == 4 else None
    # the same with every part's whole-machine CPU (the registry's for the network part; the files without
    # their write-back, as a pull leaves them): what the machine must spend, whoever spends it
    machine_parts = {k: med_machine[k] for k in ("network", dec or "decompress", "hash", "files") if k in med_machine}
    bound_machine = sum(machine_parts.values()) / cores if len(machine_parts) == 4 else None
    # the faster decompressor stands for "decompression on the available cores"
    parts = {k: med[k] for k in ("network", dec or "decompress", "disk") if k in med}
    bound = max(parts.values()) if parts else None
    tree_parts = {k: med[k] for k in ("network", dec or "decompress", "disk_tree") if k in med}
    bound_tree = max(tree_parts.values()) if "disk_tree" in tree_parts else None
    out = {
        "size": a.size,
        "image": {**stats, "build_s": round(build_s, 1)},
        "cpus": os.cpu_count(),
        "reps": a.reps,
        "times_s": times,
        "median_s": med,
        "cpu_s": cpus,
        "median_cpu_s": med_cpu,
        "decompress_part": dec,
        "bound_cpu_s": bound_cpu,
        "bound_cpu_parts": cpu_parts,
        "machine_cpu_s": machine_cpus,
        "median_machine_cpu_s": med_machine,
        "bound_machine_cpu_s": bound_machine,
        "bound_machine_cpu_parts": machine_parts,
        "bound_s": bound,
        "bound_part": max(parts, key=parts.get) if parts else None,  # type: ignore[arg-type]
        "bound_tree_s": bound_tree,
        "bound_tree_part": max(tree_parts, key=tree_parts.get) if bound_tree else None,  # type: ignore[arg-type]
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "cleanup": a.cleanup,
        "fs": a.fs,
        "note": "containerd = ctr images pull (fetch + unpack into the overlayfs snapshotter), daemon start "
        "excluded; bound = max(network via curl, pigz -dc on all cores, disk write of the uncompressed bytes); "
        "bound_tree = the same with the disk part as GNU tar -xf of the decompressed tars (file creation)",
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"image: {stats['layers']} layers, {stats['compressed_bytes'] / 1e6:.0f} MB gzip, "
          f"{stats['uncompressed_bytes'] / 1e6:.0f} MB tar; median of {a.reps}")
    for k, v in med.items():
        cpu = med_cpu.get(k, float("nan"))
        busy = med_machine.get(k, float("nan"))
        print(f"{k:22s} {v:7.2f} s  [{min(times[k]):.2f} .. {max(times[k]):.2f}]  {cpu:6.2f} CPU-s  "
              f"machine {busy:6.2f} CPU-s ({busy / (cores * v):4.0%} of {cores} cores)")
    print(f"bound {bound:.2f} s ({out['bound_part']})" if bound else "no bound")
    if bound_tree:
        print(f"bound with file creation {bound_tree:.2f} s ({out['bound_tree_part']})")
    if bound_cpu:
        print(f"CPU-sum bound {bound_cpu:.2f} s ({' + '.join(f'{k} {v:.2f}' for k, v in cpu_parts.items())} "
              f"CPU-s on {cores} cores)")
    if bound_machine:
        print(f"machine CPU-sum bound {bound_machine:.2f} s "
              f"({' + '.join(f'{k} {v:.2f}' for k, v in machine_parts.items())} CPU-s on {cores} cores)")


if __name__ == "__main__":
    main()
