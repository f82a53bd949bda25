"""Fixtures of the snapshotter room: the soci-lab snapshotter daemon, containerd 1.6 from Debian using it
as a proxy plugin, and a small runnable image in the embedded registry.

containerd runs with its own root, state, sockets and config (CRI disabled: ``ctr`` drives it), so it
never touches a system containerd. The image holds the host's ``cat`` and the libc it needs (layer 1)
and a data file (layer 2): a container ``cat``\\s the file with runc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from soci_lab.snapshot import umount_tree

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

    def __init__(self, base: Path) -> None:
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
                 "--root", str(self.root), "--events", str(self.events)],
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


CONFIG = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
[metrics]
  address = ""
[proxy_plugins.soci-lab]
  type = "snapshot"
  address = "{snapshotter}"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path).start()
    try:
        yield d
    finally:
        d.stop()
        from soci_lab.snapshotter import remove_root

        remove_root(d.root)  # layer servers outlive the daemon by design: stop them too


@pytest.fixture
def containerd(tmp_path: Path, daemon: Daemon) -> Iterator[Containerd]:
    """containerd 1.6 with its own root/state/socket, soci-lab (``daemon``) as proxy snapshotter ``soci-lab``."""
    base = tmp_path / "ctd"
    base.mkdir()
    namespace = f"soci-lab-test-{uuid.uuid4().hex[:8]}"
    config = base / "config.toml"
    config.write_text(CONFIG.format(base=base, snapshotter=daemon.socket))
    with (base / "containerd.log").open("wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(base / "containerd.sock", proc, "containerd")
        yield Containerd(base, base / "containerd.sock", proc, namespace)
    finally:
        c = Containerd(base, base / "containerd.sock", proc, namespace)
        if proc.poll() is None:
            for line in c.ctr("tasks", "ls", "-q", check=False).stdout.decode().split():
                c.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
                c.ctr("tasks", "delete", "-f", line, check=False)
            for line in c.ctr("containers", "ls", "-q", check=False).stdout.decode().split():
                c.ctr("containers", "delete", line, check=False)
        stop(proc)
        with contextlib.suppress(Exception):
            umount_tree(tmp_path)


@dataclass(frozen=True)
class CatImage:
    ref: str
    data: bytes  # /data/hello.txt


@pytest.fixture(scope="session")
def cat_image(embedded_registry, tmp_path_factory: pytest.TempPathFactory) -> CatImage:  # type: ignore[no-untyped-def]
    """Two layers: the host's ``cat`` with its libc and loader; a 400 KB data file at /data/hello.txt."""
    from soci_lab.images import build_image

    base = tmp_path_factory.mktemp("catimage")
    l1, l2 = base / "l1", base / "l2"
    cat = Path(shutil.which("cat") or "/usr/bin/cat")
    (l1 / "bin").mkdir(parents=True)
    shutil.copy(cat, l1 / "bin" / "cat")
    out = subprocess.run(["ldd", str(cat)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            dst = l1 / path.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(path).resolve(), dst)
    data = os.urandom(300_000).hex().encode()[:400_000] + b"\nend\n"
    (l2 / "data").mkdir(parents=True)
    (l2 / "data" / "hello.txt").write_bytes(data)
    ref = embedded_registry.ref("ctd/cat", "v1")
    build_image([l1, l2], ref, insecure=True)
    return CatImage(ref, data)


@pytest.fixture(scope="session")
def lazy_image(embedded_registry, cat_image: CatImage) -> CatImage:  # type: ignore[no-untyped-def]
    """``cat_image`` copied to another repository and given a v2 SOCI index covering both layers (1 MiB spans)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import copy_image

    ref = embedded_registry.ref("ctd/cat-lazy", "v1")
    copy_image(cat_image.ref, ref, insecure=True)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=0)
    return CatImage(ref, cat_image.data)


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
