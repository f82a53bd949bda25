"""``soci-lab image``: build images from directories, copy them, check them, make the sample image's trees.

Usage errors (exit 2, from argparse): a malformed REF, an unknown compression, a level or size that does
not parse. Runtime failures (exit 1, one line): a layer directory that is missing or unreadable, a
registry that refuses. A socket in a layer directory cannot be stored in a tar: it is skipped with a
``warning:`` line on stderr, as GNU tar does.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from . import add_registry_options, argtypes, event_recorder, write_recorded
from .progress import LayerProgress, wanted


def _level(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo}..{hi}, not {n}")
        return n

    return parse


def _argv(text: str) -> list[str]:
    """A JSON array (``'["sh","-c","x"]'``) or a shell-quoted string (``'sh -c x'``)."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON array: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise argparse.ArgumentTypeError("must be a JSON array of strings")
        return value
    return shlex.split(text)


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("scale must be positive")
    return value


def _report(args: argparse.Namespace, recorder: Any, result: Any) -> int:
    """Write the events (``--events``), then print the result: one JSON object, or its digest."""
    write_recorded(args, recorder)
    if args.json:
        _print_json(result.to_json())
    else:
        print(result.digest, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("image", help="build, copy and check images")
    sub = group.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)

    b = sub.add_parser(
        "build",
        help="build an image, one layer per directory",
        description="Build an image, one deterministic layer per --layer directory (bottom first), and "
        "push it to REF (HOST[:PORT]/REPO[:TAG]) or write it to an OCI layout (oci:PATH[:TAG]). "
        "Prints the manifest digest.",
    )
    b.add_argument(
        "--layer",
        dest="layers",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="a directory that becomes one layer (repeat, bottom first)",
    )
    b.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip",
                   help="layer compression (default gzip)")
    b.add_argument("--gzip-level", type=_level(0, 9), default=6, metavar="N", help="gzip level 0..9 (default 6)")
    b.add_argument("--zstd-level", type=_level(1, 22), default=3, metavar="N", help="zstd level 1..22 (default 3)")
    b.add_argument(
        "--span-size",
        type=argtypes.positive_size,
        default=4 << 20,
        metavar="S",
        help="zstd: uncompressed bytes per frame (default 4MiB); ignored for gzip and none",
    )
    b.add_argument("--platform", type=argtypes.platform, help="os/arch[/variant] of the config (default: this host)")
    b.add_argument("--cmd", type=_argv, help="Cmd: a JSON array or a shell-quoted string")
    b.add_argument("--entrypoint", type=_argv, help="Entrypoint: a JSON array or a shell-quoted string")
    b.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="Env entry (repeat)")
    b.add_argument("--workdir", help="WorkingDir")
    b.add_argument("--jobs", type=_level(1, 64), default=None, metavar="N", help="layers built at once")
    add_registry_options(b)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("ref", type=argtypes.reference, metavar="REF",
                   help="where to push: HOST[:PORT]/REPO[:TAG] or oci:PATH[:TAG]")
    b.set_defaults(handler=cmd_build)

    c = sub.add_parser(
        "copy",
        help="copy an image between registries and OCI layouts",
        description="Copy an image (index, manifests, configs, layers) from SRC to DST; each is "
        "HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]. Every blob is verified against its digest.",
    )
    c.add_argument("src", type=argtypes.reference, metavar="SRC", help="the image to copy (REF)")
    c.add_argument("dst", type=argtypes.reference, metavar="DST", help="where to copy it (REF)")
    c.add_argument("--platform", type=argtypes.platform, help="copy only this platform's manifest of an index")
    add_registry_options(c)
    c.add_argument("--src-creds", metavar="USER:PASS", help="credentials for SRC only")
    c.add_argument("--dest-creds", metavar="USER:PASS", help="credentials for DST only")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=cmd_copy)

    v = sub.add_parser(
        "verify",
        help="fetch an image and check every digest and diffID",
        description="Fetch REF's manifest, config and layers; check each against its digest and each "
        "layer's uncompressed bytes against the config's diffID. Prints the manifest digest.",
    )
    v.add_argument("ref", type=argtypes.reference, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    v.add_argument("--platform", type=argtypes.platform, help="for an image index: os/arch[/variant]")
    add_registry_options(v)
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(handler=cmd_verify)

    s = sub.add_parser(
        "sample",
        help="write the sample image's layer directories",
        description="Materialise the demo's sample image as layer directories under DEST (deterministic: "
        "same files, modes and mtimes every time). Prints one directory per line, bottom first; with "
        "--build REF, also builds the image (Cmd: /bin/sh /app/run.sh) and prints its digest last.",
    )
    s.add_argument("dest", type=Path, metavar="DEST", help="directory for the layer trees (created)")
    s.add_argument("--scale", type=_scale, default=1.0, help="size factor (default 1.0)")
    s.add_argument("--build", type=argtypes.reference, metavar="REF",
                   help="also build the image into REF; print its digest last")
    s.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip", help="with --build")
    s.add_argument("--insecure", action="store_true", help="with --build: plain HTTP for non-loopback hosts")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=cmd_sample)


def _warn(name: str, reason: str) -> None:
    print(f"warning: skipped {name}: {reason}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    from ..images import RuntimeConfig

    runtime = RuntimeConfig(cmd=args.cmd, entrypoint=args.entrypoint, env=tuple(args.env), working_dir=args.workdir)
    show = wanted(args)
    recorder = event_recorder(args, "image", always=show)
    with LayerProgress(recorder, "image build", "push", total=len(args.layers), enabled=show):
        result = _build(args, runtime, recorder)
    return _report(args, recorder, result)


def _build(args: argparse.Namespace, runtime: Any, recorder: Any) -> Any:
    from ..images import build_image

    return build_image(
        args.layers,
        args.ref,
        compression=args.compression,
        gzip_level=args.gzip_level,
        zstd_level=args.zstd_level,
        span_size=args.span_size,
        platform=args.platform,
        runtime=runtime,
        jobs=args.jobs,
        insecure=args.insecure,
        creds=args.creds,
        on_skip=_warn,
        events=recorder,
    )


def cmd_copy(args: argparse.Namespace) -> int:
    from ..images.copy import copy_image

    recorder = event_recorder(args, "image")
    result = copy_image(
        args.src,
        args.dst,
        platform=args.platform,
        insecure=args.insecure,
        creds=args.creds,
        src_creds=args.src_creds,
        dst_creds=args.dest_creds,
        events=recorder,
    )
    return _report(args, recorder, result)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..images.verify import verify_image

    recorder = event_recorder(args, "image")
    result = verify_image(args.ref, platform=args.platform, insecure=args.insecure, creds=args.creds, events=recorder)
    return _report(args, recorder, result)


def cmd_sample(args: argparse.Namespace) -> int:
    from ..images.sample import LAYER_NAMES, build_sample_image, sample_image_trees

    result = None
    if args.build is not None:
        result = build_sample_image(
            args.build, args.dest, scale=args.scale, compression=args.compression, insecure=args.insecure,
            on_skip=_warn,
        )  # fmt: skip
        dirs = [args.dest / name for name in LAYER_NAMES]
    else:
        dirs = sample_image_trees(args.dest, scale=args.scale)
    if args.json:
        doc: dict[str, Any] = {"layers": [str(d) for d in dirs]}
        if result is not None:
            doc["image"] = result.to_json()
        _print_json(doc)
    else:
        for d in dirs:
            print(d)
        if result is not None:
            print(result.digest, flush=True)
    return 0


def _print_json(obj: Any) -> None:
    from . import print_json

    print_json(obj)
