"""``soci-lab registry serve``: the embedded OCI registry on a loopback port (see docs/cli.md)."""

from __future__ import annotations

import argparse
from typing import Any

from . import argtypes


def register(subparsers: Any) -> None:
    """Add the ``registry`` command group."""
    group = subparsers.add_parser("registry", help="the embedded OCI registry")
    sub = group.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve OCI layouts over the distribution API; prints the base URL first",
        description=(
            "Serve the repositories under --root (one OCI image layout per repository, <root>/<repo>/) "
            "over the OCI distribution API: pull, push, ranged GETs, referrers. Prints the base URL as "
            "the first line of stdout, then serves until SIGINT/SIGTERM."
        ),
    )
    serve.add_argument("--root", default=None, help="directory of repositories (default: a temporary one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=argtypes.port, default=0, help="port (default 0: a free one)")
    serve.add_argument(
        "--bandwidth", type=argtypes.rate, default=None, help="limit for all responses together, e.g. 100Mbit"
    )
    serve.add_argument(
        "--latency", type=argtypes.duration, default=None, help="delay added before each response, e.g. 20ms"
    )
    serve.add_argument("--user", default=None, help="USER:PASS: require token auth with this one user")
    serve.add_argument(
        "--layout",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also serve the existing OCI layout DIR as repository NAME, in place (repeatable)",
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..netlab import EmbeddedRegistry
    from ..netlab.serve import serve_until_signalled

    auth = None
    if args.user:
        user, sep, password = args.user.partition(":")
        if not sep or not user:
            from . import UsageError

            raise UsageError("--user takes USER:PASS")
        auth = (user, password)
    layouts = {}
    for item in args.layout:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            from . import UsageError

            raise UsageError(f"--layout takes NAME=DIR, not {item!r}")
        layouts[name] = path
    registry = EmbeddedRegistry(
        root=args.root,
        host=args.host,
        port=args.port,
        bandwidth=args.bandwidth,
        latency=args.latency,
        auth=auth,
        layouts=layouts,
    )
    return serve_until_signalled(registry)
