"""Start Debian's ``docker-registry`` (CNCF distribution) on a free loopback port, for comparisons.

The embedded registry is soci_lab's default; benchmarks and notebooks that want the real thing beside it
use ``DistributionRegistry`` (a context manager, like ``EmbeddedRegistry``): its own storage directory,
access log off, delete enabled, stopped with SIGTERM (then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

import httpx

from ..errors import ServerStartError


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class DistributionRegistry:
    """``docker-registry serve`` with storage under ``root`` (a temporary directory when None)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, host: str = "127.0.0.1") -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="soci-lab-distribution-"))
        self.host = host
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> Self:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise ServerStartError("docker-registry is not installed (Debian package docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(self.host)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}:{self.port}\n"
        )
        self._log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=self._log, stderr=self._log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()
                raise ServerStartError(f"docker-registry exited at start (see {self.root / 'registry.log'})")
            try:
                httpx.get(f"{self.url}/v2/", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise ServerStartError(f"docker-registry did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
