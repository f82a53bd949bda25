"""Held-out validation of the simulator (issue 17, point 5): predict images, networks and a loaded host that
the host profile was never fitted on, and compare with real pulls.

    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/heldout.py [--quick] [--profile FILE]
        [--images minbase,nodejs,…] [--networks loopback,1Gbit,100Mbit+20ms] [--repeat N] [--json] [--out FILE]

The **host profile** is ``soci-lab calibrate``'s (:mod:`soci_lab.calsuite`): fitted on the calibration
suite's own synthetic images (``cal-…``) at its own shaped networks (200 Mbit + 10 ms quick; 400 Mbit + 5 ms
and 50 Mbit + 10 ms full). Without ``--profile`` one is made at the start of the run (quick or full, as the
run), so the whole benchmark is one command. Leave-one-image-out holds by construction: no held-out image
is a suite image — checked here by name, manifest digest and layer digests before anything is pulled (the
script stops otherwise).

**Held-out images** (:data:`IMAGES`): the four dataset images (``python-pandas``, ``nodejs``,
``postgresql``, ``minbase``: cached builds, ``soci-lab dataset build NAME``, each with its committed start-up
trace) and two synthetic images of shapes the suite does not have — ``ho-deep-tree`` (one gzip layer of
4,000 files of ~700 bytes in 200 directories, half random, half text; 1 MiB spans, 256 KiB minimum layer
size; trace: every seventh file read whole) and ``ho-one-big-file`` (a 40 MB file of text and random halves
beside a few configs, gzip, 4 MiB spans, 1 MiB minimum layer size; trace: the configs and a third of the big
file read in 256 KiB steps). The datasets get a SOCI v2 index with upstream's defaults (4 MiB spans, 10 MiB
minimum layer size).

**Cells**: image × network (``loopback``, ``1Gbit`` and ``100Mbit+20ms`` through the shaping proxy, each in
its own process as a remote registry is) × mode (sequential, parallel, lazy), plus the **loaded host**:
every image × mode on loopback with a CPU hog (a busy process pinned to core 0) running throughout; the
simulator is told the host has one core fewer (``HostParams.cores - 1``: the model has no finer CPU sharing).
Each cell: ``--repeat`` real pulls (``soci_lab.lab.pull`` with the trace, mount to unmount; one discarded
warm-up pull per mode first; each pull's state on a new ext4 of its own, ``freshfs.py``, as the calibration
suite's pulls here — ``--no-fresh-fs``: on the root file system, kept until the end), the median
compared with one simulation of the image model
(``image_from_layout``: the image's own zTOCs and sizes) with the profile's parameters for the named network
and the trace at ``t = 0`` (the real replay runs back to back).

Reported: per cell sim/real of time to workload done, bytes and requests (exact?); per mode × network
(× condition) the median, p90 and max of ``|sim/real − 1|``; the share of cells within 15 %, the count
beyond 25 %; ``uptime`` before and after. Written to ``--out`` (default
``benchmarks/results/heldout-<date>-<host>[-quick].json``) and printed. ``--quick``: minbase and the two
synthetic images, loopback and 100 Mbit + 20 ms, one pull per cell, the loaded host on the synthetic images,
a quick profile (a few minutes in all). ``--save-real DIR`` keeps every real pull (summary, events), each image's
model and trace and the profile (and the suite's events, ``soci_lab.calsuite.refit``, when it calibrates);
``--resim DIR [--profile FILE]`` then simulates those cells again without a pull (for model changes: the same
real pulls before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from freshfs import available as freshfs_available  # noqa: E402
from freshfs import fresh_ext4  # noqa: E402

from soci_lab import lab  # noqa: E402
from soci_lab.calsuite import Puller, calibrate, proxy_args, serve, suite_image_names  # noqa: E402
from soci_lab.imagemodel import image_from_layout  # noqa: E402
from soci_lab.sim import read_trace, simulate  # noqa: E402
from soci_lab.sim.profile import HostProfile, NamedNetwork  # noqa: E402

DATASETS = ("python-pandas", "nodejs", "postgresql", "minbase")
SYNTHETIC = ("ho-deep-tree", "ho-one-big-file")
IMAGES = (*DATASETS, *SYNTHETIC)
NETWORKS = ("loopback", "1Gbit", "100Mbit+20ms")
MODES = ("sequential", "parallel", "lazy")
QUICK = {"images": ("minbase", *SYNTHETIC), "networks": ("loopback", "100Mbit+20ms"), "repeat": 1,
         "loaded_images": SYNTHETIC}  # fmt: skip
FULL = {"images": IMAGES, "networks": NETWORKS, "repeat": 2, "loaded_images": IMAGES}
WITHIN, BEYOND = 0.15, 0.25


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# --- the held-out images -----------------------------------------------------------------------------------


def _deep_tree(root: Path) -> None:
    rnd = random.Random(17)
    for d in range(200):
        sub = root / "usr" / "share" / f"pkg{d:03d}" / "doc"
        sub.mkdir(parents=True)
        for f in range(20):
            n = int(rnd.lognormvariate(6.5, 0.5))
            text = b"".join(rnd.choice([b"deep ", b"tree ", b"file\n"]) for _ in range(n // 5 + 1))[:n]
            (sub / f"f{f:02d}.txt").write_bytes(rnd.randbytes(n) if f % 2 else text)


def _big_file(root: Path) -> None:
    rnd = random.Random(18)
    (root / "opt" / "model").mkdir(parents=True)
    with open(root / "opt" / "model" / "weights.bin", "wb") as fh:
        for i in range(40):
            block = rnd.randbytes(1_000_000) if i % 2 else b"".join(rnd.choice([b"w ", b"b ", b"\n"]) for _ in
                                                                       range(500_000))[:1_000_000]  # fmt: skip
            fh.write(block)
    (root / "etc").mkdir()
    for i in range(5):
        (root / "etc" / f"model{i}.conf").write_text(f"model {i}\nthreads 2\n" * 20)


def synthetic_image(name: str, work: Path) -> tuple[Path, Path]:
    """``name``'s OCI layout (tag ``t``, SOCI v2 index, 1 MiB min layer) and a start-up trace for it."""
    from soci_lab.artifacts.create import create_soci_index
    from soci_lab.images.build import build_image

    tree = work / "tree"
    layout = work / "layout"
    if name == "ho-deep-tree":
        _deep_tree(tree / "l0")
        build_image([tree / "l0"], f"oci:{layout}:t", compression="gzip")
        create_soci_index(f"oci:{layout}:t", min_layer_size=256 << 10, span_size=1 << 20)
        files = sorted((tree / "l0").rglob("*.txt"))
        rows = [f"0.0,read,/{p.relative_to(tree / 'l0')},0,{p.stat().st_size}" for p in files[::7]]
    elif name == "ho-one-big-file":
        _big_file(tree / "l0")
        build_image([tree / "l0"], f"oci:{layout}:t", compression="gzip")
        create_soci_index(f"oci:{layout}:t", min_layer_size=1 << 20, span_size=4 << 20)
        rows = [f"0.0,read,/etc/model{i}.conf,0,4096" for i in range(5)]
        rows += [f"0.0,read,/opt/model/weights.bin,{off},{256 << 10}" for off in range(0, 13_000_000, 256 << 10)]
    else:
        raise SystemExit(f"no synthetic held-out image {name}")
    shutil.rmtree(tree)
    trace = work / "trace.csv"
    trace.write_text("t_s,op,path,offset,size\n" + "\n".join(rows) + "\n")
    return layout, trace


