"""Fixtures of the remote room: both anyio backends, a misbehaving server, auth-enabled registries.

Every async test here runs under asyncio and trio (``anyio_backend``). Registry-facing tests use the shared
``registry`` fixture (embedded and distribution). ``misbehaving`` is a tiny aiohttp server whose handler a
test sets: it produces what a real registry cannot be made to produce (5xx storms, truncated or lying
bodies, redirects to storage, odd auth), each use says so in its docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from soci_lab.config import HTTPConfig

#: retries that keep storms of failures fast: 4 retries, 1-5 ms apart
FAST = HTTPConfig(max_retries=4, min_wait_msec=1, max_wait_msec=5)

USER, PASSWORD = "alice", "s3cret-pw"
#: bcrypt("s3cret-pw"), made once with crypt.crypt(..., METHOD_BLOWFISH) so the tests need no bcrypt package
BCRYPT_PASSWORD = "$2b$04$iHfJs.w.VxfWCM3aeEXHzOJ5.HPzgCySycr0xC1heTbo0ahKDfbO2"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Misbehaving:
    """An aiohttp server on its own loop/thread; ``handler`` answers every request, ``seen`` logs them."""

    url: str = ""
    handler: Handler | None = None
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def count(self, method: str | None = None, path_part: str = "") -> int:
        return sum(1 for m, p, _ in self.seen if (method is None or m == method) and path_part in p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def _misbehaving_server() -> Iterator[Misbehaving]:
    server = Misbehaving()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port = _free_port()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        server.seen.append((request.method, request.path_qs, dict(request.headers)))
        if server.handler is None:
            return web.Response(status=500, text="no handler")
        return await server.handler(request)

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        server.url = f"http://127.0.0.1:{port}"
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(_guard(main())), daemon=True)
    thread.start()
    ready.wait(10)
    yield server
    for task in asyncio.all_tasks(loop):
        loop.call_soon_threadsafe(task.cancel)
    thread.join(5)


async def _guard(coro: Awaitable[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await coro


@pytest.fixture
def misbehaving(_misbehaving_server: Misbehaving) -> Iterator[Misbehaving]:
    _misbehaving_server.handler = None
    _misbehaving_server.seen.clear()
    yield _misbehaving_server
    _misbehaving_server.handler = None


# --- registries with authentication -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory):
    """The embedded registry with distribution-style token auth, one user."""
    from soci_lab.netlab import EmbeddedRegistry, RegistryAuth

    with EmbeddedRegistry(root=tmp_path_factory.mktemp("embedded-auth"),
                          auth=RegistryAuth(users={USER: PASSWORD})) as reg:
        yield reg


@pytest.fixture(scope="session")
def basic_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry with htpasswd (bcrypt) Basic auth on a free loopback port; yields its URL."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: run scripts/setup.sh (apt package docker-registry)")
    root = tmp_path_factory.mktemp("distribution-basic")
    (root / "htpasswd").write_text(f"{USER}:{BCRYPT_PASSWORD}\n")
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"auth:\n  htpasswd:\n    realm: soci-lab-test\n    path: {root / 'htpasswd'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(root / "registry.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/v2/", timeout=1.0)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry with htpasswd did not start: see {root}") from None
                time.sleep(0.05)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(params=["httpx", "fast"])
def body_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a download test through httpx and through the fast path (urllib3, ``fastpath``), whatever the size."""
    import soci_lab.remote.ranges as ranges

    monkeypatch.setattr(ranges, "FAST_MIN_BYTES", 0 if request.param == "fast" else 1 << 62)
    return request.param


@dataclass(frozen=True)
class TLSRegistry:
    url: str  # https://127.0.0.1:PORT
    ca_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRegistry]:
    """Debian's docker-registry over TLS with a certificate from a throw-away CA (made with the openssl CLI)."""
    binary, openssl = shutil.which("docker-registry"), shutil.which("openssl")
    if binary is None or openssl is None:
        pytest.fail("docker-registry and openssl are needed (apt packages docker-registry, openssl)")
    root = tmp_path_factory.mktemp("distribution-tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=soci-lab test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=root)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", "/CN=127.0.0.1", cwd=root)
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "srv.crt", "-days", "2", "-extfile", "ext.cnf", cwd=root)
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {root / 'srv.crt'}\n    key: {root / 'srv.key'}\n"
    )
    log = open(root / "registry.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log,
                            start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/v2/", timeout=1.0, verify=ssl.create_default_context(cafile=str(root / "ca.crt")))
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry with TLS did not start: see {root}") from None
                time.sleep(0.05)
        yield TLSRegistry(url, root / "ca.crt")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
