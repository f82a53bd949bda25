"""A hostile registry (issue 20, finding 8; build point 7).

:class:`HostileRegistry` serves one real image (built here into an OCI layout) over the distribution API on
loopback, and lies in one way per test: endless bodies, absurdly nested JSON, integers of thousands of
digits, documents corrupted once or always, redirects to plain HTTP on a non-loopback host. Each case runs
the real CLI (``image verify``, ``image copy``, ``index info``) or the real registry client and asserts the
documented outcome — refused with one line (exit 1, one stderr line, no traceback), or recovered by a
retry — and that nothing was written outside the destination (and nothing partial inside it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from soci_lab.errors import DigestMismatch, InvalidManifest, RegistryError
from soci_lab.images import build_image
from soci_lab.netlab.background import BackgroundServer
from soci_lab.oci import Digest, OCILayout
from soci_lab.remote import RegistryClient
from soci_lab.remote.cleartext import CleartextRefused

CLI = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: a non-loopback address nothing listens on (TEST-NET-1, RFC 5737)
FAR_AWAY = "192.0.2.1"


class HostileRegistry(BackgroundServer):
    """Serves ``layout``'s image as ``app:v1``; ``manifest`` / ``blob`` hooks may replace any answer.

    A hook gets ``(request, honest bytes, count of earlier requests for that path)`` and returns a response,
    or None for the honest one.
    """

    kind = "hostile-registry"

    def __init__(self, layout: OCILayout) -> None:
        super().__init__()
        self.layout = layout
        self.manifest_desc = layout.resolve("v1")
        self.manifest: Callable[[web.Request, bytes, int], Any] | None = None
        self.blob: Callable[[web.Request, bytes, int], Any] | None = None
        self.seen: dict[str, int] = {}

    @property
    def ref(self) -> str:
        return f"{self.url.removeprefix('http://')}/app:v1"

    async def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/v2/app/manifests/{ref}", self._manifest)
        app.router.add_route("*", "/v2/app/blobs/{digest}", self._blob)
        return app

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    def _count(self, request: web.Request) -> int:
        n = self.seen.get(request.path, 0)
        self.seen[request.path] = n + 1
        return n

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        data = self.layout.read_blob(self.manifest_desc.digest)
        n = self._count(request)
        if self.manifest is not None:
            resp = await _maybe(self.manifest(request, data, n))
            if resp is not None:
                return resp
        return _doc(data, str(self.manifest_desc.digest), request.method == "HEAD")

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if not self.layout.has(digest):
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        data = self.layout.read_blob(digest)
        n = self._count(request)
        if self.blob is not None:
            resp = await _maybe(self.blob(request, data, n))
            if resp is not None:
                return resp
        return web.Response(body=b"" if request.method == "HEAD" else data,
                            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
                                     "Content-Length": str(len(data))})


async def _maybe(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


def _doc(data: bytes, digest: str | None, head: bool = False) -> web.Response:
    headers = {"Content-Type": MANIFEST_TYPE, "Content-Length": str(len(data))}
    if digest:
        headers["Docker-Content-Digest"] = digest
    return web.Response(body=b"" if head else data, headers=headers)


def _flip(data: bytes) -> bytes:
    """One byte changed where it keeps the document parseable (inside the first string value)."""
    i = data.index(b'"', data.index(b":")) + 1
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


async def _endless(request: web.Request, content_type: str, prefix: bytes = b"") -> web.StreamResponse:
    """A chunked body that never ends (until the client hangs up)."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    await resp.prepare(request)
    await resp.write(prefix)
    chunk = b"x" * (64 << 10)
    try:
        for _ in range(100_000):  # 6 GiB: far beyond any cap, and the test's own limit
            await resp.write(chunk)
    except (ConnectionError, RuntimeError):
        pass
    return resp


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    root = tmp_path_factory.mktemp("hostile-src")
    (root / "tree" / "etc").mkdir(parents=True)
    (root / "tree" / "etc" / "hello").write_text("hello\n")
    (root / "tree" / "big.bin").write_bytes(os.urandom(1 << 20))
    build_image([root / "tree"], f"oci:{root / 'layout'}:v1")
    return OCILayout(root / "layout", create=False)


@pytest.fixture
def hostile(layout: OCILayout) -> Iterator[HostileRegistry]:
    with HostileRegistry(layout) as reg:
        yield reg


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)


