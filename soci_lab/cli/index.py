"""``soci-lab index``: build and publish SOCI indexes (``create``), and show what one holds (``info``).

``index create REF`` prints the SOCI index digest (one line); with ``--json`` one object with the keys
``ref, format, index_digest, index_size, image_manifest_digest, platform, annotated_manifest_digest,
image_index_digest, ztocs`` (layer digest → zTOC digest) and ``skipped`` (layer digest → reason).

``index info REF --json`` prints ``ref, image_manifest_digest, platform, index_digest, index_size, format,
found_via, build_tool_identifier`` and ``layers``: one object per image layer with ``digest, media_type,
size, indexed, compression, uncompressed_size, span_size, span_count, ztoc_digest, ztoc_size,
prefetch_spans`` (zTOC fields null for a layer the index skipped). Without ``--json``, a table.

Exit codes: 0 success; 1 runtime failure, one line on stderr (no index found, every layer skipped, a
registry error, a digest mismatch, a malformed trace); 2 usage error (bad REF, size or format).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_registry_options, argtypes, event_recorder, write_recorded
from .progress import LayerProgress, wanted


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=argtypes.reference, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    p.add_argument("--platform", type=argtypes.platform,
                   help="for an image index: os/arch[/variant] (default: this host)")
    add_registry_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("index", help="build, publish and inspect SOCI indexes")
    sub = group.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)

    c = sub.add_parser(
        "create",
        help="build zTOCs and a SOCI index for REF and publish it",
        description="Build zTOCs for REF's layers and a SOCI index. v2 (default) re-tags REF as a SOCI-enabled "
        "image index, as 'soci convert' does; v1 pushes the index as a referrer of the image manifest, as "
        "'soci create' + 'soci push' do. Prints the SOCI index digest.",
    )
    _common(c)
    c.add_argument("--format", choices=("v2", "v1"), default="v2", help="index version (default v2)")
    c.add_argument("--span-size", type=argtypes.positive_size, default=4 << 20, metavar="S",
                   help="uncompressed bytes per span (default 4MiB)")
    c.add_argument("--min-layer-size", type=argtypes.size, default=10 << 20, metavar="S",
                   help="layers smaller than this get no zTOC (default 10MiB)")
    c.add_argument("--prefetch-trace", type=lambda t: Path(argtypes.existing_file(t)), metavar="FILE",
                   help="access trace CSV (t_s,op,path,offset,size): the spans its reads touch become prefetch "
                   "artifacts")
    c.add_argument("--prefetch-path", action="append", dest="prefetch_paths", metavar="PATH",
                   help="a file to prefetch whole (repeat)")
    c.add_argument("--build-tool-identifier", default=None, metavar="TEXT",
                   help="the index's com.amazon.soci.build-tool-identifier (default 'AWS SOCI CLI v0.2')")
    c.add_argument("--optimizations", action="append", choices=("xattr",), default=[], metavar="NAME",
                   help="'xattr': mark zTOCs of layers without xattrs or opaque dirs with "
                   "com.amazon.soci.disable-xattrs, as soci create --optimizations xattr does")
    c.set_defaults(handler=cmd_create)

    i = sub.add_parser(
        "info",
        help="list what REF's SOCI index holds, layer by layer",
        description="Find REF's SOCI index (v2 annotation, else v1 referrers, or --index-digest), fetch and "
        "verify its zTOCs, and list per layer its digest, media type, sizes, span size, span count, zTOC "
        "digest and size.",
    )
    _common(i)
    i.add_argument("--index-digest", type=argtypes.digest_text, metavar="DIGEST",
                   help="use this SOCI index instead of discovering one")
    i.set_defaults(handler=cmd_info)


def cmd_create(args: argparse.Namespace) -> int:
    from ..artifacts import create_soci_index
    from ..ztoc import DEFAULT_BUILD_TOOL_IDENTIFIER
    from . import print_json

    show = wanted(args)
    recorder = event_recorder(args, "index", always=show)
    try:
        with LayerProgress(recorder, "index create", "ztoc_build", enabled=show):
            result = create_soci_index(
                args.ref, version=args.format, span_size=args.span_size, min_layer_size=args.min_layer_size,
                prefetch_paths=args.prefetch_paths, prefetch_trace=args.prefetch_trace,
                build_tool_identifier=args.build_tool_identifier or DEFAULT_BUILD_TOOL_IDENTIFIER,
                optimize_xattrs="xattr" in args.optimizations, platform=args.platform, insecure=args.insecure,
                creds=args.creds, events=recorder,
            )
    finally:
        write_recorded(args, recorder)
    if args.json:
        print_json(result.to_json())
    else:
        for layer, why in result.built.skipped.items():
            print(f"skipped layer {layer}: {why}", file=sys.stderr)
        print(result.digest, flush=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..artifacts import index_info
    from . import print_json

    recorder = event_recorder(args, "index")
    try:
        info = index_info(args.ref, index_digest=args.index_digest, platform=args.platform, insecure=args.insecure,
                          creds=args.creds, events=recorder)
    finally:
        write_recorded(args, recorder)
    if args.json:
        print_json(info.to_json())
    else:
        print(info.to_text(), flush=True)
    return 0