def dataset_image(name: str, work: Path) -> tuple[Path, Path]:
    """The cached dataset build as an indexed OCI layout (upstream's defaults) and its committed trace."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.datasets.build import cached_build
    from soci_lab.images.copy import copy_image

    built = cached_build(name)
    if built is None:
        raise SystemExit(f"no cached build of {name} (soci-lab dataset build {name})")
    layout = work / "layout"
    copy_image(built.image, f"oci:{layout}:t")
    create_soci_index(f"oci:{layout}:t", version="v2")
    return layout, REPO / "datasets" / name / "startup-trace.csv"


def manifest_and_layers(layout: Path) -> tuple[str, set[str]]:
    """The image manifest digest and layer digests behind tag ``t`` of ``layout``."""
    model = image_from_layout(f"{layout}:t")
    index = json.loads((layout / "index.json").read_text())
    digests = {m["digest"] for m in index.get("manifests", [])}
    return ",".join(sorted(digests)), {layer.digest for layer in model.layers}


def assert_held_out(profile: HostProfile, name: str, manifest: str, layers: set[str]) -> None:
    """Leave-one-image-out: the profile was never fitted on this image (name, manifest, any layer)."""
    suite_layers = {d for i in profile.suite.get("images", []) for d in i.get("layer_digests", [])}
    if name in profile.images or name in suite_image_names():
        raise SystemExit(f"{name} is a calibration suite image: it cannot validate the profile")
    if any(d in manifest for d in profile.image_digests):
        raise SystemExit(f"{name}: its manifest is one the profile was fitted on")
    if layers & suite_layers:
        raise SystemExit(f"{name}: {len(layers & suite_layers)} of its layers were in the calibration suite")


# --- the loaded host ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def cpu_hog() -> Iterator[int]:
    """A busy process pinned to core 0 while the block runs (its pid)."""
    code = "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(0.3)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


# --- running ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", default=None, help="a host profile (default: calibrate first)")
    ap.add_argument("--images", default=None)
    ap.add_argument("--networks", default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--no-loaded", dest="loaded", action="store_false", help="skip the loaded-host cells")
    ap.add_argument("--no-fresh-fs", dest="fresh_fs", action="store_false",
                    help="state directories on the root file system (kept until the end), not a new ext4 per pull")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--save-real", default=None, metavar="DIR",
                    help="keep every real pull's summary and events, each image's model and trace in DIR")
    ap.add_argument("--resim", default=None, metavar="DIR",
                    help="no pulls: simulate again the cells a --save-real run kept in DIR, with --profile "
                         "(default: the profile kept in DIR)")
    a = ap.parse_args()
    if a.resim:
        return resim_main(a)
    fresh = fresh_ext4 if a.fresh_fs and freshfs_available() else None
    plan = dict(QUICK if a.quick else FULL)
    images = a.images.split(",") if a.images else list(plan["images"])
    nets = [NamedNetwork.parse(n) for n in (a.networks.split(",") if a.networks else plan["networks"])]
    repeat = a.repeat or plan["repeat"]
    ok, why = lab.can_mount()
    if not ok:
        raise SystemExit(f"cannot mount here: {why}")
    started = uptime()
    t0 = time.monotonic()
    if a.profile:
        profile, profile_from = HostProfile.load(a.profile), a.profile
    else:
        print("calibrating this host (the calibration suite)", file=sys.stderr, flush=True)
        suite_dir = Path(a.save_real) / "suite" if a.save_real else None
        profile, profile_from = calibrate(quick=a.quick, fresh=fresh, keep=suite_dir), "made at the start of this run"
    tmp = Path(tempfile.mkdtemp(prefix="heldout-"))
    puller = Puller(tmp / "states", fresh)
    cells: list[dict[str, Any]] = []
    keep = Path(a.save_real) if a.save_real else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        profile.save(keep / "profile.json")
    try:
        for name in images:
            work = tmp / name
            work.mkdir()
            print(f"{name}: preparing", file=sys.stderr, flush=True)
            layout, trace_path = (synthetic_image if name in SYNTHETIC else dataset_image)(name, work)
            manifest, layers = manifest_and_layers(layout)
            assert_held_out(profile, name, manifest, layers)
            model = image_from_layout(f"{layout}:t")
            accesses = [replace(x, t=0.0) for x in read_trace(trace_path)]
            if keep is not None:
                (keep / name).mkdir(exist_ok=True)
                (keep / name / "model.json").write_text(json.dumps(model.to_dict()))
                shutil.copy(trace_path, keep / name / "trace.csv")
            cells += run_image(puller, name, layout, trace_path, model, accesses, profile, nets, repeat,
                               loaded=a.loaded and name in plan["loaded_images"],
                               keep=keep / name if keep is not None else None)  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
    finally:
        puller.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "state_fs": "a new ext4 per pull (loop device, no journal)" if fresh else "root file system, kept to the end",
        "profile": profile_from, "profile_images": profile.images, "profile_networks": profile.suite.get("networks"),
        "profile_warnings": profile.warnings, "quick": a.quick, "repeat": repeat, "cells": cells,
        "summary": summarize(cells), "uptime_before": started, "uptime_after": uptime(),
        "seconds": round(time.monotonic() - t0, 1), "host": platform.node(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    path = Path(a.out) if a.out else (REPO / "benchmarks" / "results" /
                                      f"heldout-{dt.date.today()}-{platform.node()}{'-quick' if a.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    if not a.profile:  # the profile this run made, beside its results
        out["profile"] = str(profile.save(path.with_name(path.stem + "-profile.json")))
    print(json.dumps(out) if a.json else render(out))


def run_image(puller: Puller, name: str, layout: Path, trace: Path, model: Any, accesses: list[Any],
              profile: HostProfile, nets: list[NamedNetwork], repeat: int, *,
              loaded: bool, keep: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every cell of one image: real pulls on each network (and loaded), each against its simulation."""
    cells = []
    with serve(["registry", "serve", "--port", "0", "--layout", f"img={layout}"]) as reg_url:
        for mode in MODES:  # a process's first pulls pay its cold start
            puller.pull(f"{reg_url.removeprefix('http://')}/img:t", mode, trace)
        conditions = [(n, "idle") for n in nets] + ([(NamedNetwork("loopback"), "loaded")] if loaded else [])
        for net, cond in conditions:
            with contextlib.ExitStack() as stack:
                url = reg_url if net.rate is None else stack.enter_context(serve(proxy_args(reg_url, net)))
                if cond == "loaded":
                    stack.enter_context(cpu_hog())
                ref = f"{url.removeprefix('http://')}/img:t"
                real: dict[str, list[Any]] = {m: [] for m in MODES}
                for r in range(repeat):
                    for mode in MODES[r % 3:] + MODES[: r % 3]:
                        print(f"{name} {net.name} {cond} {mode} ({r + 1}/{repeat})", file=sys.stderr, flush=True)
                        run = puller.pull(ref, mode, trace)
                        real[mode].append({**run.summary, "path_span_bytes": path_span_bytes(run.events)})
                        if keep is not None:
                            save_real(keep, net.name, cond, mode, r, run)
            params = profile.params(net)
            if cond == "loaded":
                params = replace(params, host=replace(params.host, cores=max(1, params.host.cores - 1)))
            for mode in MODES:
                sr = simulate(model, mode, workload=accesses, params=params)
                cells.append(cell(name, net.name, cond, mode, real[mode],
                                  {**sr.summary, "path_span_bytes": path_span_bytes(sr.events)}))  # fmt: skip
    return cells


