"""``soci-lab image rpull`` is read by the parser a command line gets (the image group's, which the snapshotter
module adds ``rpull`` to), as the benchmark and users call it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from soci_lab.cli import _parsers, parse_args
from soci_lab.cli.snapshotter import cmd_rpull

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def test_image_rpull_parses_with_the_image_groups_parser() -> None:
    _parsers.clear()  # as a fresh process: no full parser built yet
    args = parse_args(["image", "rpull", "--address", "/run/ctd.sock", "--namespace", "ns", "127.0.0.1:5000/a:b"])
    assert args.handler is cmd_rpull
    assert args.namespace == "ns" and args.ref == "127.0.0.1:5000/a:b"


def test_image_rpull_help_in_a_fresh_process() -> None:
    done = subprocess.run([sys.executable, "-c", CLI, "image", "rpull", "--help"], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--address" in done.stdout
