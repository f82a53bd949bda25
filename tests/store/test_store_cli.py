"""``soci-lab store serve`` and ``soci-lab store build`` as scripts use them (cli.md)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from storetools import PLATFORM

SOCI_LAB = [sys.executable, "-c", "import sys; from soci_lab.cli import main; sys.exit(main())"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SOCI_LAB, *args], capture_output=True, text=True, timeout=120)


def test_serve_build_and_stop(tmp_path: Path, images):
    img = images.push(repo="cli")
    db = tmp_path / "store" / "hermes.db"
    proc = subprocess.Popen([*SOCI_LAB, "store", "serve", "--db", str(db), "--port", "0", "--platform", PLATFORM,
                             "--span-size", "16KiB"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}

        queued = _run("store", "build", img.ref, "--store", url)
        assert queued.returncode == 0, queued.stderr
        assert queued.stdout.split()[1] in ("Queued", "Building", "Ready")

        done = _run("store", "build", img.ref, "--store", url, "--wait", "--json")
        assert done.returncode == 0, done.stderr
        state = json.loads(done.stdout)
        assert state["status"] == "Ready" and state["imageDigestRef"] == img.digest_ref
        assert state["indexDigest"].startswith("sha256:")

        plain = _run("store", "build", img.ref, "--store", url, "--wait")
        assert plain.returncode == 0 and plain.stdout.strip() == state["indexDigest"]

        failed = _run("store", "build", f"{img.host}/cli:missing", "--store", url, "--wait")
        assert failed.returncode == 1
        assert len(failed.stderr.strip().splitlines()) == 1 and "failed" in failed.stderr
        assert "Traceback" not in failed.stderr

        bad = _run("store", "build", "--store", url, "Not A Ref")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr  # a usage error (issue 16)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert db.is_file()


def test_build_against_no_store_is_one_line(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run("store", "build", "example.com/app:v1", "--store", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.startswith("soci-lab store: store http://127.0.0.1:") and "unreachable" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2():
    assert _run("store", "serve").returncode == 2  # --db is required
    assert _run("store", "build").returncode == 2
    assert _run("store", "build", "example.com/a:b", "--profile", "fast").returncode == 2


def test_serve_with_token_file_and_socket(tmp_path: Path):
    """``--build-token-file`` creates a private token; ``store build`` with it, or through ``--build-socket``,
    is trusted (may read an ``oci:`` layout); without either it is refused (403, one line)."""
    from storetools import make_trees

    from soci_lab.images import build_image

    layout = tmp_path / "layout"
    build_image(make_trees(tmp_path / "trees", seed=777), f"oci:{layout}:v1")
    tok, sock = tmp_path / "token", tmp_path / "build.sock"
    proc = subprocess.Popen([*SOCI_LAB, "store", "serve", "--db", str(tmp_path / "h.db"), "--port", "0",
                             "--platform", PLATFORM, "--span-size", "16KiB", "--min-layer-size", "0",
                             "--build-token-file", str(tok), "--build-socket", str(sock)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert tok.stat().st_mode & 0o777 == 0o600 and len(tok.read_text().strip()) >= 32
        assert sock.stat().st_mode & 0o777 == 0o600
        ref = f"oci:{layout}:v1"
        anon = _run("store", "build", ref, "--store", url)
        assert anon.returncode == 1 and len(anon.stderr.strip().splitlines()) == 1 and "(403)" in anon.stderr
        with_token = _run("store", "build", ref, "--store", url, "--token-file", str(tok), "--wait")
        assert with_token.returncode == 0, with_token.stderr
        via_socket = _run("store", "build", ref, "--store", f"unix:{sock}", "--wait", "--profile", "none")
        assert via_socket.returncode == 0, via_socket.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not sock.exists()
