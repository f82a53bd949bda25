"""``soci-lab run`` behaves like ``docker run`` (issue 16, point 6): the command's stdout and stderr stream
through, its exit code is run's, the summary goes to stderr (or ``--json`` to stdout), every option has help.

The image is the demo's sample (a real shell) in the embedded registry, mounted for real (FUSE, overlayfs).
"""

from __future__ import annotations

import argparse
import json

import pytest
from clitools import soci_lab

from soci_lab.cli import build_parser

real_mount = pytest.mark.root

SCRIPT = "echo to-stdout; echo to-stderr >&2; ls /app; exit 3"


@real_mount
def test_output_streams_through_and_the_exit_code_is_the_commands(sample_ref: str) -> None:
    proc = soci_lab("run", sample_ref, "--mode", "lazy", "--", "/bin/sh", "-c", SCRIPT)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines()[0] == "to-stdout"
    assert "run.sh" in proc.stdout.splitlines()  # ls /app, from the image
    err = proc.stderr.splitlines()
    assert err[0] == "to-stderr" and "to-stderr" not in proc.stdout
    summary = err[-1]
    assert summary.startswith("soci-lab run: lazy pull of") and summary.endswith("exit code 3")


@real_mount
def test_with_json_stdout_holds_only_the_object(sample_ref: str) -> None:
    proc = soci_lab("run", sample_ref, "--json", "--mode", "sequential", "--", "/bin/sh", "-c", SCRIPT)
    assert proc.returncode == 3
    doc = json.loads(proc.stdout)  # the command's stdout went to stderr
    assert doc["exit_code"] == 3 and doc["mode"] == "sequential"
    assert {"to-stdout", "to-stderr"} <= set(proc.stderr.splitlines())


@real_mount
def test_a_command_killed_by_a_signal_exits_128_plus_n(sample_ref: str) -> None:
    proc = soci_lab("run", sample_ref, "--mode", "sequential", "--", "/bin/sh", "-c", "kill -9 $$")
    assert proc.returncode == 128 + 9, proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("exit code 137")


@real_mount
def test_a_successful_command_exits_0_with_its_output(sample_ref: str) -> None:
    proc = soci_lab("run", sample_ref, "--mode", "parallel", "--", "/bin/sh", "/app/run.sh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()  # the workload prints what it read


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand of soci-lab, by its name (``index create``)."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[name] = parser
        for sub in subs:
            for word, child in sub.choices.items():
                walk(child, f"{name} {word}".strip())

    walk(build_parser(), "")
    return out


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_has_help(command: str) -> None:
    parser = _commands()[command]
    missing = [a.option_strings or a.dest for a in parser._actions
               if a.help != argparse.SUPPRESS and not (a.help or "").strip()]
    assert missing == []
    if command == "run":
        text = parser.format_help()
        options = text[text.index("options:"):]  # documented as options, not only named in the description
        for flag in ("--mode", "--trace-out", "--events", "--json", "--timeout", "--readiness", "--config"):
            assert flag in options


@real_mount
def test_a_readiness_line_is_matched_and_the_output_still_streams(sample_ref: str) -> None:
    """With ``--readiness line:RE`` the output must be read to be matched: it is copied through to stdout,
    and the command, still running when ready, is stopped (exit 0, as for a server that came up)."""
    proc = soci_lab("run", sample_ref, "--mode", "sequential", "--readiness", "line:^READY$", "--", "/bin/sh", "-c",
                    "echo before; echo READY; while :; do :; done")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["before", "READY"]
    assert proc.stderr.splitlines()[-1].endswith("stopped once ready")
