"""The benchmark suite: every comparison against its peer, in one run, into a results JSON and BENCHMARKS.md.

    .venv/bin/python -m benchmarks [--quick | --full | --tiny] [--only NAME[,NAME]] [--reps N]
                                   [--results-dir DIR] [--md FILE] [--no-md]

Why one runner: each room wrote its own benchmark, and a number is only trustworthy next to its peer
measured on the same machine, in the same run, several times. The runner calls the rooms' scripts
(``ztoc_build.py``, ``ztoc_random_read.py``, ``remote_throughput.py``, ``netlab_throughput.py``,
``lazy_bench.py``, ``sim_validation.py`` through ``sim_vs_real.py``) and the suite's own comparisons
(``eager_peers.py``, ``lazy_vs_eager.py``) each in its own process, reads their JSON, and reduces each to
rows of *ours*, *peer*, *ratio*, *goal* and *met*, with the median and the spread (min..max) of the
repetitions. Peers are installed here when missing: ratarmount and indexed_gzip into the venv (benchmark
only, not project dependencies), containerd, skopeo, umoci, pigz from Debian (``eager_peers.py``).

Profiles: ``--tiny`` (the test's: one repetition, tiny images, loopback only; numbers meaningless),
``--quick`` (default; a few minutes, small images), ``--full`` (the sizes the issues ask; tens of minutes).
Results go to ``benchmarks/results/<date>-<host>.json`` and the table to ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: sections of BENCHMARKS.md written by benchmarks run on their own, appended after the suite's table
SECTIONS = HERE / "sections"
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
BENCH_DIR = Path(os.environ.get("SOCI_LAB_BENCH_DIR", "/tmp/soci_lab_bench"))

#: per profile: repetitions and sizes handed to each benchmark
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        reps=1, ztoc_src=["/usr/lib/python3.11/email", "/usr/lib/python3.11/json"], rr_reads=30, blob="8MiB",
        lazy_layers=5, lazy_mb=4, lazy_reps=1, eager="tiny", eager_reps=1, lve_images="sample", lve_scale=0.05,
        lve_networks="loopback", sim_mb=24, sim_networks="loopback",
        fleet_hosts="1,10,100", heldout="tiny", fleet_real_hosts="2",
    ),
    "quick": dict(
        reps=3, ztoc_src=["/usr/lib/python3.11", "/usr/lib/python3/dist-packages"], rr_reads=200, blob="64MiB",
        lazy_layers=5, lazy_mb=16, lazy_reps=2, eager="quick", eager_reps=3, lve_images="sample", lve_scale=0.3,
        lve_networks="loopback,100Mbit+20ms", sim_mb=32, sim_networks="loopback,100Mbit+20ms",
        fleet_hosts="1,100,1000", heldout="quick", fleet_real_hosts="2,4",
    ),
    "full": dict(
        reps=5, ztoc_src=None, rr_reads=300, blob="256MiB", lazy_layers=5, lazy_mb=110, lazy_reps=3, eager="full",
        eager_reps=3, lve_images="sample,minbase,python-pandas,nodejs,postgresql", lve_scale=1.0,
        lve_networks="loopback,100Mbit+20ms", sim_mb=64, sim_networks="loopback,1Gbit,100Mbit+20ms",
        sim_image="python-pandas", fleet_hosts="1,10,100,1000,10000", heldout="full", fleet_real_hosts="2,4,8",
    ),
}


# --- running the scripts -----------------------------------------------------------------------------


def run_script(script: str, args: Sequence[str], *, layer_ready: bool = False, timeout: float = 3600) -> Any:
    """Run ``benchmarks/SCRIPT ARGS`` with the venv's python and return the JSON it prints last.

    With ``layer_ready``, ``ztoc_layer.ensure_layer`` is made to return the ``--layer`` given as it is, so
    the ztoc scripts run on the suite's small layer in quick mode (their own would be >= 200 MB)."""
    boot = [
        "import runpy, sys",
        f"sys.path.insert(0, {str(HERE)!r})",
        f"sys.argv = [{script!r}, *{list(args)!r}]",
    ]
    if layer_ready:
        boot += ["import ztoc_layer", "ztoc_layer.ensure_layer = lambda p, *a, **k: p"]
    boot.append(f"runpy.run_path({str(HERE / script)!r}, run_name='__main__')")
    p = subprocess.run([PY, "-c", "\n".join(boot)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{script} exited {p.returncode}: {tail}")
    return parse_json_tail(p.stdout)


def parse_json_tail(text: str) -> Any:
    """The last JSON document in ``text`` (scripts may print progress lines before it)."""
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].lstrip().startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON in the output: {text[-300:]!r}")


def ztoc_layer_for(p: dict[str, Any]) -> tuple[Path, bool]:
    """The gzip layer of the ztoc benchmarks: ``ztoc_layer.py``'s >= 200 MB /usr layer in full mode, else a
    smaller one of the profile's directories (GNU tar, sorted names, ``gzip -6``; cached under BENCH_DIR)."""
    if p["ztoc_src"] is None:
        return BENCH_DIR / "usr-layer.tar.gz", False
    name = "-".join(Path(d).name for d in p["ztoc_src"])
    path = BENCH_DIR / f"small-layer-{name}.tar.gz"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", "/", "--sort=name", "-cf", "-",
                                    *[d.lstrip("/") for d in p["ztoc_src"]]], stdout=subprocess.PIPE)
            subprocess.run(["gzip", "-6"], stdin=tar.stdout, stdout=out, check=True)
            tar.wait()
        tmp.rename(path)
    return path, True


