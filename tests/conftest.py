"""Fixtures shared by every room: the two registries every registry-facing test runs against.

``distribution_registry`` is Debian's ``docker-registry`` (CNCF distribution 2.8), started on a free
loopback port with its own storage directory and stopped afterwards. ``embedded_registry`` is soci_lab's
own. ``registry`` is parametrised over both, so a test written once runs against each.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass(frozen=True)
class RegistryUnderTest:
    kind: str  # "embedded" or "distribution"
    url: str  # http://127.0.0.1:PORT

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout}s: {last}")


def start_distribution(root: Path) -> tuple[subprocess.Popen, str]:
    """Start docker-registry on a free loopback port with storage under ``root``; return (process, url)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: run scripts/setup.sh (apt package docker-registry)")
    for _attempt in range(5):
        port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        log = open(root / "registry.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/v2/", proc=proc)
            return proc, url
        except RuntimeError:
            stop_process(proc)
    raise RuntimeError("could not start docker-registry")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def distribution_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryUnderTest]:
    proc, url = start_distribution(tmp_path_factory.mktemp("distribution"))
    try:
        yield RegistryUnderTest("distribution", url)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def embedded_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryUnderTest]:
    from soci_lab.netlab import EmbeddedRegistry

    with EmbeddedRegistry(root=tmp_path_factory.mktemp("embedded")) as reg:
        yield RegistryUnderTest("embedded", reg.url)


@pytest.fixture(params=["embedded", "distribution"])
def registry(request: pytest.FixtureRequest) -> RegistryUnderTest:
    """Each registry-facing test runs once against each registry."""
    return request.getfixturevalue(f"{request.param}_registry")


@pytest.fixture(scope="session", autouse=True)
def session_soci_lab_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The per-host soci-lab service of this test session: its socket in a directory of the session's own (a
    developer's running service is never used, nor one from an earlier run), stopped when the session ends
    so that nothing the tests started outlives them. Tests of the service itself set their own directory."""
    import contextlib

    d = tmp_path_factory.mktemp("soci-lab-service")
    d.chmod(0o700)
    old = os.environ.get("SOCI_LAB_SERVICE_DIR")
    os.environ["SOCI_LAB_SERVICE_DIR"] = str(d / "svc")
    try:
        yield d / "svc"
    finally:
        from soci_lab import service

        service.forget()
        with contextlib.suppress(Exception):
            service.connect(start=False).stop()
        if old is None:
            os.environ.pop("SOCI_LAB_SERVICE_DIR", None)
        else:
            os.environ["SOCI_LAB_SERVICE_DIR"] = old
