"""The per-host service (:mod:`soci_lab.service`): started when absent, kept across mounts, trusted only when it
is ours, stopped cleanly.

Real processes, real unix sockets, real FUSE mounts and a real registry (distribution) for the CLI test; every
test has a service directory of its own (``SOCI_LAB_SERVICE_DIR``) and stops what it started. No timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci_lab import service
from soci_lab.errors import ServiceRefused
from soci_lab.lazy import zygote
from soci_lab.lazy.mount import LayerMount, LazyLayerSpec, ServeOptions, is_mounted, mount_layer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"),
]

CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _service_pid(*, start: bool = True) -> int:
    """The pid of this code's service (started when absent with ``start``), over a connection of its own."""
    client = service.connect(start=start)
    try:
        return client.pid
    finally:
        client.close()


def _processes_naming(text: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if text in Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace") and _alive(int(name)):
                    out.append(int(name))
    return out


@pytest.fixture
def svc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A service directory of this test's own; every service started in it is stopped afterwards."""
    d = tmp_path / "svc"
    monkeypatch.setenv("SOCI_LAB_SERVICE_DIR", str(d))
    monkeypatch.delenv("SOCI_LAB_SERVICE", raising=False)
    service.forget()
    zygote._service_failed.clear()
    yield d
    service.forget()
    zygote._service_failed.clear()
    with contextlib.suppress(Exception):
        service.connect(start=False).stop()  # stop() closes its connection
    for pid in _processes_naming(str(d)):  # anything still running that we started (by its pid)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)


def _spec(layer_files: tuple[Path, bytes]) -> LazyLayerSpec:
    return LazyLayerSpec.from_layer_file(layer_files[0], span_size=64 << 10)


def _first_file(mnt: Path) -> Path:
    """The first non-empty regular file under ``mnt`` (layers hold devices and links too)."""
    for root, _dirs, files in os.walk(mnt):
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            if ".soci-snapshotter" not in root and stat.S_ISREG(st.st_mode) and st.st_size > 0:
                return Path(root) / name
    raise AssertionError(f"no file under {mnt}")


def test_starts_when_absent_in_a_private_directory_and_is_nobodys_child(svc_dir: Path) -> None:
    assert not svc_dir.exists()
    client = service.connect()
    status = client.status()
    pid = status["pid"]
    assert _alive(pid) and _ppid(pid) != os.getpid()  # detached: not a child of whoever started it
    assert status["key"] == service.code_key()
    assert status["package"] == str(Path(service.__file__).resolve().parent)
    path = service.socket_path()
    assert path.parent == svc_dir and stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(svc_dir).st_mode) == 0o700
    again = service.connect()  # a second client finds the same service, starts no other
    assert again.pid == pid and len(list(svc_dir.glob("*.sock"))) == 1
    again.close()
    client.close()


def test_layer_servers_of_two_mounts_are_forked_by_one_service(svc_dir: Path, layer_files, tmp_path: Path) -> None:
    mnts = [tmp_path / "a", tmp_path / "b"]
    pids = []
    for mnt in mnts:
        mnt.mkdir()
        with mount_layer(_spec(layer_files), mnt, ServeOptions(background=False)) as m:
            assert _first_file(mnt).read_bytes()
            owner = service.get().pid
            assert _ppid(m.process.pid) == owner  # forked by the service, not by this process or a zygote
            pids.append(owner)
        assert not is_mounted(mnt)
    assert pids[0] == pids[1] and _alive(pids[0])  # the service outlived the first mount and served the second
    assert not zygote._service_failed


def test_stop_is_clean_and_forked_servers_keep_serving(svc_dir: Path, layer_files, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = LayerMount(_spec(layer_files), mnt, ServeOptions(background=False)).start()
    try:
        client = service.get()
        pid = client.pid
        path = service.socket_path()
        client.stop()
        service.forget()
        assert _wait_gone(pid), "the service did not stop"
        assert not path.exists()  # its socket is gone with it
        assert _first_file(mnt).read_bytes()  # the layer server it forked still serves
    finally:
        m.unmount()
        m.cleanup()
    assert not is_mounted(mnt)
    # SIGTERM stops it cleanly too
    pid = _service_pid()
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid)
    assert not service.socket_path().exists()


def test_a_dead_services_socket_is_replaced(svc_dir: Path) -> None:
    pid = _service_pid()
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    assert service.socket_path().exists()  # left behind by the killed service
    new = service.connect()
    assert new.pid != pid and new.status()["pid"] == new.pid
    new.close()