def _refused(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _clean(tmp_path: Path, dest: Path | None = None) -> None:
    """Nothing left in the temp dir, and the destination layout (if any) holds no image."""
    assert not any((tmp_path / "tmp").iterdir()), list((tmp_path / "tmp").iterdir())
    assert {p.name for p in tmp_path.iterdir()} <= {"tmp", "dest"}
    if dest is not None and (dest / "index.json").exists():
        assert json.loads((dest / "index.json").read_text())["manifests"] == []


COMMANDS = [("image", "verify"), ("image", "copy"), ("index", "info"), ("index", "create")]


def _run(tmp_path: Path, cmd: tuple[str, str], ref: str) -> subprocess.CompletedProcess[str]:
    extra = [f"oci:{tmp_path / 'dest'}:v1"] if cmd == ("image", "copy") else []
    return _cli(tmp_path, *cmd, ref, *extra)


# --- hostile documents ----------------------------------------------------------------------------------------


def _nested(depth: int) -> Callable[[web.Request, bytes, int], web.Response]:
    def hook(request: web.Request, data: bytes, n: int) -> web.Response:
        doc = data.replace(b'"schemaVersion"', b'"x":' + b"[" * depth + b"]" * depth + b',"schemaVersion"', 1)
        return _doc(doc, str(Digest.from_bytes(doc)), request.method == "HEAD")
    return hook


def _huge_int(request: web.Request, data: bytes, n: int) -> web.Response:
    doc = data.replace(b'"schemaVersion"', b'"x":' + b"9" * 5000 + b',"schemaVersion"', 1)
    return _doc(doc, str(Digest.from_bytes(doc)), request.method == "HEAD")


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c))
@pytest.mark.parametrize(("hook", "why"), [(_nested(100_000), "nested more than 64 levels deep"),
                                            (_nested(900), "nested more than 64 levels deep"),
                                            (_huge_int, "an integer of 5000 digits")],
                         ids=["nested-100000", "nested-900", "int-5000-digits"])
def test_hostile_manifest_is_refused_with_one_line(hostile, tmp_path, cmd, hook, why):
    hostile.manifest = hook
    _refused(_run(tmp_path, cmd, hostile.ref), why)
    _clean(tmp_path, tmp_path / "dest")


def test_hostile_config_is_refused_with_one_line(hostile, layout, tmp_path):
    """The config blob is served as the descriptor says (so its digest matches) but nests absurdly: the
    digest can only be checked against a manifest that names it, so the manifest is rewritten too."""
    config = b'{"rootfs": {"type": "layers", "diff_ids": []}, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    cdig = str(Digest.from_bytes(config))
    honest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    honest["config"] = {**honest["config"], "digest": cdig, "size": len(config)}
    manifest = json.dumps(honest).encode()

    hostile.manifest = lambda r, d, n: _doc(manifest, str(Digest.from_bytes(manifest)), r.method == "HEAD")
    hostile.blob = lambda r, d, n: web.Response(body=config) if r.match_info["digest"] == cdig else None
    layout.write_blob(config)  # so the hostile server knows the digest
    _refused(_cli(tmp_path, "image", "verify", hostile.ref), "image config is refused", "nested more than")
    _clean(tmp_path)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c))
def test_endless_manifest_body_is_cut_at_the_cap(hostile, tmp_path, cmd):
    hostile.manifest = lambda r, d, n: _endless(r, MANIFEST_TYPE, b'{"schemaVersion": 2, "x": "')
    _refused(_run(tmp_path, cmd, hostile.ref), "over the", "cap")
    _clean(tmp_path, tmp_path / "dest")


def test_endless_config_body_is_refused(hostile, layout, tmp_path):
    manifest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    config_digest = manifest["config"]["digest"]
    hostile.blob = lambda r, d, n: _endless(r, "application/octet-stream") if r.match_info["digest"] == config_digest \
        else None
    line = _refused(_cli(tmp_path, "image", "verify", hostile.ref))
    assert config_digest in line or "config" in line
    _clean(tmp_path)


def test_endless_layer_body_copy_leaves_nothing(hostile, layout, tmp_path):
    manifest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    layer = manifest["layers"][0]["digest"]
    hostile.blob = lambda r, d, n: _endless(r, "application/octet-stream") if r.match_info["digest"] == layer \
        else None
    _refused(_cli(tmp_path, "image", "copy", hostile.ref, f"oci:{tmp_path / 'dest'}:v1"))
    _clean(tmp_path, tmp_path / "dest")
    blobs = tmp_path / "dest" / "blobs" / "sha256"
    assert not blobs.exists() or layer.split(":")[1] not in {p.name for p in blobs.iterdir()}


# --- corrupted documents: retried, then one line ------------------------------------------------------------


def test_manifest_corrupted_once_is_retried(hostile, tmp_path):
    hostile.manifest = lambda r, d, n: _doc(_flip(d), None) if n == 0 and r.method == "GET" else None
    ref = f"{hostile.url.removeprefix('http://')}/app@{hostile.manifest_desc.digest}"
    out = _cli(tmp_path, "image", "verify", ref)
    assert out.returncode == 0, out.stderr
    assert hostile.seen[f"/v2/app/manifests/{hostile.manifest_desc.digest}"] >= 2


