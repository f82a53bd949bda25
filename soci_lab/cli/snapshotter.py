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
    s.add_argument("--config", type=Path, metavar="FILE", help="soci-snapshotter style config.toml ([pull_modes], …)")
    s.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    s.add_argument("--no-remote", action="store_true",
                   help="ignore the remote-snapshotter labels: every layer is unpacked by containerd")
    s.set_defaults(handler=cmd_serve)
    _add_rpull(sub)
    image_group = _image_subcommands(subparsers)
    if image_group is not None:  # ``soci-lab image rpull`` (as upstream's ``soci image rpull``)
        _add_rpull(image_group)
    c = sub.add_parser("cleanup", help="remove everything the snapshotter made under --root (daemon stopped)")
    c.add_argument("--root", type=Path, required=True, metavar="DIR",
                   help="the root the snapshotter served from: everything it made there is removed")
    c.set_defaults(handler=cmd_cleanup)


def _image_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction | None:
    """The ``image`` group's subcommands (registered before this module), so ``rpull`` sits with ``pull``."""
    image = subparsers.choices.get("image")
    if image is None or image._subparsers is None:
        return None
    for action in image._subparsers._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _add_rpull(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "rpull", help="pull into containerd with layers mounted by the soci-lab snapshotter",
        description="Put REF's manifest and config into containerd's content store and prepare every layer "
        "through the snapshotter with the remote-snapshotter labels, so that `ctr run --snapshotter "
        "soci-lab REF ID CMD` runs on a lazily loaded rootfs.",
    )
    r.add_argument("ref", metavar="REF", help="HOST[:PORT]/REPO[:TAG|@DIGEST]")
    r.add_argument("--address", type=Path, required=True, metavar="SOCK", help="containerd's socket")
    r.add_argument("--namespace", default="default", help="containerd namespace (default: default)")
    r.add_argument("--snapshotter", default="soci-lab", help="proxy snapshotter name (default: soci-lab)")
    r.add_argument("--index-digest", metavar="DIGEST", help="use this SOCI index (skips discovery)")
    r.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    r.add_argument("--events", metavar="FILE", help="write the pull's events (.csv, .jsonl or .parquet)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=cmd_rpull)


def cmd_rpull(args: argparse.Namespace) -> int:
    import json

    from ..events import EventRecorder
    from ..snapshotter.rpull import rpull

    events = EventRecorder(strategy="lazy")
    res = rpull(args.address, args.ref, namespace=args.namespace, snapshotter=args.snapshotter,
                insecure=args.insecure, index_digest=args.index_digest, events=events)
    if args.events:
        events.write(args.events)
    if args.json:
        print(json.dumps({"ref": res.ref, "manifest_digest": res.manifest_digest, "layers_mounted": res.layers_mounted,
                          "layers_present": res.layers_present, "seconds": round(res.seconds, 6)}))
    else:
        print(f"{res.ref}: {res.layers_mounted} layers mounted, {res.layers_present} present "
              f"({res.seconds:.2f} s)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..config import Config
    from ..events import EventRecorder
    from ..snapshotter import Snapshotter, SnapshotterServer
    from ..snapshotter.eventlog import EventLog
    from ..snapshotter.remote import RemoteLayers

    config = Config.from_toml(args.config) if args.config else Config()
    recorder = EventRecorder(strategy="snapshotter")
    log = EventLog(recorder, args.events) if args.events else None
    remote = None
    if not args.no_remote:
        remote = RemoteLayers(args.root / "fs-state", config=config, insecure=args.insecure, events=recorder)
        remote.warm()
    sn = Snapshotter(args.root, events=recorder, remote=remote)
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
