"""``soci-lab snapshotter serve|cleanup``: soci_lab as a containerd snapshotter (proxy plugin).

``serve --address SOCK --root DIR`` serves containerd's snapshots gRPC API on unix socket SOCK, keeping
snapshots and their metadata in DIR, until SIGINT/SIGTERM; ``--events FILE.jsonl`` appends the daemon's
events as they happen. containerd loads it with::

    [proxy_plugins.soci-lab]
      type = "snapshot"
      address = "SOCK"

``cleanup --root DIR`` (daemon stopped) unmounts and deletes everything the snapshotter made under DIR.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("snapshotter", help="containerd snapshotter daemon (proxy plugin)")
    sub = p.add_subparsers(dest="snapshotter_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser("serve", help="serve containerd's snapshots API on a unix socket",
                       description="Serve containerd's snapshots gRPC API on SOCK until SIGINT/SIGTERM.")
    s.add_argument("--address", type=Path, required=True, metavar="SOCK", help="unix socket to listen on")
    s.add_argument("--root", type=Path, required=True, metavar="DIR", help="where snapshots and metadata live")
    s.add_argument("--events", type=Path, metavar="FILE", help="append the daemon's events (.jsonl) as they happen")
    s.set_defaults(handler=cmd_serve)
    c = sub.add_parser("cleanup", help="remove everything the snapshotter made under --root (daemon stopped)")
    c.add_argument("--root", type=Path, required=True, metavar="DIR")
    c.set_defaults(handler=cmd_cleanup)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..events import EventRecorder
    from ..snapshotter import Snapshotter, SnapshotterServer
    from ..snapshotter.eventlog import EventLog

    recorder = EventRecorder(strategy="snapshotter")
    log = EventLog(recorder, args.events) if args.events else None
    sn = Snapshotter(args.root, events=recorder)
    server = SnapshotterServer(sn, args.address).start()

    def stop(signum: int, frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"soci-lab snapshotter: serving {args.address} (root {args.root})", file=sys.stderr, flush=True)
    try:
        while not server.wait(1.0):
            pass
    finally:
        sn.close()
        if log is not None:
            log.close()
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from ..snapshotter import remove_root

    remove_root(args.root)
    return 0