def test_config_and_ztoc_sized_blobs_corrupted_once_are_retried(hostile, layout):
    manifest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    config = manifest["config"]
    hostile.blob = lambda r, d, n: web.Response(body=_flip(d)) if n == 0 else None

    async def main() -> bytes:
        async with RegistryClient(hostile.ref) as rc:
            return await rc.get_blob("app", config["digest"], config["size"])

    data = anyio.run(main)
    assert Digest.from_bytes(data) == config["digest"]
    assert hostile.seen[f"/v2/app/blobs/{config['digest']}"] == 2


def test_document_corrupted_every_time_fails_with_one_line(hostile, tmp_path):
    hostile.manifest = lambda r, d, n: _doc(_flip(d), None) if r.method == "GET" else None
    ref = f"{hostile.url.removeprefix('http://')}/app@{hostile.manifest_desc.digest}"
    _refused(_cli(tmp_path, "image", "verify", ref), "does not match its digest", "after 3 attempts")
    assert hostile.seen[f"/v2/app/manifests/{hostile.manifest_desc.digest}"] == 3

    async def main() -> None:
        async with RegistryClient(hostile.ref) as rc:
            await rc.get_manifest("app", str(hostile.manifest_desc.digest))

    with pytest.raises(DigestMismatch, match="after 3 attempts"):
        anyio.run(main)


# --- redirects to clear text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False])
def test_redirect_to_plain_http_elsewhere_is_refused(hostile, layout, fast_path):
    manifest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    layer = manifest["layers"][0]
    hostile.blob = lambda r, d, n: web.Response(status=307, headers={
        "Location": f"http://{FAR_AWAY}/storage/blob?X-Amz-Signature=secret"})

    async def main() -> None:
        async with RegistryClient(hostile.ref, fast_path=fast_path) as rc:
            await rc.get_blob("app", layer["digest"], layer["size"])

    with pytest.raises(CleartextRefused) as info:
        anyio.run(main)
    msg = str(info.value)
    assert FAR_AWAY in msg and "secret" not in msg and len(msg.splitlines()) == 1


def test_redirect_refused_through_the_cli(hostile, tmp_path):
    hostile.blob = lambda r, d, n: web.Response(status=302, headers={"Location": f"http://{FAR_AWAY}/x"})
    _refused(_cli(tmp_path, "image", "copy", hostile.ref, f"oci:{tmp_path / 'dest'}:v1"),
             "refusing plain HTTP", FAR_AWAY)
    _clean(tmp_path, tmp_path / "dest")


def test_redirect_to_loopback_is_followed(hostile, layout):
    """Plain HTTP on loopback stays allowed (the embedded registry, local proxies)."""
    manifest = json.loads(layout.read_blob(hostile.manifest_desc.digest))
    layer = manifest["layers"][0]
    target = f"{hostile.url}/v2/app/blobs/{layer['digest']}?moved=1"
    hostile.blob = lambda r, d, n: web.Response(status=307, headers={"Location": target}) \
        if "moved" not in r.query else None

    async def main() -> bytes:
        async with RegistryClient(hostile.ref) as rc:
            return await rc.get_blob("app", layer["digest"], layer["size"])

    assert len(anyio.run(main)) == layer["size"]


def test_error_body_nested_json_is_one_line(hostile):
    """A 500 whose distribution error body nests absurdly: an error naming the status, not a RecursionError."""
    body = b'{"errors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    hostile.manifest = lambda r, d, n: web.Response(status=400, body=body,
                                                    headers={"Content-Type": "application/json"})

    async def main() -> None:
        async with RegistryClient(hostile.ref) as rc:
            await rc.get_manifest("app", "v1")

    with pytest.raises(RegistryError) as info:
        anyio.run(main)
    assert "400" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not isinstance(info.value, InvalidManifest)


def test_cancelled_socket_work_that_never_started_does_not_hang():
    """Found by the redirect cases: when one download of a task group failed, a sibling cancelled before a
    worker thread took up its socket call waited forever for that call to end (``image copy`` hung)."""
    from soci_lab.remote.fastpath import run_cancellable as _cancellable

    ran: list[int] = []

    async def main() -> None:
        with anyio.move_on_after(0):
            await _cancellable(lambda: ran.append(1), None)

    t = threading.Thread(target=anyio.run, args=(main,), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the cancelled call is still waiting"
    assert ran == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mount needs root")
@pytest.mark.parametrize("mode", ["lazy", "parallel"])
def test_hostile_manifest_mount_is_one_line(hostile, tmp_path, mode):
    """Before: ``mounting … failed: RecursionError: maximum recursion depth exceeded …``."""
    hostile.manifest = _nested(100_000)
    mnt = tmp_path / "dest"
    mnt.mkdir()
    env = {**os.environ, "SOCI_LAB_STATE_ROOT": str(tmp_path / "tmp" / "state")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", CLI, "mount", hostile.ref, str(mnt), "--mode", mode],
                         capture_output=True, text=True, timeout=300, env=env)
    _refused(out, "nested more than 64 levels deep")
    assert not os.path.ismount(mnt) and not any(mnt.iterdir())
