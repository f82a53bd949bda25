"""Helpers of the snapshotter room's tests: the soci-lab snapshotter daemon and containerd 1.6 (from Debian)
as child processes, and small probes (FUSE mounts, layer servers). Fixtures are in conftest.py; tests import
helpers from here (a module named ``conftest`` is ambiguous when several rooms are collected together)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
REPO = Path(__file__).resolve().parents[2]

needs_containerd = pytest.mark.skipif(
    not (shutil.which("containerd") and shutil.which("ctr") and shutil.which("runc")) or os.geteuid() != 0,
    reason="needs root and Debian's containerd, ctr and runc (scripts/setup.sh installs them)",
)


def wait_for(path: Path, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before {path} appeared")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {path} did not appear in {timeout:.0f}s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Daemon:
    """``soci-lab snapshotter serve`` as a child process; ``start()`` again after ``stop()`` restarts it."""

    def __init__(self, base: Path, config: str | None = None) -> None:
        """``config``: the text of a soci-snapshotter config.toml passed with ``--config`` (None: defaults)."""
        self.config = None
        if config is not None:
            self.config = base / "snapshotter-config.toml"
            self.config.write_text(config)
        self.socket = base / "sn.sock"
        self.root = base / "snroot"
        self.events = base / "events.jsonl"
        self.log = base / "snapshotter.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CLI_CODE, "snapshotter", "serve", "--address", str(self.socket),
                 "--root", str(self.root), "--events", str(self.events),
                 *(["--config", str(self.config)] if self.config is not None else [])],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        wait_for(self.socket, self.proc, "soci-lab snapshotter serve")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)


@dataclass
class Containerd:
    """A containerd of a test. Its namespace is unique, so runc's state (``/run/containerd/runc/NS``, shared
    by every containerd on the host) never mixes with another test session's containers."""

    base: Path
    socket: Path
    proc: subprocess.Popen
    namespace: str = ""

    def ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
        res = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args],
                             capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            log = (self.base / "containerd.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"ctr {' '.join(args)} exited {res.returncode}: {res.stderr.decode()}\n{log}")
        return res




@dataclass(frozen=True)
class CatImage:
    ref: str
    data: bytes  # /data/hello.txt


def soci_lab(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``soci-lab ARGS`` from this worktree; fails the test with its stderr when it exits non-zero."""
    res = subprocess.run([sys.executable, "-c", CLI_CODE, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, f"soci-lab {' '.join(args)} exited {res.returncode}: {res.stderr}"
    return res


def fuse_mounts_under(path: Path) -> list[str]:
    target = str(path.resolve())
    with open("/proc/self/mounts") as f:
        rows = [line.split() for line in f]
    return [r[1] for r in rows if r[2].startswith("fuse") and r[1].startswith(target)]



def layer_servers(root: Path) -> list[int]:
    """PIDs of the lazy layer servers a daemon started under ``root``."""
    from soci_lab.snapshotter import layer_server_pids

    return layer_server_pids(root)
