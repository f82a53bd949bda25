"""``soci-lab``: a thin command-line layer over the library (contract in docs/cli.md).

Each command group lives in a module of this package that exposes ``register(subparsers)``; the module
list below is the only place to touch when a room adds commands. Exit codes: 0 success, 1 runtime failure
(one clear line on stderr; the traceback only with ``--debug``), 2 usage error; ``run`` passes its
command's own exit code through.

Command lines: options go before or after the positional arguments, for every command. A ``--`` ends
soci-lab's own arguments: what follows is the command that ``run`` and ``compare`` run (argparse cannot
mix a command that has options of its own with options after positionals, so the split is made here,
before argparse sees the line). ``--debug`` and ``--version`` are accepted anywhere before ``--``.
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
GROUPS = ("registry", "netlab", "image", "index", "store", "host", "sim", "report", "dataset", "service",
          "snapshotter", "fleet", "calibrate")


#: which group registers each command (``tests/cli`` holds it to what the groups register): a command line is
#: read with a parser of its own group only
COMMAND_GROUPS = {
    "registry": "registry", "netlab": "netlab", "image": "image", "index": "index", "store": "store",
    "mount": "host", "umount": "host", "run": "host", "simulate": "sim", "compare": "report", "demo": "report",
    "dataset": "dataset", "service": "service", "snapshotter": "snapshotter", "fleet": "fleet",
    "calibrate": "calibrate",
}  # fmt: skip
#: groups whose commands another group's module adds to: ``image rpull`` is registered by ``snapshotter``
GROUP_COMPANIONS = {"image": ("image", "snapshotter")}


def build_parser(groups: Sequence[str] = GROUPS) -> argparse.ArgumentParser:
    """The ``soci-lab`` parser with the commands of ``groups`` (default: every group)."""
    parser = argparse.ArgumentParser(
        prog="soci-lab",
        description="Instrumented container image pulls (lazy SOCI, parallel-eager, sequential), real or simulated.",
        epilog="Options go before or after positional arguments. '--' ends soci-lab's own arguments: what follows "
        "is the command that 'run' and 'compare' run. Exit codes: 0 success, 1 runtime failure, 2 usage error; "
        "'run' exits with its command's code. 'soci-lab COMMAND --help' documents each command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs (anywhere on the line)")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in groups:
        try:
            module = importlib.import_module(f"{__name__}.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{group}":
                continue  # that room has no commands yet
            raise
        module.register(sub)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (importlib.metadata costs ~20 ms of every
    command's start otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"soci-lab {version()}")  # on stdout, as argparse's own version action
        parser.exit()


class UsageError(Exception):
    """A command line that parsed but does not make sense (two workloads at once…): exit 2, one line."""


def version() -> str:
    """The installed distribution's version (the package's own when it is run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("soci_lab")
    except PackageNotFoundError:  # pragma: no cover - a plain checkout on PYTHONPATH
        from .. import __version__

        return __version__


#: flags of ``soci-lab`` itself that may stand anywhere before ``--``
ANYWHERE = ("--debug", "--version")


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """soci-lab's own arguments, and the command after the first ``--`` (None when there is no ``--``).

    ``--debug`` and ``--version`` are moved to the front, where the top-level parser reads them.
    """
    argv = list(argv)
    cmd: list[str] | None = None
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    front = [a for a in argv if a in ANYWHERE]
    rest = [a for a in argv if a not in ANYWHERE]
    return front + rest, cmd


_parsers: dict[str, argparse.ArgumentParser] = {}


def parser_for(command: str | None) -> argparse.ArgumentParser:
    """The parser to read a ``command`` line with: one with only that command's group when the command is known,
    else (no command, ``--help``, a typo) the full one. Building every group's ~35 subcommands, and importing
    their modules, took 0.05–0.15 s of every command's start. Parsers are kept for the process; a full one,
    once built (the per-host service builds it before it forks), serves every command."""
    group = COMMAND_GROUPS.get(command or "")
    if "*" in _parsers:
        return _parsers["*"]
    key = group if group is not None else "*"
    if key not in _parsers:
        _parsers[key] = build_parser(GROUP_COMPANIONS.get(group, (group,)) if group is not None else GROUPS)
    return _parsers[key]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a ``soci-lab`` command line (see the module docstring); usage errors exit 2 via argparse."""
    own, cmd = split_argv(sys.argv[1:] if argv is None else argv)
    parser = parser_for(next((a for a in own if not a.startswith("-")), None))
    args = parser.parse_args(own)
    takes_cmd = getattr(args, "takes_cmd", False)
    sub = _subparser(parser, args.command)
    if cmd is not None and not takes_cmd:
        sub.error(f"'{args.command}' runs no command: nothing may follow '--' (got: {' '.join(cmd)})")
    if takes_cmd:
        args.cmd = cmd or []
        if takes_cmd == "required" and not args.cmd:
            sub.error(f"'{args.command}' needs a command after '--' (soci-lab {args.command} … -- CMD [ARG…])")
    return args


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` (its usage line is the one a usage error should show)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``soci-lab`` command line; returns the exit code (argparse's usage errors included)."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"soci-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # a task group's failure: report its first leaf like a plain error
        leaf = first_leaf(group)
        if args.debug or not isinstance(leaf, SociLabError | OSError):
            raise
        what = one_line(leaf) if isinstance(leaf, SociLabError) else f"{leaf.strerror or leaf}"
        print(f"soci-lab {args.command}: {what}", file=sys.stderr)
        return 1
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


def first_leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def add_registry_options(p: argparse.ArgumentParser) -> None:
    """``--insecure``, ``--creds`` and ``--events``, worded alike for every command that talks to a registry.

    ``image`` and ``index`` subcommands share them, so their help and meaning stay the same in both groups.
    """
    p.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json)")
    from .argtypes import events_file

    p.add_argument("--events", type=events_file, metavar="FILE",
                   help="write the run's events (.csv, .jsonl or .parquet)")


def event_recorder(args: argparse.Namespace, strategy: str, *, always: bool = False) -> EventRecorder | None:
    """A recorder for ``--events FILE`` with ``strategy`` in its events, or None when no file was asked for
    (``always``: a recorder anyway, e.g. to drive a progress bar).

    The events module is imported only when needed, to keep the CLI's start-up light.
    """
    if not args.events and not always:
        return None
    from ..events import EventRecorder

    return EventRecorder(strategy=strategy)


def write_recorded(args: argparse.Namespace, recorder: EventRecorder | None) -> None:
    """Write the recorder's events to ``--events FILE`` when one was asked for."""
    if recorder is not None and args.events:
        recorder.write(args.events)


def print_json(obj: Any) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
