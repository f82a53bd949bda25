"""``soci-lab simulate``: the simpy model of a pull, with the same events and ``--json`` keys as real runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a pull (sequential, parallel or lazy) and an optional workload",
        description=(
            "Simulate pulling an image in one mode and replaying a workload, with the same events and "
            "--json keys as `mount`/`run`. --image takes an image-model JSON file (soci_lab.sim.ImageModel.save) "
            "or a synthetic image spec synthetic:SEED[,size=2GiB,layers=25,span=4MiB,…]."
        ),
    )
    p.add_argument("--image", required=True, help="image-model JSON file, or synthetic:SEED[,key=value…]")
    p.add_argument("--mode", required=True, choices=("sequential", "parallel", "lazy"), help="pull mode")
    p.add_argument("--bandwidth", default=None, help="bandwidth to the registry, e.g. 100Mbit (default 1Gbit)")
    p.add_argument("--rtt", default=None, help="round-trip time, e.g. 20ms (default 1ms)")
    p.add_argument("--request-overhead", default=None, help="registry time per request, e.g. 0.5ms")
    p.add_argument("--redirect", action="store_true", help="the registry redirects blob GETs to storage")
    p.add_argument("--cores", type=int, default=None, help="host cores (default 2)")
    p.add_argument("--span-size", default=None, help="re-index the image at this span size, e.g. 8MiB")
    work = p.add_mutually_exclusive_group()
    work.add_argument("--trace", default=None, help="access trace CSV (t_s,op,path,offset,size)")
    work.add_argument("--read-everything", action="store_true", help="workload: read every file once")
    work.add_argument("--read-fraction", type=float, default=None, help="workload: a synthetic trace reading F")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace (default 0)")
    p.add_argument("--config", default=None, help="soci-style config.toml")
    p.add_argument("--save-image", default=None, help="also write the image model as JSON to this file")
    p.add_argument("--events", default=None, help="write the events (.csv, .jsonl or .parquet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_simulate)


def load_image(text: str) -> Any:
    """An image model from a JSON file or a ``synthetic:`` spec (registry references: not yet)."""
    from ..errors import SimulationError
    from ..sim import ImageModel, SyntheticSpec, generate

    if text.startswith("synthetic:"):
        return generate(SyntheticSpec.parse(text))
    path = Path(text)
    if path.exists():
        return ImageModel.load(path)
    if "/" in text and not text.endswith(".json"):
        raise SimulationError(f"{text}: simulating straight from an image reference is not supported yet")
    raise SimulationError(f"{text}: no such image-model file")


def _simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..config import Config
    from ..events import write_events
    from ..sim import SimParams, read_everything, read_trace, simulate, synthetic_trace
    from ..units import parse_duration, parse_rate, parse_size
    from . import print_json

    image = load_image(args.image)
    if args.span_size:
        image = image.respan(parse_size(args.span_size))
    if args.save_image:
        image.save(args.save_image)
    config = Config.from_toml(args.config) if args.config else Config()
    params = SimParams()
    net, host = params.network, params.host
    if args.bandwidth:
        net = replace(net, bandwidth=parse_rate(args.bandwidth))
    if args.rtt:
        net = replace(net, rtt=parse_duration(args.rtt))
    if args.request_overhead:
        net = replace(net, request_overhead=parse_duration(args.request_overhead))
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
