"""``soci-lab fleet``: many hosts pulling one image through one registry (soci_lab.sim.fleet), same JSON
conventions as ``simulate``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``fleet`` command."""
    p = subparsers.add_parser(
        "fleet",
        help="simulate N hosts pulling one image through one registry (egress, rate limit, arrivals)",
        description=(
            "Simulate a fleet of --hosts hosts pulling an image in one mode through one registry with a finite "
            "egress, an optional request-rate limit answered 429 (+ Retry-After) and a per-request service "
            "time; hosts arrive all at once, as a Poisson process or in waves; some may already hold layers. "
            "Each kind of host is the single-host simulator's (`simulate`) with the same --calibration; "
            "identical hosts are simulated as one group. --image as for `simulate`."
        ),
    )
    p.add_argument("--image", required=True, help="image-model JSON file, oci:LAYOUT[:TAG], or synthetic:SEED[,…]")
    p.add_argument("--mode", required=True, choices=("sequential", "parallel", "lazy"), help="pull mode")
    p.add_argument("--hosts", type=int, required=True, help="number of hosts")
    p.add_argument("--nic", default=None, help="each host's NIC rate, e.g. 10Gbit (default: the calibration's, 1Gbit)")
    p.add_argument("--egress", default="10Gbit", help="the registry's egress, shared by all (default 10Gbit)")
    p.add_argument("--rate-limit", type=float, default=None, help="registry requests/s before it answers 429")
    p.add_argument("--burst", type=float, default=0.0, help="requests the rate limiter lets through at once")
    p.add_argument("--retry-after", default=None, help="Retry-After of the 429 answers, e.g. 1s (default: none)")
    p.add_argument("--service-time", default="0", help="mean registry service time per request, e.g. 5ms")
    p.add_argument("--service-dist", default="const", choices=("const", "exp", "lognormal"),
                   help="the distribution of the registry's per-request service time (default const)")
    p.add_argument("--arrivals", default="all", choices=("all", "poisson", "waves"),
                   help="when hosts start pulling: all at once, a Poisson stream, or scale-out waves (default all)")
    p.add_argument("--arrival-rate", type=float, default=100.0, help="poisson: hosts per second (default 100)")
    p.add_argument("--wave-size", type=int, default=100, help="waves: hosts per wave (default 100)")
    p.add_argument("--wave-interval", default="10s", help="waves: time between waves (default 10s)")
    p.add_argument("--arrival-quantum", default="0",
                   help="round arrivals down to multiples of this (e.g. 100ms) so hosts group: an approximation")
    p.add_argument("--warm-fraction", type=float, default=0.0, help="fraction of hosts already holding --warm-layers")
    p.add_argument("--warm-layers", default="0", help="layer indices warm hosts hold, comma-separated (default 0)")
    work = p.add_mutually_exclusive_group()
    work.add_argument("--trace", default=None, help="access trace CSV (t_s,op,path,offset,size)")
    work.add_argument("--read-fraction", type=float, default=None, help="workload: a synthetic trace reading F")
    p.add_argument("--rtt", default=None, help="round-trip time to the registry, e.g. 20ms")
    p.add_argument("--calibration", default=None, help="host and network parameters (soci_lab.sim.Calibration JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed of arrivals, service times, jitter and trace")
    p.add_argument("--p2p-seeds", type=int, default=0,
                   help="peer-to-peer layer data with this many registry seeds per item (default 0: no P2P)")
    p.add_argument("--p2p-uplink", default=None, help="P2P: each peer's upload rate (default: its NIC)")
    p.add_argument("--no-group", action="store_true", help="simulate every host on its own (slower; same result)")
    p.add_argument("--sample", type=int, default=1, help="keep every request of the first N hosts (default 1)")
    p.add_argument("--groups-out", default=None, help="write the per-group results as CSV")
    p.add_argument("--events", default=None, help="write the sampled hosts' request events as CSV")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_fleet)


