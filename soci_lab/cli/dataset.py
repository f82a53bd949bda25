"""``soci-lab dataset``: list, build (cached) and record the startup of the Debian-built dataset images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import argtypes


def register(subparsers: Any) -> None:
    """Add ``dataset list``, ``dataset build`` and ``dataset record``."""
    p = subparsers.add_parser(
        "dataset",
        help="dataset images built from Debian packages (list, build, record startup)",
        description="Real images built from Debian packages (debootstrap minbase + runtime + application "
        "layers), cached under $SOCI_LAB_CACHE/datasets or ~/.cache/soci_lab/datasets.",
    )
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="the recipes, their layers, command and readiness rule")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(handler=_list)

    b = sub.add_parser("build", help="build a dataset image (or take it from the cache)")
    b.add_argument("name", help="recipe name (see `soci-lab dataset list`)")
    b.add_argument("--out", default=None, help="also store the image at REF (oci:PATH[:TAG] or HOST/REPO:TAG)")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--insecure", action="store_true", help="plain HTTP to a non-loopback registry")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=_build)

    r = sub.add_parser("record", help="record the startup trace of a built dataset image (strace + mapped pages)")
    r.add_argument("name", help="recipe name")
    r.add_argument("--trace-out", default=None, help="write the startup trace CSV here")
    r.add_argument("--startup-json", default=None, help="write the startup numbers (fraction read) here")
    r.add_argument("--timeout", type=argtypes.duration, default=None, metavar="D",
                   help="how long to wait for readiness, e.g. 120s")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=_record)


def _progress(msg: str) -> None:
    """Build steps on a terminal's stderr; quiet when stderr is not a TTY (cli.md)."""
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


def _list(args: argparse.Namespace) -> int:
    from ..datasets import RECIPES
    from . import print_json

    if args.json:
        print_json({"datasets": [r.to_json() | {"layers": list(r.layer_names)} for r in RECIPES.values()]})
        return 0
    for r in RECIPES.values():
        print(f"{r.name:14} {'/'.join(r.layer_names):28} {r.readiness:40} {r.description}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ..datasets import build_dataset, export_image
    from . import print_json

    built = build_dataset(args.name, force=args.force, progress=_progress)
    doc = {k: v for k, v in built.to_json().items() if k not in ("packages", "recipe")}
    if args.out:
        doc["out"] = args.out
        doc["out_digest"] = export_image(built, args.out, insecure=args.insecure)
    if args.json:
        print_json(doc)
    else:
        print(doc.get("out_digest") or built.manifest_digest)
    return 0


def _record(args: argparse.Namespace) -> int:
    from ..datasets import build_dataset, record_startup
    from . import print_json

    built = build_dataset(args.name, progress=_progress)
    _rec, doc = record_startup(built, trace_out=args.trace_out, json_out=args.startup_json, timeout=args.timeout)
    if args.json:
        print_json(doc)
    else:
        print(f"{args.name}: {doc['bytes_read']} bytes read of {doc['image_bytes']} "
              f"({100 * (doc['fraction_read'] or 0):.2f}%), ready in {doc['cmd_s']:.3f}s")
    return 0
