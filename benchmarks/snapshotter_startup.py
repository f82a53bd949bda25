"""Container start-up through containerd 1.6, three ways side by side in one run: soci-lab lazy (``soci-lab
image rpull`` + ``ctr run --snapshotter soci-lab``), soci-lab parallel (the same, the daemon started with
``[pull_modes.parallel_pull_unpack] enable``: every layer through its ParallelPuller) and containerd's own
path (``ctr images pull`` + ``ctr run`` on its overlayfs snapshotter), on loopback and through the shaping
proxy at 100 Mbit/s, 20 ms.

Images: the dataset images (``soci-lab dataset build NAME``; python-pandas, nodejs, postgresql), each run
with its recipe's command until its readiness line (``ready``, ``listening on …``, PostgreSQL's ``ready to
accept connections``), then killed; or ``synthetic``: layer 1 the host's ``cat`` and its libc, layer 2
``--mb`` MiB of incompressible files, the container cats a small file and exits. The lazy image carries a
SOCI v2 index (upstream's 10 MiB minimum layer size). Each repetition starts a fresh containerd and
snapshotter (own root, state and sockets), so nothing is cached; the snapshotter is long-lived, so its
start-up is not counted. Times are from the start of the pull to the container's first output byte
(stdout or stderr) and to its workload's end (readiness line, or exit). Needs root.

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/snapshotter_startup.py \\
        [--images python-pandas,nodejs,postgresql] [--reps 3] [--json FILE] [--md FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from soci_lab.snapshotter.containerd_config import containerd_config

REPO = Path(__file__).resolve().parents[1]
CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
MODES = ("containerd overlayfs", "soci-lab lazy", "soci-lab parallel")
NETWORKS = {"loopback": None, "100Mbit/20ms": ("100Mbit", "20ms")}
PARALLEL_CONFIG = "[pull_modes.parallel_pull_unpack]\nenable = true\n"


@dataclass(frozen=True)
class Workload:
    """What the container runs, and when its start-up is over: ``ready`` (a regex over its output lines)
    matched, or (``ready`` None) the process exited printing ``expect``."""

    args: tuple[str, ...]
    ready: str | None = None
    expect: bytes | None = None
    timeout_s: float = 300.0


#: runtime directories a dataset's service needs under /run, which the container runtime mounts as a fresh
#: tmpfs (the image's own /run/postgresql is hidden by it; the dataset's chroot recording had it)
RUN_DIRS = {"postgresql": "/run/postgresql"}


def dataset_workload(name: str) -> Workload:
    """The recipe's command and readiness line. ``ctr run`` has no ``--user``: a recipe's user is taken on
    with util-linux's ``setpriv`` (in every dataset image), as the runtime would from the image's config,
    after its :data:`RUN_DIRS` entry is made again on the runtime's /run tmpfs."""
    from soci_lab.datasets import get_recipe

    recipe = get_recipe(name)
    args = tuple(recipe.cmd)
    if recipe.user:
        args = ("/usr/bin/setpriv", f"--reuid={recipe.user}", f"--regid={recipe.user}", "--init-groups", *args)
    if name in RUN_DIRS:
        owner = recipe.user or "root"
        args = ("/bin/sh", "-c", f"install -d -o {owner} -g {owner} {RUN_DIRS[name]} && exec " + " ".join(args))
    ready = recipe.readiness.removeprefix("line:") if recipe.readiness.startswith("line:") else None
    return Workload(args, ready=ready, timeout_s=max(120.0, 2 * recipe.timeout_s))


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
    """A fresh containerd + soci-lab snapshotter for one repetition (``config``: the snapshotter's config.toml)."""

    def __init__(self, base: Path, config: str | None = None, keep_events: Path | None = None) -> None:
        self.base = base
        self.keep_events = keep_events
        base.mkdir(parents=True)
        (base / "config.toml").write_text(containerd_config(base, base / "sn.sock"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-c", CLI_CODE, "snapshotter", "serve", "--address", str(base / "sn.sock"),
                "--root", str(base / "snroot"), "--events", str(base / "events.jsonl")]
        if config is not None:
            (base / "sn-config.toml").write_text(config)
            args += ["--config", str(base / "sn-config.toml")]
        self.ns = f"bench-{uuid.uuid4().hex[:8]}"
        self.ctd: subprocess.Popen | None = None
        self.sn = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_for(base / "sn.sock", self.sn, timeout=60)
            self._wait_warm()
            self.ctd = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(base / "containerd.sock", self.ctd)
        except BaseException:
            self.close()  # a daemon that came up must not outlive a failed start
            raise

    def _wait_warm(self, timeout: float = 60.0) -> None:
        """A snapshotter daemon is long-lived (started with the host): wait until what forks its layer servers
        is up — the per-host soci-lab service, or without it the daemon's private zygote — so that start-up
        is not counted in a pull."""
        from soci_lab import service

        if service.enabled():
            service.get()  # started by the daemon's warm-up, or now: the same socket either way
            return
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
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        from soci_lab.snapshot import umount_tree

        if self.keep_events is not None:  # the daemon's and every layer server's events, before they go
            umount_tree(self.base)  # the layer servers (which outlive the daemon) stop and write their events
            time.sleep(3.0)
            self.keep_events.mkdir(parents=True, exist_ok=True)
            for f in self.base.rglob("events*.jsonl"):
                rel = f.relative_to(self.base)
                shutil.copy(f, self.keep_events / "__".join(rel.parts))
        from soci_lab.snapshotter import remove_root

        remove_root(self.base / "snroot")
        umount_tree(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def watch(proc: subprocess.Popen, work: Workload, t0: float) -> tuple[float, float, bytes]:
    """(first output, workload end) in seconds since ``t0``, and what the container printed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    out, t_first, t_end = b"", None, None
    pattern = re.compile(work.ready.encode()) if work.ready else None
    deadline = time.monotonic() + work.timeout_s
    while t_end is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no readiness in {work.timeout_s:.0f} s; printed {out[-500:]!r}")
        if not sel.select(timeout=1.0):
            continue
        chunk = os.read(fd, 65536)
        now = time.monotonic() - t0
        if not chunk:  # exited
            if pattern is not None:
                raise RuntimeError(f"exited before its readiness line; printed {out[-500:]!r}")
            t_end = now
            break
        if t_first is None:
            t_first = now
        out += chunk
        if pattern is not None and any(pattern.search(line) for line in out.splitlines()):
            t_end = now
    sel.close()
    assert t_first is not None
    return t_first, t_end, out


def run_once(stack: Stack, mode: str, ref: str, work: Workload) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cid = f"c{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    if mode.startswith("soci-lab"):
        done = subprocess.run([sys.executable, "-c", CLI_CODE, "image", "rpull", "--address",
                               str(stack.base / "containerd.sock"), "--namespace", stack.ns, ref],
                              capture_output=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"rpull exited {done.returncode}: {done.stderr.decode(errors='replace')[-800:]}")
        run = stack.ctr("run", "--rm", "--net-host", "--snapshotter", "soci-lab", ref, cid, *work.args)
    else:
        subprocess.run(stack.ctr("images", "pull", "--plain-http", ref), check=True, capture_output=True)
        run = stack.ctr("run", "--rm", "--net-host", ref, cid, *work.args)
    t_pull = time.monotonic() - t0
    proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    try:
        t_first, t_end, out = watch(proc, work, t0)
    finally:
        if proc.poll() is None:
            subprocess.run(stack.ctr("tasks", "kill", "-s", "SIGKILL", cid), capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if work.expect is not None and (proc.returncode != 0 or out != work.expect):
        raise RuntimeError(f"{mode}: container exited {proc.returncode}, printed {out[:300]!r}")
    return {"pull_s": t_pull, "first_output_s": t_first, "end_s": t_end}


def add_images(names: list[str], reg: object, work: Path, mb: int,
               span_size: int | None = None) -> dict[str, tuple[str, str, Workload]]:
    """Each image twice in the registry: ``NAME:plain`` and ``NAME-lazy:v1`` with a SOCI v2 index."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_image, copy_image

    host = reg.url.removeprefix("http://")  # type: ignore[attr-defined]
    out = {}
    for name in names:
        plain, lazy = f"bench/{name}:plain", f"bench/{name}-lazy:v1"
        if name == "synthetic":
            l1, l2 = build_trees(work / "trees", mb)
            for ref in (plain, lazy):
                build_image([l1, l2], f"{host}/{ref}", insecure=True)
            shutil.rmtree(work / "trees", ignore_errors=True)
            wl = Workload(("/bin/cat", "/data/first.txt"), expect=b"hello from the container\n")
            min_layer = 0
        else:
            from soci_lab.datasets import cached_build

            built = cached_build(name)
            if built is None:
                raise SystemExit(f"{name}: no cached build; run `soci-lab dataset build {name}` first")
            for ref in (plain, lazy):
                copy_image(built.image, f"{host}/{ref}", insecure=True)
            wl = dataset_workload(name)
            min_layer = 10 << 20  # upstream's default minimum layer size
        extra = {} if span_size is None else {"span_size": span_size}
        create_soci_index(f"{host}/{lazy}", min_layer_size=min_layer, **extra)
        out[name] = (plain, lazy, wl)
    return out


def medians(rows: list[dict], image: str, net: str) -> dict[str, dict[str, float]]:
    med = {}
    for mode in MODES:
        sel = [r for r in rows if r["image"] == image and r["network"] == net and r["mode"] == mode]
        if sel:
            med[mode] = {k: statistics.median(r[k] for r in sel) for k in ("pull_s", "first_output_s", "end_s")}
    return med


def spread(rows: list[dict], image: str, net: str, mode: str, key: str) -> str:
    vals = [r[key] for r in rows if r["image"] == image and r["network"] == net and r["mode"] == mode]
    return f"{statistics.median(vals):.2f} s ({min(vals):.2f}–{max(vals):.2f})"


def markdown(rows: list[dict], meta: dict) -> str:
    """The section of BENCHMARKS.md: one row per image, network and mode (8 columns, the suite's shape)."""
    spans = "" if not meta.get("span_size") else f"SOCI index span size {meta['span_size'] >> 10} KiB; "
    if meta.get("lazy_config"):
        spans += f"lazy with config `{meta['lazy_config']}`; "
    cond = (f"the shared root ext4 (/tmp); {spans}{{net}}; load {meta['load_before']:.1f} before, "
            f"{meta['load_after']:.1f} after, on {meta['cpus']} CPUs; {meta['date']} UTC, `{meta['commit']}`")
    out = [
        "## snapshotter_startup: containers through containerd 1.6, from `ctr` pull to first output",
        "",
        "Run outside the suite (needs root, containerd, runc and the built dataset images):",
        "",
        f"    {meta['command']}",
        "",
        f"Median of {meta['reps']} repetitions (min–max), seconds from the start of the pull (`soci-lab image "
        "rpull` for soci-lab, `ctr images pull` for containerd) to the container's first output byte and to its "
        "workload's end (the recipe's readiness line). A fresh containerd and snapshotter per repetition, "
        "nothing cached; the ratios are to containerd's overlayfs path in the same run. Goal (issue 23): soci-lab "
        "lazy's first output in ≤ 0.5× containerd's on the shaped link, for every dataset image.",
        "",
        "| benchmark | image, network | mode | first output | workload end | first ÷ containerd | end ÷ containerd "
        "| conditions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for image in dict.fromkeys(r["image"] for r in rows):
        for net in NETWORKS:
            med = medians(rows, image, net)
            base = med.get("containerd overlayfs")
            for mode, m in med.items():
                r_first = f"{m['first_output_s'] / base['first_output_s']:.2f}×" if base else "—"
                r_end = f"{m['end_s'] / base['end_s']:.2f}×" if base else "—"
                if mode == "soci-lab lazy" and net != "loopback" and base:
                    r_first += " (goal ≤ 0.5: " + ("met)" if m["first_output_s"] <= 0.5 * base["first_output_s"]
                                                   else "**not met**)")
                out.append(f"| snapshotter_startup | {image}, {net} | {mode} | "
                           f"{spread(rows, image, net, mode, 'first_output_s')} | "
                           f"{spread(rows, image, net, mode, 'end_s')} | {r_first} | {r_end} | "
                           f"{cond.format(net=net)} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="python-pandas,nodejs,postgresql",
                    help="comma-separated dataset images, or synthetic (default: python-pandas,nodejs,postgresql)")
    ap.add_argument("--mb", type=int, default=64, help="synthetic: MiB of incompressible data in layer 2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, of {', '.join(NETWORKS)}")
    ap.add_argument("--span-size", type=int, metavar="BYTES",
                    help="the SOCI index's span size (default: upstream's 4 MiB), as `soci create --span-size`")
    ap.add_argument("--lazy-config", type=Path, help="the snapshotter's config.toml for soci-lab lazy (default: none)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--keep-events", type=Path,
                    help="copy each soci-lab run's daemon and layer-server events under this directory")
    ap.add_argument("--json", type=Path, help="write every repetition here")
    ap.add_argument("--md", type=Path, help="write the BENCHMARKS.md section here")
    args = ap.parse_args()
    from soci_lab.netlab import EmbeddedRegistry, ShapingProxy

    meta = {"command": "flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/snapshotter_startup.py "
                       + " ".join(sys.argv[1:]),
            "span_size": args.span_size,
            "lazy_config": " ".join(args.lazy_config.read_text().split()) if args.lazy_config else "",
            "load_before": os.getloadavg()[0], "cpus": os.cpu_count(), "reps": args.reps,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True).stdout.strip()}
    work = Path(tempfile.mkdtemp(prefix="soci-lab-snapbench-"))
    rows: list[dict] = []
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            images = add_images(args.images.split(","), reg, work, args.mb, args.span_size)
            for net in args.networks.split(","):
                shaping = NETWORKS[net]
                proxy = ShapingProxy(reg.url, bandwidth=shaping[0], latency=shaping[1]) if shaping else None
                if proxy is not None:
                    proxy.__enter__()
                try:
                    host = (proxy.url if proxy else reg.url).removeprefix("http://")
                    for image, (plain, lazy, wl) in images.items():
                        for rep in range(args.reps):
                            order = MODES[rep % 3:] + MODES[:rep % 3]  # no mode always first
                            for mode in [m for m in order if m in args.modes.split(",")]:
                                ref = f"{host}/{lazy if mode == 'soci-lab lazy' else plain}"
                                config = PARALLEL_CONFIG if mode == "soci-lab parallel" else None
                                if mode == "soci-lab lazy" and args.lazy_config is not None:
                                    config = args.lazy_config.read_text()
                                keep = None
                                if args.keep_events is not None and mode.startswith("soci-lab"):
                                    tag = f"{image}-{net.replace('/', '_')}-{mode.split()[-1]}-{rep}"
                                    keep = args.keep_events / tag
                                stack = Stack(work / f"stack-{uuid.uuid4().hex[:8]}", config, keep)
                                try:
                                    r = run_once(stack, mode, ref, wl)
                                finally:
                                    stack.close()
                                rows.append({"image": image, "network": net, "mode": mode, "rep": rep, **r})
                                print(json.dumps(rows[-1]), flush=True)
                finally:
                    if proxy is not None:
                        proxy.__exit__(None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    section = markdown(rows, meta)
    if args.md:
        args.md.write_text(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