def _fleet(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..errors import InvalidInput
    from ..sim import SimParams, read_trace, synthetic_trace
    from ..sim.fleet import P2P, Arrivals, FleetSpec, HostPool, Registry, simulate_fleet
    from ..units import parse_duration, parse_rate
    from . import print_json
    from .sim import load_image

    if args.hosts < 1:
        raise InvalidInput(f"--hosts must be at least 1, not {args.hosts}")
    if not 0.0 <= args.warm_fraction <= 1.0:
        raise InvalidInput(f"--warm-fraction must be within [0, 1], not {args.warm_fraction}")
    try:
        held = tuple(int(x) for x in args.warm_layers.split(",") if x.strip())
    except ValueError:
        raise InvalidInput(f"--warm-layers: not a list of layer indices: {args.warm_layers!r}") from None
    image = load_image(args.image)
    bad = [li for li in held if not 0 <= li < len(image.layers)]
    if bad:
        raise InvalidInput(f"--warm-layers {bad} are not layers of {image.name} (it has {len(image.layers)})")
    params = SimParams()
    if args.calibration:
        from ..sim import Calibration

        params = Calibration.load(args.calibration).params(params, rtt=0.0 if args.rtt else None)
    if args.rtt:
        params = replace(params, network=replace(params.network, rtt=parse_duration(args.rtt)))
    nic = parse_rate(args.nic) if args.nic else None
    warm = round(args.warm_fraction * args.hosts)
    pools = tuple(pool for pool in (HostPool(args.hosts - warm, nic), HostPool(warm, nic, held)) if pool.count)
    registry = Registry(
        egress=parse_rate(args.egress), rate_limit=args.rate_limit, burst=args.burst,
        retry_after=parse_duration(args.retry_after) if args.retry_after else None,
        service_s=parse_duration(args.service_time), service=args.service_dist,
    )  # fmt: skip
    arrivals = Arrivals(args.arrivals, rate=args.arrival_rate, size=args.wave_size,
                        interval=parse_duration(args.wave_interval),
                        quantum=parse_duration(args.arrival_quantum))  # fmt: skip
    spec = FleetSpec(pools=pools, registry=registry, arrivals=arrivals, group=not args.no_group,
                     sample_hosts=tuple(range(min(args.sample, args.hosts))), seed=args.seed,
                     p2p=P2P(args.p2p_seeds, parse_rate(args.p2p_uplink) if args.p2p_uplink else None)
                     if args.p2p_seeds else None)  # fmt: skip
    workload = None
    if args.trace:
        workload = read_trace(args.trace)
    elif args.read_fraction is not None:
        workload = synthetic_trace(image, args.read_fraction, seed=args.seed)
    run = simulate_fleet(image, args.mode, spec, workload=workload, params=params)
    if args.groups_out:
        run.groups.drop(columns=["host_ids"]).to_csv(args.groups_out, index=False)
    if args.events:
        run.events.to_csv(args.events, index=False)
    s = run.summary()
    if args.json:
        pools_out = run.by_pool().to_dict("records")
        print_json({**s, "source": "sim", "image": image.name, "by_pool": pools_out, "events_file": args.events,
                    "groups_file": args.groups_out, "exit_code": 0})  # fmt: skip
        return 0
    w = sys.stdout.write
    w(f"simulated fleet of {s['hosts']} hosts ({s['groups']} groups), {s['mode']} pull of {image.name}\n")
    for name, label in (("ready", "ready after"), ("workload_done", "workload done at")):
        w(f"  {label:<18} p50 {_s(s[f'{name}_p50_s'])}  p90 {_s(s[f'{name}_p90_s'])}  p99 {_s(s[f'{name}_p99_s'])}\n")
    w(f"  fetched            {s['bytes_fetched']} bytes in {s['requests']} requests ({s['responses_429']} 429), "
      f"{s['registry_bytes']} from the registry\n")
    if s["failed_hosts"]:
        w(f"  failed hosts       {s['failed_hosts']}\n")
    return 0


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"
