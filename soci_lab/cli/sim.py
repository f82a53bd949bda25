"""``soci-lab simulate``: the simpy model of a pull, with the same events and ``--json`` keys as real runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..imagemodel import image_from_layout, image_from_registry, is_registry_ref, load_image
from . import argtypes

# the image models of real images live in soci_lab.imagemodel; these names stay importable from here
__all__ = ["image_from_layout", "image_from_registry", "is_registry_ref", "load_image", "register"]


def register(subparsers: Any) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a pull (sequential, parallel or lazy) and an optional workload",
        description=(
            "Simulate pulling an image in one mode and replaying a workload, with the same events and "
            "--json keys as `mount`/`run`. --image takes an image-model JSON file (soci_lab.sim.ImageModel.save), "
            "an OCI image layout oci:PATH[:TAG] (zTOCs built at --span-size), or a synthetic image spec "
            "synthetic:SEED[,size=2GiB,layers=25,span=4MiB,…]."
        ),
    )
    p.add_argument(
        "--image",
        required=True,
        metavar="REF|FILE",
        help="a registry reference HOST[:PORT]/REPO[:TAG|@DIGEST] (manifests and zTOCs read from the registry), "
        "oci:LAYOUT[:TAG], an image-model JSON file, or synthetic:SEED[,key=value…]",
    )
    p.add_argument("--mode", required=True, choices=("sequential", "parallel", "lazy"), help="pull mode")
    p.add_argument("--bandwidth", type=argtypes.rate, default=None, metavar="R",
                   help="bandwidth to the registry, e.g. 100Mbit (default 1Gbit)")
    p.add_argument("--rtt", type=argtypes.duration, default=None, metavar="D",
                   help="round-trip time, e.g. 20ms (default 1ms)")
    p.add_argument("--request-overhead", type=argtypes.duration, default=None, metavar="D",
                   help="registry time per request, e.g. 0.5ms")
    p.add_argument("--redirect", action="store_true", help="the registry redirects blob GETs to storage")
    p.add_argument("--cores", type=argtypes.positive_int, default=None, metavar="N", help="host cores (default 2)")
    p.add_argument("--span-size", type=argtypes.positive_size, default=None, metavar="S",
                   help="re-index the image at this span size, e.g. 8MiB")
    p.add_argument(
        "--min-layer-size", type=argtypes.nonnegative_size, default=10 << 20, metavar="S",
        help="oci: and registry images without a SOCI index: layers under this get no zTOC (default 10MiB)",
    )
    p.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json)")
    work = p.add_mutually_exclusive_group()
    work.add_argument("--trace", type=argtypes.existing_file, default=None, metavar="FILE",
                      help="access trace CSV (t_s,op,path,offset,size)")
    work.add_argument("--read-everything", action="store_true", help="workload: read every file once")
    work.add_argument("--read-fraction", type=argtypes.fraction, default=None, metavar="F",
                      help="workload: a synthetic trace reading fraction F (0..1) of the image")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace (default 0)")
    p.add_argument(
        "--prefetch-trace", type=argtypes.existing_file, default=None, metavar="FILE",
        help="lazy: prefetch the spans this trace reads ([prefetch] enable = true)",
    )
    p.add_argument("--config", type=argtypes.config_file, default=None, metavar="FILE", help="soci-style config.toml")
    p.add_argument(
        "--calibration",
        type=argtypes.existing_file,
        metavar="FILE",
        default=None,
        help="host and network parameters fitted from real runs (soci_lab.sim.Calibration JSON, e.g. "
        "datasets/calibration/sample-loopback.json); flags given too override it, and with --rtt the fitted "
        "first-byte time stays as registry overhead on top of that RTT",
    )
    p.add_argument("--profile", type=argtypes.existing_file, default=None, metavar="FILE",
                   help="this host's profile (soci-lab calibrate): the host's costs from it, the network from "
                   "--network; flags given too override it")
    p.add_argument("--network", type=argtypes.network, default=None, metavar="NET",
                   help="with --profile: loopback (default), RATE or RATE+RTT, e.g. 100Mbit+20ms")
    p.add_argument("--save-image", default=None, metavar="FILE", help="also write the image model as JSON to this file")
    p.add_argument("--events", type=argtypes.events_file, default=None, metavar="FILE",
                   help="write the events (.csv, .jsonl or .parquet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..config import Config
    from ..events import write_events
    from ..sim import SimParams, read_everything, read_trace, simulate, synthetic_trace
    from . import print_json

    span = args.span_size
    if args.image.startswith("oci:") or is_registry_ref(args.image):
        image = load_image(args.image, span_size=span or 4 << 20, min_layer_size=args.min_layer_size,
                           insecure=args.insecure, creds=args.creds)
    else:
        image = load_image(args.image)
        if span:
            image = image.respan(span)
    if args.save_image:
        image.save(args.save_image)
    config = Config.from_toml(args.config) if args.config else Config()
    params = SimParams()
    if args.profile and args.calibration:
        from . import UsageError

        raise UsageError("give --profile or --calibration, not both")
    if args.network and not args.profile:
        from . import UsageError

        raise UsageError("--network names the network for --profile: give --profile too")
    if args.profile:
        from ..sim.profile import HostProfile

        params = HostProfile.load(args.profile).params(args.network or "loopback")
    if args.calibration:
        from ..sim import Calibration

        cal = Calibration.load(args.calibration)
        # a loopback fit's first-byte time is registry overhead: an --rtt given as well comes on top of it
        params = cal.params(params, rtt=0.0 if args.rtt is not None else None)
    net, host = params.network, params.host
    if args.bandwidth:
        net = replace(net, bandwidth=args.bandwidth)
    if args.rtt is not None:
        net = replace(net, rtt=args.rtt)
    if args.request_overhead is not None:
        net = replace(net, request_overhead=args.request_overhead)
    if args.redirect:
        net = replace(net, redirect=True)
    if args.cores:
        host = replace(host, cores=args.cores)
    params = replace(params, network=net, host=host)
    workload = None
    if args.trace:
        workload = read_trace(args.trace)
    elif args.read_everything:
        workload = read_everything(image)
    elif args.read_fraction is not None:
        workload = synthetic_trace(image, args.read_fraction, seed=args.seed)
    if args.prefetch_trace:
        from dataclasses import replace as _replace

        from ..sim.workload import prefetch_spans_from_trace

        image = _replace(image, prefetch_spans=prefetch_spans_from_trace(image, read_trace(args.prefetch_trace)))
        config.prefetch.enable = True
    run = simulate(image, args.mode, workload=workload, config=config, params=params)
    if args.events:
        write_events(run.recorder.events, args.events)
    s = run.summary
    if args.json:
        reads = run.events[run.events["kind"] == "file_read"]
        out = {
            **s,
            "source": "sim",
            "layers": run.layers,
            "events": len(run.recorder),
            "events_file": args.events,
            "cmd_s": s["workload_done_s"] - s["ready_s"],
            "exit_code": 0,
            "files_read": int(reads["path"].nunique()),
            "bytes_read": int(reads["bytes"].sum()),
            "spans_fetched": run.checks.get("span_fetches", 0),
            "spans_total": run.checks.get("spans_total", 0),
        }
        print_json(out)
    else:
        w = sys.stdout.write
        w(f"simulated {s['mode']} pull of {image.name}\n")
        w(f"  ready after        {s['ready_s']:.3f} s\n")
        w(f"  workload done at   {s['workload_done_s']:.3f} s\n")
        w(f"  fetched            {s['bytes_fetched']} bytes in {s['requests']} requests\n")
        w(f"  written            {s['bytes_written']} bytes\n")
        w(f"  fraction read      {s['fraction_read']:.4f}\n")
    return 0
