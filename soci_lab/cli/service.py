"""``soci-lab service start|status|stop``: the per-host service that forks layer servers and background mount
serving processes (:mod:`soci_lab.service`; ``mount`` starts it when absent, so ``start`` is optional)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``service`` command group."""
    group = subparsers.add_parser(
        "service",
        help="the per-host service that forks FUSE layer servers and mount serving processes",
        description="The long-lived soci-lab service (one per user and code version, on a private unix socket; "
        "SOCI_LAB_SERVICE_DIR moves it, SOCI_LAB_SERVICE=0 makes mounts do without it). 'mount' starts it "
        "when absent.",
    )
    sub = group.add_subparsers(dest="service_command", metavar="SUBCOMMAND", required=True)
    for name, helptext, handler in (
        ("start", "start the service unless it runs; print its status", _start),
        ("status", "print the running service's status (exit 1 if none runs)", _status),
        ("stop", "stop the service (its layer servers keep serving their mounts)", _stop),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(handler=handler)


def _show(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    from . import print_json

    doc = {k: v for k, v in doc.items() if k != "ok"}
    if args.json:
        print_json(doc)
    else:
        kids = len(doc.get("children", []))
        print(f"soci-lab service {doc['pid']} on {doc['socket']} (code {doc['key']}; {kids} forked processes alive)")


def _start(args: argparse.Namespace) -> int:
    from .. import service

    _show(args, service.connect(start=True).status())
    return 0


def _status(args: argparse.Namespace) -> int:
    from .. import service

    _show(args, service.connect(start=False).status())
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .. import service
    from ..errors import ServiceRefused, SociLabError

    try:
        client = service.connect(start=False)
    except ServiceRefused:
        raise
    except SociLabError:
        print(f"no soci-lab service runs at {service.socket_path()}", file=sys.stderr)
        return 0
    pid = client.pid
    client.stop()
    if args.json:
        from . import print_json

        print_json({"stopped": pid})
    else:
        print(f"soci-lab service {pid} stopped", file=sys.stderr)
    return 0
