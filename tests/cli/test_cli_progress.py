"""Progress (issue 16, point 9): image build, index create and pulls show per-layer progress bars on a
terminal's stderr, and nothing extra when stderr is not a terminal or with ``--json``.

The terminal is a real pseudo-terminal (``pty``): the command sees ``isatty()`` true on its stderr.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest
from clitools import CLI, MAIN, soci_lab


def _on_a_terminal(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run soci-lab with stderr on a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 30 rows, 100 columns
    shown: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                                cwd=MAIN, text=True)
    finally:
        os.close(slave)
    out, _ = proc.communicate(timeout=timeout)
    reader.join(10)
    os.close(master)
    return proc.returncode, out, b"".join(shown).decode("utf-8", "replace")


def _trees(base: Path, n: int) -> list[str]:
    dirs = []
    for i in range(n):
        d = base / f"l{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / f"f{i}.txt").write_bytes(b"layer %d\n" % i * 20_000)
        dirs += ["--layer", str(d)]
    return dirs


def test_image_build_and_index_create_draw_per_layer_bars(embedded_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ref = embedded_registry.ref("cli/progress", "v1")
    code, out, shown = _on_a_terminal("image", "build", *_trees(tmp_path, 3), ref)
    assert code == 0 and out.strip().startswith("sha256:")
    assert "image build" in shown and "3/3" in shown  # one step per layer, of three
    code, out, shown = _on_a_terminal("index", "create", ref, "--min-layer-size", "0", "--span-size", "64KiB")
    assert code == 0 and out.strip().startswith("sha256:")
    assert "index create: layers done 3" in shown


def test_quiet_when_stderr_is_not_a_terminal_or_with_json(embedded_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ref = embedded_registry.ref("cli/quiet", "v1")
    proc = soci_lab("image", "build", *_trees(tmp_path / "a", 2), ref)
    assert proc.returncode == 0 and proc.stderr == ""
    code, out, shown = _on_a_terminal("image", "build", *_trees(tmp_path / "b", 2), ref, "--json")
    assert code == 0 and out.startswith("{") and shown == ""


@pytest.mark.root
def test_a_pull_draws_a_bar_before_the_commands_output(sample_ref: str) -> None:
    code, out, shown = _on_a_terminal("run", sample_ref, "--mode", "sequential", "--", "/bin/sh", "-c",
                                      "echo OUT; echo ERR >&2")
    assert code == 0 and out == "OUT\n"
    assert "pull (sequential): layers done" in shown
    assert shown.index("pull (sequential)") < shown.index("ERR")  # the bar is closed before CMD runs
    code, out, shown = _on_a_terminal("run", sample_ref, "--mode", "sequential", "--json", "--", "/bin/sh", "-c",
                                      "true")
    assert code == 0 and "pull (" not in shown


@pytest.mark.root
def test_mount_in_the_background_draws_the_serving_process_layers(sample_ref: str, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    code, out, shown = _on_a_terminal("mount", sample_ref, str(target), "--mode", "lazy", "--background")
    try:
        assert code == 0, shown
        assert "mount (lazy): layers done 5" in shown  # reported by the serving process, layer by layer
        assert (target / "app" / "run.sh").is_file()
    finally:
        assert soci_lab("umount", str(target)).returncode == 0
    code, out, shown = _on_a_terminal("mount", sample_ref, str(target), "--mode", "lazy", "--background", "--json")
    try:
        assert code == 0 and out.startswith("{") and "layers done" not in shown
    finally:
        assert soci_lab("umount", str(target)).returncode == 0