def ensure_pip(*packages: str) -> None:
    """Install benchmark-only peers into the venv when they are missing (idempotent, quiet)."""
    for pkg in packages:
        mod = pkg.replace("-", "_")
        probe = subprocess.run([PY, "-c", f"import {mod}"], capture_output=True)
        if probe.returncode != 0:
            subprocess.run([PY, "-m", "pip", "install", "-q", pkg], check=False, capture_output=True)


# --- rows ------------------------------------------------------------------------------------------


def spread(vals: Sequence[float] | None) -> list[float] | None:
    return [min(vals), max(vals)] if vals else None


def med(vals: Sequence[float] | float | None) -> float | None:
    if vals is None:
        return None
    if isinstance(vals, int | float):
        return float(vals)
    return statistics.median(vals) if vals else None


def row(metric: str, unit: str, ours: Sequence[float] | float | None, peer: Sequence[float] | float | None = None,
        *, peer_name: str = "", goal: str = "none set", check: Callable[[float | None, float], bool] | None = None,
        note: str = "") -> dict[str, Any]:
    """One table row. ``ratio`` is ours/peer in the row's unit (for times lower is better, for rates higher);
    ``check(ratio, ours)`` decides ``met`` (None when no goal is set)."""
    o, p = med(ours), med(peer)
    ratio = (o / p) if (o is not None and p) else None
    met = None
    if check is not None and o is not None:
        try:
            met = bool(check(ratio, o))
        except TypeError:
            met = None
    return {
        "metric": metric, "unit": unit, "ours": o, "peer": p, "peer_name": peer_name,
        "ours_spread": spread(ours) if isinstance(ours, list | tuple) else None,
        "peer_spread": spread(peer) if isinstance(peer, list | tuple) else None,
        "n": len(ours) if isinstance(ours, list | tuple) else 1,
        "ratio": ratio, "goal": goal, "met": met, "note": note,
    }


# --- the benchmarks --------------------------------------------------------------------------------


