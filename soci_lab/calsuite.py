"""The calibration suite behind ``soci-lab calibrate``: this host's costs, measured apart from any user image.

The suite builds its own synthetic images (:data:`QUICK_IMAGES`, :data:`FULL_IMAGES`: entry counts from
a dozen to a few thousand, files from a few KiB to MiBs, spans of 512 KiB to 4 MiB, gzip and zstd), serves
them from the embedded registry in a process of its own, and pulls each for real in every mode (lazy,
parallel, sequential; :func:`soci_lab.lab.pull`, a start-up-like trace reading a quarter of the image
replayed on the mount) on loopback and through the shaping proxy (``soci-lab netlab proxy``, its own
process too) at the shaped networks of the profile. One discarded pull per mode first pays the process's
cold start. Then (:func:`soci_lab.sim.profile`):

- the host part of :func:`soci_lab.sim.fit` over every run (the host is the same on every network);
- the link model from the loopback runs' and each shaped network's own HTTP fit.

The suite's images are named ``cal-…`` and their manifest digests kept in the profile: a validation image
must be none of them (``benchmarks/heldout.py`` asserts it). Its shaped networks (:data:`QUICK_NETWORKS`,
:data:`FULL_NETWORKS`) are deliberately not the validation's (1 Gbit, 100 Mbit + 20 ms): a prediction
takes the network the user names, not a fit of the same network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SociLabError
from .sim.profile import HostProfile, NamedNetwork, fit_link

MODES = ("sequential", "parallel", "lazy")
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"config", b"library", b"python", b"layer", b"span", b"\n"]


@dataclass(frozen=True)
class SuiteImage:
    """One synthetic image of the suite: per layer, how many files of about what size (lognormal around
    it; half of them random bytes, half text-like), compressed with ``compression``, indexed at
    ``span_size``."""

    name: str
    layers: tuple[tuple[int, int], ...]
    compression: str = "gzip"
    span_size: int = 1 << 20
    seed: int = 0


#: the quick suite: many small files (gzip, small spans) and few large ones (zstd and gzip, larger spans)
QUICK_IMAGES = (
    SuiteImage("cal-small-files-gzip", ((1200, 2 << 10), (500, 8 << 10)), "gzip", 512 << 10, 1),
    SuiteImage("cal-large-files-zstd", ((10, 600 << 10), (4, 2 << 20)), "zstd", 2 << 20, 2),
    # large gzip files: layers whose unpack is decompress-bound, so the whole-layer inflate rate is measured
    # (the small files' layers are apply-bound: their inflate waits and tells only a lower bound)
    SuiteImage("cal-large-files-gzip", ((8, 1 << 20), (3, 3 << 20)), "gzip", 1 << 20, 5),
)
#: the full suite adds mixed shapes at 1 and 4 MiB spans
FULL_IMAGES = (
    *QUICK_IMAGES,
    SuiteImage("cal-mixed-gzip-4m", ((250, 40 << 10), (40, 256 << 10), (900, 4 << 10)), "gzip", 4 << 20, 3),
    SuiteImage("cal-mixed-zstd-1m", ((1800, 3 << 10), (16, 1 << 20)), "zstd", 1 << 20, 4),
)
QUICK_NETWORKS = ("loopback", "200Mbit+10ms")
FULL_NETWORKS = ("loopback", "400Mbit+5ms", "50Mbit+10ms")
#: what each layer is indexed from (smaller layers are pulled whole even in lazy mode, as upstream's default)
MIN_LAYER_SIZE = 1 << 20
#: the fraction of each image its start-up trace reads
TRACE_FRACTION = 0.25


def suite_image_names() -> set[str]:
    """Every image name either suite uses (held-out sets must avoid them)."""
    return {i.name for i in FULL_IMAGES}


def build_suite_image(spec: SuiteImage, work: Path, layout: Path) -> str:
    """Write ``spec``'s layer trees under ``work`` and build it into ``layout`` (tag = its name) with a SOCI
    v2 index; returns the image's manifest digest."""
    from .artifacts.create import create_soci_index
    from .images.build import build_image

    rnd = random.Random(spec.seed)
    dirs = []
    for li, (count, size) in enumerate(spec.layers):
        d = work / spec.name / f"l{li}" / f"d{li}"
        d.mkdir(parents=True)
        for i in range(count):
            n = max(1, int(rnd.lognormvariate(0, 0.6) * size))
            text = b" ".join(rnd.choice(WORDS) for _ in range(n // 6 + 1))[:n]
            (d / f"f{i:05d}").write_bytes(rnd.randbytes(n) if i % 2 else text)
        dirs.append(d.parent)
    ref = f"oci:{layout}:{spec.name}"
    built = build_image(dirs, ref, compression=spec.compression)
    create_soci_index(ref, min_layer_size=MIN_LAYER_SIZE, span_size=spec.span_size)
    return str(built.digest)


def _cli(*args: str) -> list[str]:
    """``soci-lab ARGS`` in this interpreter (the entry point need not be installed)."""
    return [sys.executable, "-c", "import sys; from soci_lab.cli import main; sys.exit(main())", *args]


@contextlib.contextmanager
def serve(args: Sequence[str]) -> Iterator[str]:
    """A ``soci-lab`` server (registry, proxy) in a process of its own while the block runs: its URL. In the
    puller's process it would take the puller's GIL (sim_fullscale.py measured 2x slower applies)."""
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise SociLabError(f"soci-lab {' '.join(args[:2])} did not start: {err.strip()[-300:] or url!r}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def proxy_args(upstream: str, net: NamedNetwork) -> list[str]:
    """``netlab proxy`` arguments that make ``net`` in front of ``upstream``."""
    args = ["netlab", "proxy", "--upstream", upstream, "--port", "0"]
    if net.rate:
        args += ["--bandwidth", f"{net.rate * 8 / 1e6:g}Mbit"]
    if net.rtt:
        args += ["--latency", f"{net.rtt * 1e3:g}ms"]
    return args


#: a per-pull file system for a timed pull's files: ``fresh(path)`` mounts one at ``path`` for the block
FreshFS = Callable[[Path], contextlib.AbstractContextManager[Any]]


class Puller:
    """Real pulls whose state directories are kept until :meth:`drop` (after the last timing): deleting a
    pull's tree at once slows the next pulls' file creation for minutes (ext4's allocator rescans freed
    inodes; ``benchmarks/freshfs.py``), so a suite's per-entry apply cost would depend on its order. With
    ``fresh`` (e.g. ``benchmarks/freshfs.py``'s ``fresh_ext4``) each pull gets a new file system of its own."""

    def __init__(self, root: Path, fresh: FreshFS | None = None) -> None:
        self.root, self.fresh, self.count = root, fresh, 0

    def pull(self, ref: str, mode: str, trace: Path, *, config: Any = None) -> Any:
        from . import lab

        self.count += 1
        state = self.root / f"pull-{self.count}"
        if self.fresh is None:
            return lab.pull(ref, mode, trace=str(trace), state_dir=state, keep_state=True, config=config)
        with self.fresh(state):
            return lab.pull(ref, mode, trace=str(trace), state_dir=state / "state", keep_state=True, config=config)

    def drop(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def calibrate(
    *,
    quick: bool = False,
    images: Sequence[SuiteImage] | None = None,
    networks: Sequence[str] | None = None,
    repeat: int | None = None,
    progress: Callable[[str], None] | None = None,
    fresh: FreshFS | None = None,
    keep: Path | None = None,
) -> HostProfile:
    """Run the suite on this host and fit its :class:`~soci_lab.sim.profile.HostProfile` (needs root,
    /dev/fuse and overlayfs: a :class:`SociLabError` line otherwise). ``fresh``: a new file system per pull
    (:class:`Puller`). ``keep``: a directory to keep every suite pull's events in, so that a changed fit can
    be tried on the same pulls (:func:`refit`)."""
    from . import lab
    from .imagemodel import image_from_layout
    from .sim import synthetic_trace, write_trace

    ok, why = lab.can_mount()
    if not ok:
        raise SociLabError(f"cannot calibrate here: the suite pulls images for real and {why}")
    images = tuple(images or (QUICK_IMAGES if quick else FULL_IMAGES))
    nets = [NamedNetwork.parse(n) for n in (networks or (QUICK_NETWORKS if quick else FULL_NETWORKS))]
    if nets[0].rate is not None:
        nets.insert(0, NamedNetwork("loopback"))
    repeat = repeat or (1 if quick else 2)
    say = progress or (lambda _text: None)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="soci-lab-calibrate-"))
    runs: dict[str, list[Any]] = {n.name: [] for n in nets}
    described: list[dict[str, Any]] = []
    puller = Puller(work / "states", fresh)
    try:
        layout = work / "layout"
        traces: dict[str, Path] = {}
        for spec in images:
            say(f"building the suite image {spec.name}")
            digest = build_suite_image(spec, work / "trees", layout)
            model = image_from_layout(f"{layout}:{spec.name}")
            # reads of two sizes (32 KiB and 1 MiB: FUSE requests and bytes out of proportion, so the per-request
            # and per-byte costs are told apart), the second half partly over files the first read (cache hits)
            trace = synthetic_trace(model, TRACE_FRACTION / 2, seed=spec.seed, read_size=32 << 10)
            trace += synthetic_trace(model, TRACE_FRACTION / 2, seed=spec.seed + 100, read_size=1 << 20)
            traces[spec.name] = write_trace(trace, work / f"{spec.name}.csv")
            described.append({
                "name": spec.name, "digest": digest, "layer_digests": [layer.digest for layer in model.layers],
                "compression": spec.compression, "span_size": spec.span_size, "layers": len(model.layers),
                "entries": len(model.files),
                "compressed_bytes": sum(layer.compressed_size for layer in model.layers),
                "uncompressed_bytes": model.uncompressed_size,
            })  # fmt: skip
        shutil.rmtree(work / "trees", ignore_errors=True)
        with serve(["registry", "serve", "--port", "0", "--layout", f"suite={layout}"]) as reg_url:
            host = reg_url.removeprefix("http://")
            first = images[0].name
            for mode in MODES:  # a process's first pulls pay its cold start (imports, the zygote)
                say(f"warm-up pull ({mode})")
                puller.pull(f"{host}/suite:{first}", mode, traces[first])
            for net in nets:
                with contextlib.ExitStack() as stack:
                    url = reg_url if net.rate is None else stack.enter_context(serve(proxy_args(reg_url, net)))
                    base = url.removeprefix("http://")
                    for r in range(repeat):
                        for spec in images:
                            for mode in MODES[r % 3:] + MODES[: r % 3]:  # rotated from round to round
                                say(f"{net.name}: {spec.name} {mode} ({r + 1}/{repeat})")
                                runs[net.name].append(puller.pull(f"{base}/suite:{spec.name}", mode,
                                                                  traces[spec.name]))  # fmt: skip
    finally:
        puller.drop()
        shutil.rmtree(work, ignore_errors=True)
    say("fitting the host profile")
    frames = {name: [run.events for run in rs] for name, rs in runs.items()}
    suite = {"quick": quick, "images": described, "networks": [n.name for n in nets], "modes": list(MODES),
             "repeat": repeat, "runs": sum(len(v) for v in runs.values()), "trace_fraction": TRACE_FRACTION,
             "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "suite.json").write_text(json.dumps(suite))
        for name, fs in frames.items():
            for i, frame in enumerate(fs):
                frame.to_pickle(keep / f"{name}-{i}.pkl")
    return profile_from(frames, suite)


def profile_from(frames: dict[str, list[Any]], suite: dict[str, Any]) -> HostProfile:
    """The host profile fitted from the suite's events per network (the first network is loopback)."""
    from .sim import fit

    nets = [NamedNetwork.parse(n) for n in suite["networks"]]
    every = [f for name in frames for f in frames[name]]
    loop_cal = fit(frames[nets[0].name])
    cal = fit(every).with_network_of(loop_cal)
    shaped = [(n, fit(frames[n.name])) for n in nets if n.rate is not None]
    link, link_warnings = fit_link(loop_cal, shaped)
    return HostProfile(calibration=cal, link=link, link_warnings=link_warnings, suite=suite, machine=machine())


def refit(keep: Path) -> HostProfile:
    """The host profile fitted again from the suite pulls a ``calibrate(keep=…)`` run kept (no pull)."""
    import pandas as pd

    suite = json.loads((keep / "suite.json").read_text())
    def kept(name: str) -> list[Any]:
        files = sorted(keep.glob(f"{name}-*.pkl"), key=lambda q: int(q.stem.rsplit("-", 1)[1]))
        return [pd.read_pickle(p) for p in files]

    frames = {n: kept(n) for n in suite["networks"]}
    return profile_from(frames, suite)


def machine() -> dict[str, Any]:
    """Where a profile was made: host, CPUs, kernel, Python, soci_lab, when, and the load average."""
    from . import __version__

    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - no /proc/loadavg
        load = (float("nan"),) * 3
    return {
        "node": platform.node(), "machine": platform.machine(), "kernel": platform.release(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "soci_lab": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "loadavg": [round(x, 2) for x in load],
    }  # fmt: skip
