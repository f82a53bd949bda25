"""``soci-lab compare`` and ``soci-lab demo``: runs side by side, real and simulated, and the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import UsageError, argtypes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="pull REF in several modes (real, and simulated with --sim) and write a report",
        description="Runs each mode for real (and simulated with --sim, from this host's profile and the named "
        "network; --in-sample fits the simulator on the real runs instead) and "
        "writes DIR/report.html, DIR/summary.csv, DIR/events.csv and the plots as PNG. The workload is a "
        "trace (--trace FILE) or a command after `--` run chrooted in the rootfs.",
    )
    p.add_argument("ref", type=argtypes.reference_text, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    p.add_argument("--modes", type=argtypes.modes, default=argtypes.MODES, metavar="M[,M…]",
                   help="comma-separated from lazy, parallel, sequential (default: all three)")
    p.add_argument("--sim", action="store_true",
                   help="also simulate each mode, from this host's profile (soci-lab calibrate; a quick one is made "
                   "first where there is none)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--profile", type=argtypes.existing_file, default=None, metavar="FILE",
                     help="--sim: the host profile to simulate with (default: the one soci-lab calibrate saved)")
    how.add_argument("--in-sample", action="store_true",
                     help="--sim: fit the simulator on these real runs instead (labelled in-sample)")
    p.add_argument("--network", type=argtypes.network, default=None, metavar="NET",
                   help="--sim: the network the pulls go through: loopback, RATE or RATE+RTT (e.g. 100Mbit+20ms); "
                   "default loopback for a registry on this host")
    p.add_argument("--trace", type=argtypes.existing_file, default=None, metavar="FILE",
                   help="access trace CSV (t_s,op,path,offset,size)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--config", type=argtypes.config_file, default=None, metavar="FILE", help="soci-style config.toml")
    p.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(handler=_compare, takes_cmd=True)

    d = subparsers.add_parser(
        "demo",
        help="the main job on embedded defaults: sample image, embedded registry, lazy vs eager, real and sim",
        description="Builds the sample image, serves it from the embedded registry, indexes it, compares lazy, "
        "parallel and sequential for real and simulated, and writes the report.",
    )
    d.add_argument("--out", default="demo-out", metavar="DIR", help="report folder (default: demo-out)")
    d.add_argument("--scale", type=argtypes.positive_float, default=1.0, metavar="F",
                   help="size of the sample image (default 1.0, ~60 MB)")
    d.add_argument("--no-sim", action="store_true", help="skip the simulated runs")
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    d.set_defaults(handler=_demo)


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"soci-lab: {text}", file=sys.stderr, flush=True)


def _emit(result, out: Path, as_json: bool) -> None:
    from . import print_json

    summary = result.summary
    if as_json:
        print_json(
            {
                "report": str(result.report),
                "summary": summary.to_dict(orient="records"),
                "skipped": result.skipped,
                "notes": result.notes,
                "calibration": getattr(result, "calibration_source", None),
            }
        )
        return
    print(result.text())  # the summary with units, the findings, notes and what was skipped
    print(f"report: {result.report}")


def _compare(args: argparse.Namespace) -> int:
    from ..compare import compare

    cmd = list(args.cmd)
    if cmd and args.trace:
        raise UsageError("give --trace or a command after --, not both")
    if not args.sim and (args.profile or args.in_sample or args.network):
        raise UsageError("--profile, --in-sample and --network say how to simulate: give --sim too")
    result = compare(
        args.ref,
        args.modes,
        sim=args.sim,
        trace=args.trace,
        cmd=cmd or None,
        out=args.out,
        config=args.config,
        insecure=args.insecure,
        progress=_progress,
        calibration="in-sample" if args.in_sample else args.profile,
        network=args.network,
    )
    _emit(result, Path(args.out), args.json)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    result = run_demo(args.out, scale=args.scale, sim=not args.no_sim, progress=_progress)
    _emit(result, Path(args.out), args.json)
    return 0