class _Impostor:
    """Something at the service's socket path that soci-lab did not make."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _Impostor:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.kind == "file":
            self.path.write_text("not a socket\n")
        elif self.kind == "open-dir":
            os.chmod(self.path.parent, 0o777)
        else:
            stype = socket.SOCK_STREAM if self.kind == "stream-socket" else socket.SOCK_SEQPACKET
            self.sock = socket.socket(socket.AF_UNIX, stype)
            self.sock.bind(str(self.path))
            self.sock.listen(4)
            if self.kind == "other-owner":
                os.chown(self.path, 65534, 65534)
            if self.kind == "wrong-answer":
                self.thread = threading.Thread(target=self._answer, daemon=True)
                self.thread.start()
        return self

    def _answer(self) -> None:
        assert self.sock is not None
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                conn.recv(4096)
                conn.send(json.dumps({"protocol": service.PROTOCOL, "key": "someone-else", "pid": 1}).encode())
                conn.close()

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.kind == "open-dir":
            os.chmod(self.path.parent, 0o700)


@pytest.mark.parametrize("kind", ["file", "stream-socket", "wrong-answer", "other-owner", "open-dir"])
def test_refuses_a_socket_it_did_not_make(svc_dir: Path, kind: str) -> None:
    path = service.socket_path()
    with _Impostor(path, kind):
        before = os.lstat(path) if path.exists() else None
        with pytest.raises(ServiceRefused) as info:
            service.connect()
        assert len(str(info.value).splitlines()) == 1 and "refus" in str(info.value)
        if before is not None:  # left alone: not removed, not replaced
            assert os.lstat(path).st_ino == before.st_ino
        assert _processes_naming(str(svc_dir)) == []  # and no service was started beside it


def test_a_refused_socket_leaves_mounts_working_without_the_service(svc_dir: Path, layer_files, tmp_path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with (
        _Impostor(service.socket_path(), "wrong-answer"),
        mount_layer(_spec(layer_files), mnt, ServeOptions(background=False)) as m,
    ):
        assert _first_file(mnt).read_bytes()
        assert zygote._service_failed and "refusing" in zygote._service_failed[0]
        assert _ppid(m.process.pid) != os.getpid()  # a private zygote's fork
    assert not is_mounted(mnt)


# --- the CLI: mount --background through the service ---------------------------------------------------------


@pytest.fixture(scope="module")
def indexed_image(distribution_registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two layers of a few MB each in distribution, with a v2 SOCI index (both layers lazy)."""
    import random

    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_image

    base = tmp_path_factory.mktemp("svcimg")
    rng = random.Random(18)
    dirs = []
    for i in range(2):
        d = base / f"l{i}" / f"part{i}"
        d.mkdir(parents=True)
        for j in range(12):
            (d / f"f{j}.bin").write_bytes(rng.randbytes(100_000) + b"text " * 40_000)
        dirs.append(d.parent)
    ref = distribution_registry.ref("svc/img", "v1")
    build_image(dirs, ref, insecure=True)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    return ref


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=check
    )


def test_background_mounts_are_served_by_forks_of_the_service(
    svc_dir: Path, indexed_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCI_LAB_STATE_ROOT", str(tmp_path / "root"))
    mnts = [tmp_path / "m1", tmp_path / "m2"]
    servers = []
    try:
        for i, mnt in enumerate(mnts):
            mnt.mkdir()
            # a relative --state-dir: the fork runs in this command's working directory, not the service's
            out = _cli("mount", indexed_image, str(mnt), "--mode", "lazy", "--background", "--json",
                       "--state-dir", f"state{i}", cwd=tmp_path)
            doc = json.loads(out.stdout)
            assert [lay["how"] for lay in doc["layers"]] == ["lazy", "lazy"]
            assert (tmp_path / f"state{i}" / "mount.json").exists()
            record = json.loads((tmp_path / f"state{i}" / "mount.json").read_text())
            servers.append(record["server"]["pid"])
            assert len(_first_file(mnt).read_bytes()) > 100_000
        owner = _service_pid(start=False)
        assert all(_ppid(pid) == owner for pid in servers)  # both serving processes: forks of one service
        # a mountpoint that is already mounted is refused by the fork, and the mount there is left alone
        bad = _cli("mount", indexed_image, str(mnts[0]), "--mode", "lazy", "--background", cwd=tmp_path,
                   check=False)
        assert bad.returncode == 1 and "already a mount point" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        assert _first_file(mnts[0]).read_bytes()
    finally:
        for mnt in mnts:
            if is_mounted(mnt):
                _cli("umount", str(mnt), cwd=tmp_path, check=False)
    assert not any(is_mounted(m) for m in mnts)
    assert all(_wait_gone(pid) for pid in servers)
    assert _alive(owner)  # the service stays for the next command


def test_background_mount_without_a_usable_service_still_mounts(
    svc_dir: Path, indexed_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCI_LAB_STATE_ROOT", str(tmp_path / "root"))
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        with _Impostor(service.socket_path(), "wrong-answer"):
            out = _cli("mount", indexed_image, str(mnt), "--mode", "lazy", "--background", "--json", cwd=tmp_path)
        assert "serving without the soci-lab service" in out.stderr and "refusing" in out.stderr
        assert json.loads(out.stdout)["mode"] == "lazy"
        assert len(_first_file(mnt).read_bytes()) > 100_000
        assert _processes_naming("soci_lab.servicedaemon --serve " + str(svc_dir)) == []
    finally:
        if is_mounted(mnt):
            _cli("umount", str(mnt), cwd=tmp_path, check=False)
    assert not is_mounted(mnt)


def test_service_commands_start_status_stop(svc_dir: Path, tmp_path: Path) -> None:
    started = json.loads(_cli("service", "start", "--json", cwd=tmp_path).stdout)
    assert started["key"] == service.code_key() and _alive(started["pid"])
    assert json.loads(_cli("service", "status", "--json", cwd=tmp_path).stdout)["pid"] == started["pid"]
    assert json.loads(_cli("service", "start", "--json", cwd=tmp_path).stdout)["pid"] == started["pid"]
    assert json.loads(_cli("service", "stop", "--json", cwd=tmp_path).stdout) == {"stopped": started["pid"]}
    assert _wait_gone(started["pid"]) and not service.socket_path().exists()
    gone = _cli("service", "status", cwd=tmp_path, check=False)
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1 and "no soci-lab service" in gone.stderr
    assert _cli("service", "stop", cwd=tmp_path).returncode == 0  # nothing to stop is not an error
