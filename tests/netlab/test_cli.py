"""``soci-lab registry serve`` and ``soci-lab netlab proxy`` as scripts use them: the URL is the first
line of stdout (pipe or file), the server works, and SIGTERM/SIGINT stop it with exit code 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from netlab_helpers import push_blob, random_bytes

#: the ``soci-lab`` console script, run by this interpreter (works without the venv's bin on PATH)
SOCI_LAB = [sys.executable, "-c", "import sys; from soci_lab.cli import main; sys.exit(main())"]


def start(args: list[str], stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([*SOCI_LAB, *args], stdout=stdout, stderr=subprocess.PIPE, text=True)


def first_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return line


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_registry_serve_and_proxy(tmp_path):
    reg = start(["registry", "serve", "--root", str(tmp_path / "root"), "--port", "0"])
    try:
        reg_url = first_line(reg)
        r = httpx.get(f"{reg_url}/v2/")
        assert r.status_code == 200 and r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        data = random_bytes(100_000, 31)
        with httpx.Client(base_url=reg_url) as c:
            digest = push_blob(c, "cli/test", data)
        assert (tmp_path / "root" / "cli" / "test" / "oci-layout").is_file()
        proxy = start(["netlab", "proxy", "--upstream", reg_url, "--latency", "50ms", "--faults", "seed=1,corrupt=1"])
        try:
            proxy_url = first_line(proxy)
            t0 = time.monotonic()
            r = httpx.get(f"{proxy_url}/v2/cli/test/blobs/{digest}")
            assert time.monotonic() - t0 >= 0.05
            assert r.status_code == 200 and len(r.content) == len(data) and r.content != data
        finally:
            assert stop(proxy, signal.SIGINT) == 0
    finally:
        assert stop(reg) == 0


def test_url_is_first_line_when_stdout_is_a_file(tmp_path: Path):
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        proc = start(["registry", "serve", "--port", "0", "--bandwidth", "100Mbit"], stdout=f)
    try:
        deadline = time.monotonic() + 20
        while not out.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        url = out.read_text().splitlines()[0]
        assert httpx.get(f"{url}/v2/").status_code == 200
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["netlab", "proxy", "--upstream", "http://127.0.0.1:1", "--faults", "bogus=1"],
        ["netlab", "proxy", "--upstream", "http://127.0.0.1:1", "--bandwidth", "fast"],
        ["registry", "serve", "--latency", "soon"],
    ],
)
def test_bad_values_are_usage_errors(args):
    proc = subprocess.run([*SOCI_LAB, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error:" in proc.stderr


def test_port_in_use_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [*SOCI_LAB, "registry", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "could not start" in proc.stderr
