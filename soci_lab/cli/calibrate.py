"""``soci-lab calibrate``: measure this host with the calibration suite and save its host profile."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import argtypes


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` command."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure this host (real pulls of synthetic images, loopback and shaped) and save its host profile",
        description=(
            "Builds the calibration suite's synthetic images (entry counts, file sizes, span sizes, gzip and "
            "zstd), pulls each for real in every mode through the embedded registry, on loopback and through "
            "the shaping proxy at shaped networks, and fits this host's costs (inflate, apply, hash per byte; "
            "per-entry costs; FUSE per request; process and server start-up) and how a named network behaves "
            "here. The profile (JSON, versioned: each parameter's value, uncertainty, samples and warning) is "
            "what `simulate --profile` and `compare --sim` predict any image from. Needs root, /dev/fuse and "
            "overlayfs."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="three images, loopback and one shaped network, one pull each (a few minutes)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to save the profile (default: $SOCI_LAB_HOST_PROFILE, else "
                   "$XDG_STATE_HOME/soci-lab/host-profile.json, else ~/.local/state/soci-lab/host-profile.json)")
    p.add_argument("--networks", type=_networks, default=None, metavar="NET[,NET…]",
                   help="shaped networks of the suite, RATE+RTT (default: 200Mbit+10ms quick; "
                   "400Mbit+5ms,50Mbit+10ms full); loopback is always included")
    p.add_argument("--repeat", type=argtypes.positive_int, default=None, metavar="N",
                   help="pulls of each image × mode × network (default 1 quick, 2 full)")
    p.add_argument("--json", action="store_true",
                   help="print {profile, format, suite, parameters, warnings, machine} as one JSON object")
    p.set_defaults(handler=_calibrate)


def _networks(text: str) -> tuple[str, ...]:
    out = tuple(argtypes.network(part) for part in text.split(",") if part.strip())
    if not out:
        raise argparse.ArgumentTypeError("no network given (e.g. 100Mbit+20ms)")
    return out


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"soci-lab: {text}", file=sys.stderr, flush=True)


def _calibrate(args: argparse.Namespace) -> int:
    from ..calsuite import calibrate
    from ..sim.profile import PROFILE_FORMAT, default_path
    from . import print_json

    networks = ("loopback", *args.networks) if args.networks else None
    profile = calibrate(quick=args.quick, networks=networks, repeat=args.repeat, progress=_progress)
    path = profile.save(args.out or default_path())
    if args.json:
        print_json({"profile": str(path), "format": PROFILE_FORMAT, "suite": profile.suite,
                    "parameters": profile.parameters(), "warnings": profile.warnings,
                    "machine": profile.machine})  # fmt: skip
        return 0
    w = sys.stdout.write
    suite = profile.suite
    w(f"host profile: {path}\n")
    w(f"  suite: {len(suite['images'])} images × {len(suite['modes'])} modes × {len(suite['networks'])} networks "
      f"({', '.join(suite['networks'])}), {suite['runs']} pulls in {suite['seconds']} s\n")
    for name, p in profile.parameters().items():
        if p["value"] is None and p["warning"] is None:
            continue
        se = "" if p["uncertainty"] is None else f" ± {p['uncertainty']:.3g}"
        value = "not identified" if p["value"] is None else f"{p['value']:.4g}{se}"
        w(f"  {name:28s} {value}  (n={p['samples']})\n")
    for name, why in profile.warnings.items():
        w(f"  warning: {name}: {why}\n")
    return 0
