"""``soci-lab netlab proxy``: the shaping, fault-injecting proxy in front of any registry (docs/cli.md)."""

from __future__ import annotations

import argparse
from typing import Any

from . import argtypes


def register(subparsers: Any) -> None:
    """Add the ``netlab`` command group."""
    group = subparsers.add_parser("netlab", help="network lab: shaping proxy")
    sub = group.add_subparsers(dest="netlab_command", metavar="SUBCOMMAND", required=True)
    proxy = sub.add_parser(
        "proxy",
        help="a shaping proxy in front of a registry; prints its URL first",
        description=(
            "Forward every request to --upstream, shaping the responses: one bandwidth limit shared by all "
            "connections, an optional per-connection cap, latency added before each response starts, and "
            "seeded fault injection. Prints the proxy's base URL as the first line of stdout, then serves "
            "until SIGINT/SIGTERM."
        ),
        epilog=(
            "fault spec: comma-separated key=value, each rate a probability per response: seed=N, http500=R, "
            "http503=R, http429=R, reset=R, truncate=R, corrupt=R, stall=R:DURATION, retry-after=DURATION. "
            'Example: --faults "seed=7,http500=0.1,reset=0.05,stall=0.02:2s"'
        ),
    )
    proxy.add_argument("--upstream", required=True, type=argtypes.url, metavar="URL",
                       help="base URL of the registry, e.g. http://127.0.0.1:5000")
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    proxy.add_argument("--port", type=argtypes.port, default=0, help="port (default 0: a free one)")
    proxy.add_argument(
        "--bandwidth", type=argtypes.rate, default=None, help="limit shared by all connections, e.g. 100Mbit"
    )
    proxy.add_argument(
        "--per-connection", type=argtypes.rate, default=None, help="limit for each connection, e.g. 20Mbit"
    )
    proxy.add_argument(
        "--latency", type=argtypes.duration, default=None, help="delay added before each response starts, e.g. 20ms"
    )
    proxy.add_argument("--faults", type=argtypes.fault_spec, default=None, help="fault spec (see below)")
    proxy.set_defaults(handler=_proxy)


def _proxy(args: argparse.Namespace) -> int:
    from ..netlab import ShapingProxy
    from ..netlab.serve import serve_until_signalled

    server = ShapingProxy(
        args.upstream,
        host=args.host,
        port=args.port,
        bandwidth=args.bandwidth,
        latency=args.latency,
        per_connection=args.per_connection,
        faults=args.faults,
    )
    return serve_until_signalled(server)