def b_ztoc_build(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """zTOC build vs ``gzip -dc`` on the same gzip layer (issue 3; goal <= 1.25x gzip's time)."""
    layer, ready = ztoc_layer_for(p)
    raw = run_script("ztoc_build.py", ["--json", "--reps", str(p["reps"]), "--layer", str(layer)],
                     layer_ready=ready)
    runs = raw["runs"]
    size = f"{raw['layer_bytes'] / 1e6:.0f} MB gzip layer"
    return [row("zTOC build time (wall)", "s", [r["build_wall"] for r in runs], [r["gzip_wall"] for r in runs],
                peer_name="gzip -dc > /dev/null", goal="ratio <= 1.25", check=lambda r, o: r <= 1.25,
                note=size)], raw


def b_ztoc_random_read(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Random 4 KiB reads/s through the zTOC (span fetched, verified, inflated) vs indexed_gzip (issue 3)."""
    ensure_pip("indexed_gzip")
    layer, ready = ztoc_layer_for(p)
    raw = run_script("ztoc_random_read.py", ["--json", "--reps", str(p["reps"]), "--reads", str(p["rr_reads"]),
                                             "--layer", str(layer)], layer_ready=ready)
    runs = raw["runs"]
    return [
        row("random 4 KiB reads, verified", "reads/s", runs["soci_lab_verified"], runs.get("indexed_gzip") or None,
            peer_name="indexed_gzip (same spacing, 4 KiB buffer)", note="higher is better; no goal set in issue 3"),
        row("random 4 KiB reads, unverified", "reads/s", runs["soci_lab_unverified"],
            runs.get("indexed_gzip") or None, peer_name="indexed_gzip (same spacing, 4 KiB buffer)",
            note="higher is better"),
    ], raw


def b_remote(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Blob download through soci_lab.remote (verified, to a file) vs curl -o file (issue 2; goal >= 0.8)."""
    raw = run_script("remote_throughput.py", ["--json", "--size", p["blob"], "--runs", str(p["reps"])])
    rows = []
    for r in raw["results"]:
        m = r.get("MBps_runs") or r["MBps"]  # per-run MB/s give the spread; older results have medians only
        rows.append(row(f"blob download, {r['registry']} registry", "MB/s", m["client_file"], m["curl_file"],
                        peer_name="curl -o file", goal="ratio >= 0.8", check=lambda rt, o: rt >= 0.8,
                        note=f"{p['blob']} blob; {r['runs']} runs, alternating with curl"))
    return rows, raw


def b_netlab(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The embedded registry vs CNCF distribution, both read by curl (netlab's server side)."""
    raw = run_script("netlab_throughput.py", ["--json", "--size", p["blob"], "--reps", str(p["reps"]),
                                               "--clients", "curl"])
    t = raw["throughput_MBps"]
    return [row("blob serving, read by curl", "MB/s", t["embedded/curl"], t["distribution/curl"],
                peer_name="distribution (docker-registry)", note="embedded registry; higher is better")], raw


def b_lazy(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Lazy mount-to-ready, cold small-file latency, warm FUSE throughput, cold random reads vs ratarmount."""
    ensure_pip("ratarmount")
    runs = [run_script("lazy_bench.py", ["--json", "--layers", str(p["lazy_layers"]), "--layer-mb",
                                         str(p["lazy_mb"])]) for _ in range(p["lazy_reps"])]
    size = runs[0]["image_bytes_uncompressed"] / 1e6
    g = lambda k: [r[k] for r in runs if r.get(k) is not None]  # noqa: E731
    one_span = [r["span_fetch_ms_median"] + r["span_decompress_ms_median"] for r in runs]
    big = size >= 500 and p["lazy_layers"] >= 5
    rows = [
        row("lazy mount to ready", "s", g("mount_to_ready_s"), goal="< 1 s" + ("" if big else " (at >= 500 MB)"),
            check=(lambda r, o: o < 1.0), note=f"{p['lazy_layers']} layers, {size:.0f} MB uncompressed"),
        row("cold small-file read", "ms", g("cold_small_read_ms_median"), one_span,
            peer_name="one span fetch + decompress (same run)", goal="ratio < 2", check=lambda r, o: r < 2),
        row("warm sequential read through FUSE", "MB/s", g("warm_sequential_MBps"), goal=">= 300 MB/s",
            check=lambda r, o: o >= 300),
    ]
    if all("random40_ratarmount_s" in r for r in runs):
        rows.append(row("40 cold random small-file reads", "s", g("random40_lazy_s"), g("random40_ratarmount_s"),
                        peer_name="ratarmount (own index, same tar.gz)", note="lower is better; no goal set"))
    else:
        rows.append(row("40 cold random small-file reads", "s", g("random40_lazy_s"),
                        note="ratarmount not available"))
    return rows, runs


def b_eager(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Parallel / sequential eager pulls vs containerd 1.6, skopeo+umoci and the physical bound (issue 5)."""
    raw = run_script("eager_peers.py", ["--json", "--size", p["eager"], "--reps", str(p["eager_reps"])])
    t = raw["times_s"]
    img = raw["image"]
    desc = (f"{img['layers']} layers, {img['compressed_bytes'] / 1e6:.0f} MB gzip, "
            f"{img['uncompressed_bytes'] / 1e6:.0f} MB tar")
    rows = []
    cd = t.get("containerd")
    for mode in ("parallel", "sequential"):
        ours = t[f"soci_lab-{mode}"]
        if cd:
            rows.append(row(f"eager {mode} pull+unpack", "s", ours, cd, peer_name="containerd 1.6 ctr images pull "
                            "(pull + unpack to overlayfs snapshotter)",
                            goal="ratio <= 0.7" if mode == "parallel" else "none set",
                            check=(lambda r, o: r <= 0.7) if mode == "parallel" else None, note=desc))
        if "skopeo+umoci" in t:
            rows.append(row(f"eager {mode} pull+unpack", "s", ours, t["skopeo+umoci"],
                            peer_name="skopeo copy + umoci raw unpack", note=desc))
    dec = raw.get("decompress_part") or "decompress"  # the faster of pigz and ISA-L
    for disk in ("disk", "disk_tree"):
        parts = {k: statistics.median(t[k]) for k in ("network", dec, disk) if k in t}
        if disk not in parts:
            continue
        bound_part = max(parts, key=parts.get)  # type: ignore[arg-type]
        part_txt = ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
        what = ("disk = the uncompressed bytes streamed to one file" if disk == "disk" else
                "disk = GNU tar -xf of the decompressed tars (creating the files)")
        rows.append(row("eager parallel pull+unpack", "s", t["soci_lab-parallel"], t[bound_part],
                        peer_name=f"physical bound ({'bytes' if disk == 'disk' else 'files'}) = {bound_part}",
                        goal="ratio <= 1.3", check=lambda r, o: r <= 1.3, note=f"{what}; parts: {part_txt}"))
        if cd:
            rows.append(row("containerd pull+unpack (context)", "s", cd, t[bound_part],
                            peer_name=f"physical bound ({'bytes' if disk == 'disk' else 'files'}) = {bound_part}",
                            note="how far the peer is from the same bound"))
    cpu = raw.get("cpu_s") or {}
    if raw.get("bound_cpu_s") and "soci_lab-parallel" in cpu:
        parts_txt = " + ".join(f"{k} {v:.2f}" for k, v in raw["bound_cpu_parts"].items())
        rows.append(row("eager parallel pull+unpack", "s", t["soci_lab-parallel"], raw["bound_cpu_s"],
                        peer_name="CPU-sum bound = CPU of the parts / cores",
                        note=f"{parts_txt} CPU-s on {raw['cpus']} cores: the parts need the same cores at once"))
        for name in ("soci_lab-parallel", "soci_lab-sequential", "containerd"):
            if name in cpu:
                rows.append(row(f"{name} CPU", "CPU-s", cpu[name], sum(raw["bound_cpu_parts"].values()),
                                peer_name="CPU of the bound's parts (network + decompress + hash + tar -xf)",
                                note="user + system of the process and its children; containerd's includes "
                                "the daemon's start"))
    if raw.get("bound_machine_cpu_s"):
        parts_txt = " + ".join(f"{k} {v:.2f}" for k, v in raw["bound_machine_cpu_parts"].items())
        rows.append(row("eager parallel pull+unpack", "s", t["soci_lab-parallel"], raw["bound_machine_cpu_s"],
                        peer_name="machine CPU-sum bound = whole-machine CPU of the parts / cores",
                        note=f"{parts_txt} CPU-s on {raw['cpus']} cores (the registry's share of the network "
                        "part included; files without write-back, as a pull leaves them)"))
    return rows, raw


def b_lazy_vs_eager(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Time to workload done with start-up traces: lazy vs parallel and sequential eager, per network."""
    raw = run_script("lazy_vs_eager.py", ["--json", "--images", p["lve_images"], "--scale", str(p["lve_scale"]),
                                           "--reps", str(p["reps"] if p["reps"] < 3 else 3),
                                           "--networks", p["lve_networks"]])
    rows = []
    for c in raw["cells"]:
        d = c["workload_done_s"]
        for eager in ("parallel", "sequential"):
            rows.append(row(f"workload done, {c['image']}, {c['network']}: lazy", "s", d["lazy"], d[eager],
                            peer_name=f"{eager} eager pull", note="lower is better; no goal set"))
            rows[-1]["network"] = c["network"]
    for name, why in raw.get("skipped", {}).items():
        rows.append(row(f"workload done, {name}", "s", None, note=f"skipped: {why}"))
    return rows, raw


def b_sim(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Simulated vs real time to workload done, per mode and network (issue 7; goal within 15 %, 10 % ideal).

    Full profile: ``sim_fullscale.py`` on a cached dataset image (its per-network calibrations written to
    ``datasets/calibration/``); quick and tiny: ``sim_vs_real.py`` on a generated image of ``sim_mb`` MB."""
    if p.get("sim_image"):
        raw = run_script("sim_fullscale.py", ["--json", "--image", p["sim_image"], "--repeat", str(min(p["reps"], 3)),
                                              "--cal-rounds", "2", "--networks", p["sim_networks"],
                                              "--save-calibrations", str(REPO / "datasets" / "calibration")])
    else:
        raw = run_script("sim_vs_real.py", ["--json", "--mb", str(p["sim_mb"]), "--repeat", str(min(p["reps"], 3)),
                                             "--networks", p["sim_networks"]])
    rows = []
    for c in raw["cells"]:
        exact = c["requests_real"] == [c["requests_sim"]] and c["bytes_real"] == [c["bytes_sim"]]
        rows.append(row(f"sim vs real, {c['mode']}, {c['network']}", "s", c["sim_done_s"], c["real_done_s"],
                        peer_name="real pull (workload done)", goal="within ±15 % (ratio 0.85–1.15)",
                        check=lambda r, o: abs(r - 1) <= 0.15,
                        note=("requests and bytes agree exactly" if exact else
                              f"requests real {c['requests_real']} sim {c['requests_sim']}, "
                              f"bytes real {c['bytes_real']} sim {c['bytes_sim']}")))
        rows[-1]["network"] = c["network"]
    return rows, raw


def b_fleet_scale(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The fleet simulator's scaling curve (issue 19): hosts → CPU and wall time and peak memory for a 1 GB
    image, a 5,000-access trace, lazy pulls, per arrival kind; goal: 10,000 hosts in ≤ 60 s on one core and
    ≤ 4 GB (the simulation is one thread: its CPU time is its time on one core; wall time on a shared
    machine is in the note)."""
    raw = run_script("fleet_scale.py", ["--json", "--hosts", p["fleet_hosts"], "--arrivals", "all,waves,poisson"])
    return fleet_scale_rows(raw), raw


def fleet_scale_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for pt in raw["points"]:
        big = pt["hosts"] >= 10000
        rss = pt["peak_rss_mb"]
        hosts = f"{pt['hosts']:,} host" + ("s" if pt["hosts"] != 1 else "")
        rows.append(row(f"fleet sim, {hosts}, {pt['arrivals']} arrivals (CPU time)", "s", pt["cpu_s"],
                        goal="≤ 60 s on one core, ≤ 4 GB" if big else "none set",
                        check=(lambda r, o, rss=rss: o <= 60 and rss <= 4096) if big else None,
                        note=f"wall {pt['wall_s']} s, peak RSS {rss:.0f} MB, {pt['groups']:,} groups, "
                        f"{pt['recomputes']:,} rate updates, {pt['requests_per_host']} requests per host, exact"))
        rows[-1]["network"] = "none (simulated: 10 Gbit/s egress, 1 Gbit/s NICs)"
    return rows


def b_fleet_real(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The fleet model against N real concurrent pulls through one shaping proxy (issue 19, point 4): median
    within 15 %, p90 within 25 %, bytes and requests exact per host; calibrated on lone pulls only."""
    raw = run_script("fleet_real.py", ["--json", "--hosts", p["fleet_real_hosts"], "--repeat",
                                        str(min(p["reps"], 2)), "--cal-rounds", "2"])
    return fleet_real_rows(raw), raw


def fleet_real_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in raw["cells"]:
        exact = ("bytes and requests per host exact" if c["exact"] else
                 f"bytes real {c['bytes_real']} sim {c['bytes_sim']}, requests real {c['requests_real']} "
                 f"sim {c['requests_sim']}")
        for name in ("ready", "workload_done"):
            for pct, tol in ((50, 0.15), (90, 0.25)):
                x = c[f"{name}_p{pct}"]
                rows.append(row(f"fleet vs real, {c['hosts']} hosts at once, {c['mode']}, {name} p{pct}", "s",
                                x["sim"], x["real"], peer_name=f"real hosts' p{pct} ({c['real_hosts']} pulls)",
                                goal=f"within ±{tol:.0%} (ratio {1 - tol:.2f}–{1 + tol:.2f})",
                                check=lambda r, o, tol=tol: abs(r - 1) <= tol, note=exact))
                rows[-1]["network"] = f"{raw['egress']} through one shaping proxy (the registry's egress)"
    return rows


#: ``heldout.py``'s arguments per profile (tiny: one synthetic image on loopback, numbers meaningless)
HELDOUT_ARGS = {
    "tiny": ["--quick", "--images", "ho-one-big-file", "--networks", "loopback", "--no-loaded"],
    "quick": ["--quick"],
    "full": [],
}


def b_heldout(p: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Held-out validation (issue 17, point 5): the simulator predicts images, networks and a loaded host the
    host profile was never fitted on; per mode × network × condition the |sim/real − 1| of time to workload
    done (median of the cells; spread min..max), and the share of cells within 15 % (goal ≥ 90 %, none > 25 %)."""
    profile = p.get("heldout", "quick")
    raw = run_script("heldout.py", ["--json", "--out", str(BENCH_DIR / f"heldout-{profile}.json"),
                                    *HELDOUT_ARGS.get(profile, ["--quick"])], timeout=4 * 3600)  # fmt: skip
    rows = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in raw["cells"]:
        groups.setdefault(f"{c['mode']}, {c['network']}, {c['condition']}", []).append(c)
    for key, cells in sorted(groups.items()):
        errs = [abs(c["ratio"] - 1) for c in cells]
        exact = all(c["bytes_exact"] and c["requests_exact"] for c in cells)
        rows.append(row(f"held-out |sim/real - 1|, {key}", "fraction", errs, goal="≤ 0.15 in each cell, none > 0.25",
                        check=lambda r, o, errs=errs: max(errs) <= 0.15,
                        note=f"{len(cells)} images; bytes and requests " + ("exact" if exact else "NOT all exact")))
        rows[-1]["network"] = cells[0]["network"]
    s = raw["summary"]
    rows.append(row("held-out cells within 15 %", "share", s["share_within_15"], goal="≥ 0.9, none beyond 25 %",
                    check=lambda r, o: o >= 0.9 and s["all"]["beyond_25"] == 0,
                    note=f"{s['all']['cells']} cells, {s['all']['beyond_25']} beyond 25 %; median "
                    f"{s['all']['median']:.3f}, p90 {s['all']['p90']:.3f}, max {s['all']['max']:.3f}; "
                    f"profile images: {', '.join(raw['profile_images'])}"))  # fmt: skip
    rows[-1]["network"] = "loopback, shaped"
    return rows, raw


BENCHMARKS: dict[str, Callable[[dict[str, Any]], tuple[list[dict[str, Any]], Any]]] = {
    "ztoc_build": b_ztoc_build,
    "ztoc_random_read": b_ztoc_random_read,
    "remote_throughput": b_remote,
    "netlab_throughput": b_netlab,
    "lazy": b_lazy,
    "eager": b_eager,
    "lazy_vs_eager": b_lazy_vs_eager,
    "sim_vs_real": b_sim,
    "fleet_scale": b_fleet_scale,
    "fleet_real": b_fleet_real,
    "heldout": b_heldout,
}


# --- output ----------------------------------------------------------------------------------------


#: the network each benchmark's rows measured over, unless a row names its own (``row["network"]``)
NETWORK_OF = {
    "ztoc_build": "none (a local gzip file)",
    "ztoc_random_read": "none (a local gzip file)",
    "remote_throughput": "loopback",
    "netlab_throughput": "loopback",
    "lazy": "loopback",
    "eager": "loopback",
}
#: networks a row's metric may name (older rows did not carry a ``network`` key)
_NETWORK_WORDS = ("100Mbit+20ms", "1Gbit", "loopback")


def network_of(name: str, r: dict[str, Any]) -> str:
    """The network a row was measured over: its own ``network``, a network its metric names, else the
    benchmark's (:data:`NETWORK_OF`)."""
    if r.get("network"):
        return str(r["network"])
    for word in _NETWORK_WORDS:
        if word in r["metric"]:
            return word
    return NETWORK_OF.get(name, "not recorded")


def fs_of(b: dict[str, Any]) -> str:
    """The file system a benchmark wrote to: recorded (``conditions.fs``), or what its raw result says."""
    cond = b.get("conditions") or {}
    if cond.get("fs"):
        return str(cond["fs"])
    raw = b.get("raw") if isinstance(b.get("raw"), dict) else {}
    if raw.get("fs") == "fresh" or "new ext4" in str(raw.get("state_fs", "")):
        return "a new ext4 per run"
    return "the shared root ext4 (/tmp)"


def commit_of(b: dict[str, Any]) -> str:
    """The commit a benchmark ran on: recorded, or (older entries) the commit that was HEAD at its date."""
    cond = b.get("conditions") or {}
    if cond.get("commit"):
        return str(cond["commit"])
    date = b.get("date")
    if not date:
        return "unknown"
    p = subprocess.run(["git", "rev-list", "-1", f"--before={date}", "HEAD"], cwd=REPO, capture_output=True,
                       text=True)
    return f"≈{p.stdout.strip()[:7]}" if p.stdout.strip() else "unknown"


def conditions(name: str, b: dict[str, Any], r: dict[str, Any], cpus: int | None) -> str:
    """A row's conditions: file system, network, load (1-minute average before the benchmark, per CPU count),
    and when and on which code it ran."""
    load = (b.get("loadavg_before") or [math.nan])[0]
    busy = " (busy)" if cpus and load > cpus else ""
    when = str(b.get("date", ""))[:16].replace("T", " ")
    return f"{fs_of(b)}; {network_of(name, r)}; load {load:.1f}{busy} on {cpus} CPUs; {when} UTC, `{commit_of(b)}`"


def current_fs(path: Path) -> str:
    """The type and mount point of the file system holding ``path`` (from /proc/mounts)."""
    best = ("", "unknown")
    try:
        real = os.path.realpath(path)
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, fstype, *_ = line.split()
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype)
    except OSError:
        pass
    return f"{best[1]} ({best[0]})" if best[0] else "unknown"


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(v: float | None, sp: list[float] | None, unit: str) -> str:
    if v is None:
        return "—"
    s = f"{fmt(v)} {unit}"
    if sp and sp[0] != sp[1]:
        s += f" ({fmt(sp[0])}–{fmt(sp[1])})"
    return s


def commands(*histories: str) -> str:
    """The commands that made a results file, each once, in the order of their last run ("a; then b").

    A partial re-run (``--only``) joins the same day's results; listing every run made the "Re-run with"
    line of BENCHMARKS.md grow by one command per run (28 by the end of one day)."""
    runs = [c for h in histories for c in h.split("; then ") if c]
    last = {c: i for i, c in enumerate(runs)}
    return "; then ".join(sorted(last, key=last.__getitem__))


def markdown(doc: dict[str, Any]) -> str:
    """BENCHMARKS.md from a results document: one table, then per-benchmark notes and errors."""
    out = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py` — do not edit by hand. Re-run with:",
        "",
        f"    {commands(doc['command'])}",
        "",
        f"Profile **{doc['profile']}**, {doc['date']} on `{doc['host']}` ({doc['cpus']} CPUs, load "
        f"{doc['loadavg'][0]:.1f} at start), commit `{doc['commit']}`; results in `{doc['results_file']}`.",
        "",
        "Each value is the median of the repetitions, with the spread (min–max) in brackets. *ratio* is ours /"
        " peer in the row's unit: for times lower is better, for rates (MB/s, reads/s) higher is better."
        " What the profiles say about the goals not met: `benchmarks/README.md`, *Findings*.",
        "",
        "*conditions*: the file system the run wrote to, the network, the 1-minute load average before the"
        " benchmark (busy: more than one runnable task per CPU), and when and on which commit it ran (≈: the"
        " commit that was HEAD then, for entries that did not record theirs). Ours and peer in one row were"
        " measured in the same run, so their ratio holds under its conditions; rows of different conditions"
        " are not comparable with each other.",
        "",
        "| benchmark | metric | ours | peer | ratio | goal | met? | conditions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for name, b in doc["benchmarks"].items():
        if b.get("error"):
            out.append(f"| {name} | **error** | — | — | — | — | — | — |")
            notes.append(f"- **{name}**: error: `{b['error'].splitlines()[-1][:300]}`")
            continue
        for r in b["rows"]:
            met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
            peer = cell(r["peer"], r["peer_spread"], r["unit"])
            if r["peer_name"] and r["peer"] is not None:
                peer += f" — {r['peer_name']}"
            ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
            cells = [name, r["metric"], cell(r["ours"], r["ours_spread"], r["unit"]), peer, ratio, r["goal"], met,
                     conditions(name, b, r, doc.get("cpus"))]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            if r["note"]:
                notes.append(f"- {name} / {r['metric']}: {r['note']}")
        notes.append(f"- {name}: {b['seconds']:.0f} s of suite time, run {b.get('date', doc['date'])}, load "
                     f"{b.get('loadavg_before', doc['loadavg'])[0]:.1f} before")
    out += fleet_section(doc)
    removed = doc.get("removed") or {}
    if removed:
        out += ["", "## Removed", ""]
        out += [f"- **{name}** ({why['date']}): {why['reason']}" for name, why in removed.items()]
    out += ["", "## Notes", "", *notes, ""]
    # benchmarks run outside the suite (root, containerd …) keep their section in benchmarks/sections/
    for section in sorted(SECTIONS.glob("*.md")):
        out += [section.read_text().rstrip(), ""]
    return "\n".join(out)


def fleet_section(doc: dict[str, Any]) -> list[str]:
    """The fleet benchmarks' two tables (issue 19): the simulator's scaling curve and the model's agreement with
    real concurrent pulls, with their commands. Their lines do not start with a pipe (GitHub renders them as
    tables all the same): the suite's table is the only one whose lines do, as ``tests/benchmarks`` reads it."""
    scale = (doc["benchmarks"].get("fleet_scale") or {}).get("raw")
    real = (doc["benchmarks"].get("fleet_real") or {}).get("raw")
    if not scale and not real:
        return []
    out = ["", "## Fleet (issue 19)", ""]
    if scale:
        pts = scale["points"]
        first = pts[0]
        out += [
            "The fleet simulator's scaling curve: a synthetic image of "
            f"{first['image_bytes'] / 1e9:g} GB, a start-up trace of {first['accesses']:,} accesses, lazy pulls, "
            "a 10 Gbit/s registry egress, 1 Gbit/s NICs; every point in a fresh process (peak RSS is its own). "
            "*CPU* is the simulation's CPU time (one thread: its time on one core), *wall* its elapsed time on the "
            f"shared machine (load {scale['load_avg_start'][0]:.1f} at the start, "
            f"{scale['load_avg_end'][0]:.1f} at the end, 2 CPUs). Poisson arrivals (100 hosts/s) make one group "
            "per host and are exact; `all` is one group, `waves` one per wave of 1,000 hosts every 5 s.",
            "",
            "    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/run.py --full --only fleet_scale",
            "    # or: .venv/bin/python benchmarks/fleet_scale.py --hosts 1,10,100,1000,10000 "
            "--arrivals all,waves,poisson",
            "",
            "arrivals | hosts | CPU | wall | peak RSS | groups | rate updates | flows in flight (max) | ready p50 | "
            "done p50 | done p99",
            "---|---|---|---|---|---|---|---|---|---|---",
        ]
        for pt in pts:
            out.append(f"{pt['arrivals']} | {pt['hosts']:,} | {pt['cpu_s']:.2f} s | {pt['wall_s']:.2f} s | "
                       f"{pt['peak_rss_mb']:.0f} MB | {pt['groups']:,} | {pt['recomputes']:,} | {pt['max_flows']:,} | "
                       f"{pt['ready_p50_s']:.1f} s | {pt['done_p50_s']:.1f} s | {pt['done_p99_s']:.1f} s")
    if real:
        out += [
            "",
            f"The fleet model against real concurrent pulls: N worker processes (own state directories) pull one "
            f"image ({real['image_compressed_mb']:.1f} MB compressed, a trace of {real['accesses']} accesses) at "
            f"once through one shaping proxy at {real['egress']} (the registry's egress), {real['repeat']} rounds "
            f"per cell, hosts pooled. The model's host calibration was fitted on {real['fitted_on']}; the "
            "egress is the proxy's setting. Ratios are sim / real; the goal: median within 15 %, p90 within 25 %, "
            f"bytes and requests exact per host. Before: `{real['uptime_before']}`; after: "
            f"`{real['uptime_after']}`.",
            "",
            "    flock /tmp/soci-lab-bench.lock .venv/bin/python benchmarks/run.py --full --only fleet_real",
            "    # or: .venv/bin/python benchmarks/fleet_real.py --hosts 2,4,8 --repeat 2 --cal-rounds 2",
            "",
            "N | mode | time to | real p50 | sim p50 | ratio | real p90 | sim p90 | ratio | bytes, requests per host",
            "---|---|---|---|---|---|---|---|---|---",
        ]
        for c in real["cells"]:
            for name in ("ready", "workload_done"):
                m, q = c[f"{name}_p50"], c[f"{name}_p90"]
                out.append(f"{c['hosts']} | {c['mode']} | {name.replace('_', ' ')} | {m['real']:.2f} s | "
                           f"{m['sim']:.2f} s | {m['ratio']:.2f}{'' if m['within'] else ' ✗'} | {q['real']:.2f} s | "
                           f"{q['sim']:.2f} s | {q['ratio']:.2f}{'' if q['within'] else ' ✗'} | "
                           f"{'exact' if c['exact'] else 'differ'}")
    return out


def git_commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="profile", action="store_const", const="quick")
    g.add_argument("--full", dest="profile", action="store_const", const="full")
    g.add_argument("--tiny", dest="profile", action="store_const", const="tiny")
    ap.add_argument("--only", action="append", default=[], help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--reps", type=int, help="repetitions (overrides the profile's)")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    ap.add_argument("--md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--no-md", action="store_true")
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only re-write --md from a results file")
    ap.add_argument("--drop", nargs=2, action="append", default=[], metavar=("NAME", "REASON"),
                    help="with --render: remove a benchmark's entry from the results file (stale or measured under "
                    "other conditions), keeping the reason in the file and in the table's Removed section")
    a = ap.parse_args(argv)
    if a.drop and not a.render:
        ap.error("--drop needs --render RESULTS_JSON")
    if a.render:
        doc = json.loads(a.render.read_text())
        for name, reason in a.drop:
            entry = doc["benchmarks"].pop(name, None)
            if entry is None:
                ap.error(f"{name} is not in {a.render}")
            doc.setdefault("removed", {})[name] = {
                "reason": reason, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        if a.drop:
            a.render.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        a.md.write_text(markdown(doc))
        print(f"table: {a.md}")
        return 0
    profile = a.profile or "quick"
    params = dict(PROFILES[profile])
    if a.reps:
        params.update(reps=a.reps, lazy_reps=a.reps, eager_reps=a.reps)
    only = [n for o in a.only for n in o.split(",") if n]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = only or list(BENCHMARKS)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    now = dt.datetime.now(dt.UTC)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    results_file = a.results_dir / f"{now:%Y-%m-%d}-{host}.json"
    argv_txt = " ".join(["benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    doc: dict[str, Any] = {
        "format": "soci_lab.benchmarks/1",
        "command": f".venv/bin/python {argv_txt}",
        "profile": profile,
        "params": params,
        "date": now.isoformat(timespec="seconds"),
        "host": host,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "loadavg": list(os.getloadavg()),
        "commit": git_commit(),
        "results_file": str(results_file.relative_to(REPO)) if results_file.is_relative_to(REPO) else str(results_file),
        "benchmarks": {},
    }
    if only and results_file.exists():  # a partial re-run joins the same day's results of the same profile
        old = json.loads(results_file.read_text())
        if old.get("profile") == profile:
            doc["benchmarks"] = old.get("benchmarks", {})
            for b in doc["benchmarks"].values():  # entries from before keep their own date and load
                b.setdefault("date", old.get("date"))
                b.setdefault("loadavg_before", old.get("loadavg"))
            doc["command"] = commands(old.get("command", ""), doc["command"])
            if old.get("removed"):  # what was removed stays removed until it is re-run
                doc["removed"] = {k: v for k, v in old["removed"].items() if k not in names}
    for name in names:
        t0 = time.monotonic()
        print(f"[{name}] running ({profile}) …", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"rows": [], "raw": None, "error": None, "date": dt.datetime.now(dt.UTC).isoformat(
            timespec="seconds"), "loadavg_before": list(os.getloadavg()),
            "conditions": {"fs": current_fs(BENCH_DIR), "commit": doc["commit"]}}
        try:
            entry["rows"], entry["raw"] = BENCHMARKS[name](params)
        except Exception as e:  # one benchmark failing must not lose the others' numbers
            entry["error"] = f"{type(e).__name__}: {e}"
        entry["seconds"] = round(time.monotonic() - t0, 1)
        entry["loadavg_after"] = list(os.getloadavg())
        doc["benchmarks"][name] = entry
        for r in entry["rows"]:
            print(f"  {r['metric']}: ours {fmt(r['ours'])} {r['unit']}, peer {fmt(r['peer'])}, ratio "
                  f"{fmt(r['ratio'])}, goal {r['goal']}, met {r['met']}", file=sys.stderr, flush=True)
        if entry["error"]:
            print(f"  error: {entry['error']}", file=sys.stderr, flush=True)
        results_file.write_text(json.dumps(doc, indent=1, default=str) + "\n")  # partial results survive
    if not a.no_md:
        a.md.write_text(markdown(doc))
    print(f"results: {results_file}" + ("" if a.no_md else f"; table: {a.md}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