def save_real(keep: Path, network: str, condition: str, mode: str, r: int, run: Any) -> None:
    """One real pull's summary (JSON) and events (pickled frame) under ``keep`` (``--save-real``)."""
    d = keep / network / condition
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{mode}-{r}.json").write_text(json.dumps(run.summary, default=str))
    run.events.to_pickle(d / f"{mode}-{r}.pkl")


def saved_cells(keep: Path) -> Iterator[tuple[str, str, str, str, list[dict[str, Any]], list[Path]]]:
    """(image, network, condition, mode, real summaries, their events' files) of a ``--save-real`` directory."""
    for img in sorted(p for p in keep.iterdir() if (p / "model.json").exists()):
        for net in sorted(p for p in img.iterdir() if p.is_dir()):
            for cond in sorted(p for p in net.iterdir() if p.is_dir()):
                for mode in MODES:
                    files = sorted(cond.glob(f"{mode}-*.json"))
                    if files:
                        yield (img.name, net.name, cond.name, mode, [json.loads(f.read_text()) for f in files],
                               [f.with_suffix(".pkl") for f in files])  # fmt: skip


def resim_main(a: argparse.Namespace) -> None:
    """``--resim DIR``: the cells of a ``--save-real`` run simulated again (no pull), with ``--profile``."""
    import pandas as pd

    from soci_lab.sim.image import ImageModel

    keep = Path(a.resim)
    path = Path(a.profile) if a.profile else keep / "profile.json"
    profile = HostProfile.load(path)
    started, t0 = uptime(), time.monotonic()
    cells, models, traces = [], {}, {}
    for name, net_name, cond, mode, real, events in saved_cells(keep):
        if name not in models:
            models[name] = ImageModel.from_dict(json.loads((keep / name / "model.json").read_text()))
            traces[name] = [replace(x, t=0.0) for x in read_trace(keep / name / "trace.csv")]
        params = profile.params(NamedNetwork.parse(net_name))
        if cond == "loaded":
            params = replace(params, host=replace(params.host, cores=max(1, params.host.cores - 1)))
        sr = simulate(models[name], mode, workload=traces[name], params=params)
        for r, ev in zip(real, events, strict=True):
            if "path_span_bytes" not in r and ev.exists():
                r["path_span_bytes"] = path_span_bytes(pd.read_pickle(ev))
        cells.append(cell(name, net_name, cond, mode, real,
                          {**sr.summary, "path_span_bytes": path_span_bytes(sr.events)}))  # fmt: skip
    out = {"state_fs": f"re-simulated from {keep}", "profile": str(path), "profile_images": profile.images,
           "profile_networks": profile.suite.get("networks"), "profile_warnings": profile.warnings,
           "quick": None, "repeat": None, "cells": cells, "summary": summarize(cells), "uptime_before": started,
           "uptime_after": uptime(), "seconds": round(time.monotonic() - t0, 1), "host": platform.node(),
           "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out) if a.json else render(out))


def path_span_bytes(events: Any) -> int:
    """Compressed bytes of the spans fetched for the workload's own reads and the tar headers they check
    (``span_fetch`` ok, reason/why ``read``), not those readahead, prefetch or the background fetcher
    fetched beside it: which of those finish before the unmount is a race in the real pulls (nodejs: 38 or
    39 requests from run to run, one readahead span). Still a race where a readahead fetch of a span starts
    before the read that needs it (the span is then ``prefetch`` in the real events): nodejs."""
    from soci_lab.events import detail

    sf = events[(events["kind"] == "span_fetch") & events["ok"].astype(bool)]
    if sf.empty:
        return 0
    reason = detail(sf, "reason").astype(object)
    why = reason.where(reason.notna(), detail(sf, "why"))
    return int(sf["bytes"][(why == "read").fillna(False).astype(bool)].sum())


def cell(image: str, network: str, condition: str, mode: str, real: list[dict[str, Any]],
         sim: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    done = [float(r["workload_done_s"]) for r in real]
    med = statistics.median(done)
    bytes_real = sorted({int(r["bytes_fetched"]) for r in real})
    req_real = sorted({int(r["requests"]) for r in real})
    path_real = sorted({int(r["path_span_bytes"]) for r in real if r.get("path_span_bytes") is not None})
    return {
        "image": image, "network": network, "condition": condition, "mode": mode, "real_done_s": done,
        "sim_done_s": float(sim["workload_done_s"]), "ratio": float(sim["workload_done_s"]) / med,
        "real_ready_s": statistics.median(float(r["ready_s"]) for r in real), "sim_ready_s": float(sim["ready_s"]),
        "bytes_real": bytes_real, "bytes_sim": int(sim["bytes_fetched"]), "requests_real": req_real,
        "requests_sim": int(sim["requests"]),
        "bytes_exact": bytes_real == [int(sim["bytes_fetched"])], "requests_exact": req_real == [int(sim["requests"])],
        "bytes_seen": int(sim["bytes_fetched"]) in bytes_real,
        "path_bytes_real": path_real, "path_bytes_sim": sim.get("path_span_bytes"),
        "path_bytes_exact": bool(path_real) and path_real == [sim.get("path_span_bytes")],
    }  # fmt: skip


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The error distribution per mode × network × condition and over all cells."""

    def dist(cs: list[dict[str, Any]]) -> dict[str, Any]:
        errs = sorted(abs(c["ratio"] - 1) for c in cs)
        p90 = errs[min(len(errs) - 1, round(0.9 * (len(errs) - 1)))] if errs else None
        return {"cells": len(errs), "median": statistics.median(errs) if errs else None, "p90": p90,
                "max": errs[-1] if errs else None, "within_15": sum(e <= WITHIN for e in errs),
                "beyond_25": sum(e > BEYOND for e in errs)}  # fmt: skip

    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(f"{c['mode']} | {c['network']} | {c['condition']}", []).append(c)
    total = dist(cells)
    return {
        "by_group": {k: dist(v) for k, v in sorted(groups.items())},
        "all": total,
        "share_within_15": total["within_15"] / total["cells"] if cells else None,
        "goal_met": bool(cells) and total["within_15"] >= 0.9 * total["cells"] and total["beyond_25"] == 0,
        "bytes_exact": sum(c["bytes_exact"] for c in cells), "requests_exact": sum(c["requests_exact"] for c in cells),
        "path_bytes_exact": sum(bool(c.get("path_bytes_exact")) for c in cells),
        "bytes_seen": sum(bool(c.get("bytes_seen")) for c in cells),
    }  # fmt: skip


def render(out: dict[str, Any]) -> str:
    kind = "re-simulated" if out["quick"] is None else "quick" if out["quick"] else "full"
    lines = [f"held-out validation ({kind}); profile: {out['profile']} "
             f"(suite images {', '.join(out['profile_images'])})", f"before: {out['uptime_before']}",
             f"after:  {out['uptime_after']}", "",
             f"{'image':18s} {'network':14s} {'cond':6s} {'mode':10s} {'real s':>8s} {'sim s':>8s} {'sim/real':>8s}"
             "  bytes/requests/path exact"]  # fmt: skip
    for c in out["cells"]:
        real = statistics.median(c["real_done_s"])
        lines.append(f"{c['image']:18s} {c['network']:14s} {c['condition']:6s} {c['mode']:10s} {real:8.3f} "
                     f"{c['sim_done_s']:8.3f} {c['ratio']:8.2f}  {c['bytes_exact']}/{c['requests_exact']}/"
                     f"{c.get('path_bytes_exact')}")  # fmt: skip
    lines += ["", f"{'mode | network | condition':36s} {'n':>3s} {'median':>7s} {'p90':>7s} {'max':>7s} ≤15% >25%"]
    for k, d in out["summary"]["by_group"].items():
        lines.append(f"{k:36s} {d['cells']:3d} {d['median']:7.1%} {d['p90']:7.1%} {d['max']:7.1%} "
                     f"{d['within_15']:4d} {d['beyond_25']:4d}")  # fmt: skip
    s, a = out["summary"], out["summary"]["all"]
    lines.append(f"all: {a['cells']} cells, median {a['median']:.1%}, p90 {a['p90']:.1%}, max {a['max']:.1%}; "
                 f"{a['within_15']} within 15 % ({s['share_within_15']:.0%}), {a['beyond_25']} beyond 25 %; "
                 f"bytes exact {s['bytes_exact']}/{a['cells']}, requests exact {s['requests_exact']}/{a['cells']}, "
                 f"as one of the real pulls {s.get('bytes_seen')}/{a['cells']}, "
                 f"workload-path span bytes exact {s.get('path_bytes_exact')}/{a['cells']}; "
                 f"goal met: {s['goal_met']}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
