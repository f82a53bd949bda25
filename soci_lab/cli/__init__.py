"""``soci-lab``: a thin command-line layer over the library (contract in docs/cli.md).

Each command group lives in a module of this package that exposes ``register(subparsers)``; the module
list below is the only place to touch when a room adds commands. Exit codes: 0 success, 1 runtime failure
(one clear line on stderr; the traceback only with ``--debug``), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import SociLabError

if TYPE_CHECKING:
    from ..events import EventRecorder

#: command-group modules, each with ``register(subparsers)``
GROUPS = ("registry", "netlab", "image", "index", "store", "host", "sim", "report", "dataset", "fleet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soci-lab",
        description="Instrumented container image pulls (lazy SOCI, parallel-eager, sequential), real or simulated.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        try:
            module = importlib.import_module(f"{__name__}.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{group}":
                continue  # that room has no commands yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SociLabError as exc:
        if args.debug:
            raise
        print(f"soci-lab {args.command}: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        print(f"soci-lab {args.command}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def add_registry_options(p: argparse.ArgumentParser) -> None:
    """``--insecure``, ``--creds`` and ``--events``, worded alike for every command that talks to a registry.

    ``image`` and ``index`` subcommands share them, so their help and meaning stay the same in both groups.
    """
    p.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json)")
    p.add_argument("--events", metavar="FILE", help="write the run's events (.csv, .jsonl or .parquet)")


def event_recorder(args: argparse.Namespace, strategy: str) -> EventRecorder | None:
    """A recorder for ``--events FILE`` with ``strategy`` in its events, or None when no file was asked for.

    The events module is imported only when needed, to keep the CLI's start-up light.
    """
    if not args.events:
        return None
    from ..events import EventRecorder

    return EventRecorder(strategy=strategy)


def print_json(obj: Any) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
