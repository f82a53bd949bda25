"""A command line is read by a parser holding only its command's group (issue 18: importing all twelve command
groups and building their ~35 subcommands took 0.05–0.15 s of every cold command, ``mount`` included)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from soci_lab.cli import COMMAND_GROUPS, GROUPS, build_parser, parse_args, parser_for


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


@pytest.mark.parametrize("group", GROUPS)
def test_the_command_map_is_what_each_group_registers(group: str) -> None:
    parser = argparse.ArgumentParser()
    importlib.import_module(f"soci_lab.cli.{group}").register(parser.add_subparsers(dest="command"))
    assert _commands(parser) == {c for c, g in COMMAND_GROUPS.items() if g == group}


def test_every_command_is_mapped() -> None:
    assert _commands(build_parser()) == set(COMMAND_GROUPS)


@pytest.mark.parametrize(
    "argv",
    [
        ["mount", "127.0.0.1:5000/a/b:c", "/mnt", "--mode", "lazy", "--background", "--json"],
        ["--debug", "umount", "/mnt", "--timeout", "5s"],
        ["run", "oci:/x:1", "--mode", "parallel", "--", "ls", "-l"],
        ["service", "status"],
        ["dataset", "list"],
        ["image", "rpull", "127.0.0.1:5000/a/b:c", "--address", "/run/ctd.sock", "--json"],
    ],
)
def test_a_group_parser_reads_a_line_as_the_full_one_does(argv: list[str]) -> None:
    own = argv[: argv.index("--")] if "--" in argv else argv
    command = next(a for a in own if not a.startswith("-"))
    full = build_parser().parse_known_args(own)[0]
    mine = parser_for(command).parse_known_args(own)[0]
    assert vars(mine) == vars(full)
    assert parse_args(argv).command == command


def test_a_cold_command_imports_only_its_group() -> None:
    code = (
        "import sys\n"
        "from soci_lab.cli import parse_args\n"
        "parse_args(['umount', '/mnt'])\n"
        "import json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('soci_lab.cli.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    groups = {m.rsplit(".", 1)[1] for m in json.loads(out)} & set(GROUPS)
    assert groups == {"host"}


def test_an_unknown_command_gets_the_full_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["mountt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'mountt'" in err and "'snapshotter'" in err and "'umount'" in err
