"""Container start-up through containerd 1.6: soci-lab lazy (``soci-lab image rpull`` + ``ctr run
--snapshotter soci-lab``) side by side with containerd's own path (``ctr images pull`` + ``ctr run`` on its
overlayfs snapshotter), on loopback and through the shaping proxy at 100 Mbit/s, 20 ms.

The image is generated (not a dataset image): layer 1 holds the host's ``cat`` and its libc, layer 2
``--mb`` MiB of incompressible files plus ``/data/first.txt``; the container cats that file. Each
repetition starts a fresh containerd and snapshotter (own root, state and sockets), so nothing is cached.
Times are from the start of the pull to the container's first output and to its exit. Needs root.

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/snapshotter_startup.py [--mb 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from soci_lab.snapshotter.containerd_config import containerd_config

REPO = Path(__file__).resolve().parents[1]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[0]} did not create {path}")
        time.sleep(0.02)


def build_trees(base: Path, mb: int) -> tuple[Path, Path]:
    l1, l2 = base / "l1", base / "l2"
    (l1 / "bin").mkdir(parents=True)
    cat = shutil.which("cat") or "/usr/bin/cat"
    shutil.copy(cat, l1 / "bin" / "cat")
    for line in subprocess.run(["ldd", cat], capture_output=True, text=True, check=True).stdout.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            dst = l1 / path.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(path).resolve(), dst)
    (l2 / "data" / "bulk").mkdir(parents=True)
    for i in range(mb // 8):
        (l2 / "data" / "bulk" / f"f{i}").write_bytes(os.urandom(8 << 20))
    (l2 / "data" / "first.txt").write_bytes(b"hello from the container\n")
    return l1, l2


class Stack:
    """A fresh containerd + soci-lab snapshotter for one repetition."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True)
        (base / "config.toml").write_text(containerd_config(base, base / "sn.sock"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.sn = subprocess.Popen([sys.executable, "-c", CLI_CODE, "snapshotter", "serve", "--address",
                                    str(base / "sn.sock"), "--root", str(base / "snroot")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for(base / "sn.sock", self.sn)
        self._wait_warm()
        self.ctd = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(base / "containerd.sock", self.ctd)
        self.ns = f"bench-{uuid.uuid4().hex[:8]}"

    def _wait_warm(self, timeout: float = 60.0) -> None:
        """A snapshotter daemon is long-lived (started with the host): wait until its layer-server zygote
        is up, so its start-up is not counted in a pull."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == \
                            self.sn.pid and b"soci_lab.lazy.zygote" in (proc / "cmdline").read_bytes():
                        time.sleep(0.5)  # its imports done
                        return
                except (OSError, ValueError, IndexError):
                    continue
            time.sleep(0.05)
        raise RuntimeError("the snapshotter's zygote did not start")

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.base / "containerd.sock"), "--namespace", self.ns, *args]

    def close(self) -> None:
        for p in (self.ctd, self.sn):
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        from soci_lab.snapshot import umount_tree
        from soci_lab.snapshotter import remove_root

        remove_root(self.base / "snroot")
        umount_tree(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def run_once(stack: Stack, mode: str, ref: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    if mode == "soci-lab lazy":
        subprocess.run([sys.executable, "-c", CLI_CODE, "image", "rpull", "--address",
                        str(stack.base / "containerd.sock"), "--namespace", stack.ns, ref], check=True,
                       capture_output=True, env=env)
        run = stack.ctr("run", "--rm", "--snapshotter", "soci-lab", ref, "c1", "/bin/cat", "/data/first.txt")
    else:
        subprocess.run(stack.ctr("images", "pull", "--plain-http", ref), check=True, capture_output=True)
        run = stack.ctr("run", "--rm", ref, "c1", "/bin/cat", "/data/first.txt")
    t_pull = time.monotonic() - t0
    proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)  # unbuffered: read(1)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    t_first = time.monotonic() - t0
    rest, err = proc.communicate(timeout=300)
    t_end = time.monotonic() - t0
    if proc.returncode != 0 or first + rest != b"hello from the container\n":
        raise RuntimeError(f"{mode}: container exited {proc.returncode}, printed {(first + rest)[:200]!r}: "
                           f"{err.decode()[-500:]}")
    return {"pull_s": t_pull, "first_output_s": t_first, "end_s": t_end}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64, help="MiB of incompressible data in layer 2 (default 64)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every repetition here")
    args = ap.parse_args()
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_image
    from soci_lab.netlab import EmbeddedRegistry, ShapingProxy

    work = Path(tempfile.mkdtemp(prefix="soci-lab-snapbench-"))
    rows: list[dict] = []
    try:
        l1, l2 = build_trees(work / "trees", args.mb)
        with EmbeddedRegistry(root=work / "registry") as reg:
            host = reg.url.removeprefix("http://")
            build_image([l1, l2], f"{host}/bench/plain:v1", insecure=True)
            build_image([l1, l2], f"{host}/bench/lazy:v1", insecure=True)
            create_soci_index(f"{host}/bench/lazy:v1", min_layer_size=0)
            for net, shaping in (("loopback", None), ("100Mbit/20ms", ("100Mbit", "20ms"))):
                proxy = ShapingProxy(reg.url, bandwidth=shaping[0], latency=shaping[1]) if shaping else None
                if proxy is not None:
                    proxy.__enter__()
                try:
                    base = (proxy.url if proxy else reg.url).removeprefix("http://")
                    for rep in range(args.reps):
                        for mode, repo in (("containerd overlayfs", "plain"), ("soci-lab lazy", "lazy")):
                            stack = Stack(work / f"stack-{net.replace('/', '_')}-{rep}-{repo}")
                            try:
                                r = run_once(stack, mode, f"{base}/bench/{repo}:v1")
                            finally:
                                stack.close()
                            rows.append({"network": net, "mode": mode, "rep": rep, **r})
                            print(json.dumps(rows[-1]), flush=True)
                finally:
                    if proxy is not None:
                        proxy.__exit__(None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nlayer 2: {args.mb} MiB incompressible; median of {args.reps}; seconds from pull start")
    print(f"{'network':<14}{'mode':<22}{'pull':>8}{'first out':>11}{'end':>8}{'first/overlayfs':>17}")
    for net in ("loopback", "100Mbit/20ms"):
        med = {}
        for mode in ("containerd overlayfs", "soci-lab lazy"):
            sel = [r for r in rows if r["network"] == net and r["mode"] == mode]
            med[mode] = {k: statistics.median(r[k] for r in sel) for k in ("pull_s", "first_output_s", "end_s")}
        for mode, m in med.items():
            ratio = m["first_output_s"] / med["containerd overlayfs"]["first_output_s"]
            print(f"{net:<14}{mode:<22}{m['pull_s']:>8.2f}{m['first_output_s']:>11.2f}{m['end_s']:>8.2f}"
                  f"{ratio:>16.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
