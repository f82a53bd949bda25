"""Host safety of ``soci-lab mount``/``umount`` as root (issue 20, findings 2-5), with real images, real
overlayfs and FUSE mounts, and the real CLI in subprocesses:

* ``umount`` touches only mounts soci-lab recorded making: a tmpfs (and one nested in it) is refused, and so
  is a soci-lab mount with someone else's mount inside it — one line, exit 1, everything still mounted;
* a ``--state-dir`` that is not empty and not soci-lab's is refused before anything is written in it, and
  cleanup gives an empty directory back empty, deleting nothing someone else put there;
* every mount is ``nosuid,nodev``: a setuid-root binary of the image run by uid 65534 keeps euid 65534 and a
  device node of the image cannot be opened, in every mode, unless ``--allow-setuid-and-devices``;
* ``--creds`` with ``--background`` never reaches a command line or an environment, and a lazy mount with
  ``--creds`` against a token-auth registry serves its indexed layers lazily (the FUSE servers get the
  credentials) instead of quietly unpacking them locally.

Everything runs under a private state root and a world-traversable base directory (uid 65534 has to reach
the mountpoint); each test takes down what it mounted, and the module checks nothing of it is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci_lab.snapshot import mounts_under, umount_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")

CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
MAIN = Path(__file__).resolve().parents[2]
NOBODY = 65534
USER, PASSWORD = "hostsafety", "pw-6f1c2e-never-in-argv"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A directory every user can traverse, with a private state root."""
    d = Path(tempfile.mkdtemp(prefix="soci-lab-hostsafety-", dir="/tmp"))
    d.chmod(0o755)
    (d / "state-root").mkdir()
    try:
        yield d
    finally:
        left = mounts_under(d)
        for target in reversed(left):
            with contextlib.suppress(Exception):
                umount_tree(target)
        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"mounts left behind: {left}"


@pytest.fixture
def env(base: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SOCI_LAB_STATE_ROOT", str(base / "state-root"))  # find_state_dir here, too
    e = dict(os.environ)
    e["HOME"] = str(base / "home")  # no ambient ~/.docker/config.json
    e.pop("REGISTRY_AUTH_FILE", None)
    e.pop("DOCKER_CONFIG", None)
    return e


@pytest.fixture
def mnt(base: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    path = base / "mnt" / request.node.name.replace("/", "_")[:60]
    path.mkdir(parents=True)
    path.chmod(0o755)
    path.parent.chmod(0o755)
    yield path
    for target in reversed(mounts_under(path)):  # a failed test: take it down so the next ones run clean
        with contextlib.suppress(Exception):
            umount_tree(target)
    with contextlib.suppress(OSError):
        path.rmdir()


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args], capture_output=True, text=True, cwd=MAIN, env=env, timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def one_line_refusal(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}, wanted 1: {proc.stdout[-500:]} {proc.stderr[-1500:]}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _tree(root: Path) -> Path:
    """One layer: a setuid-root copy of ``id``, a character device (``/dev/zero``'s numbers), a directory
    to mount on, and enough data that the layer gets a zTOC."""
    (root / "bin").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "mnt").mkdir()
    (root / "data").mkdir()
    suid = root / "bin/suid-id"
    shutil.copyfile(shutil.which("id") or "/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    os.mknod(root / "dev/zero2", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    (root / "data/blob.bin").write_bytes(os.urandom(64 << 10) * 24)
    for d in (root, *[p for p in root.rglob("*") if p.is_dir()]):
        d.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An OCI layout image of :func:`_tree` with a SOCI index covering its layer (lazy mounts serve it)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_image

    work = tmp_path_factory.mktemp("hostsafety-image")
    ref = f"oci:{work / 'lay'}:v1"
    build_image([_tree(work / "l0")], ref)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=0)
    return ref


def _run_as_nobody(path: Path) -> str:
    """Exec ``path`` as uid/gid 65534 and return what it printed.

    It is exec'd through ``/proc/self/fd/N`` of a descriptor opened here: an eager rootfs's top directory
    is 0700 when the image has no ``./`` entry, so 65534 could not walk to the file by its path; the magic
    link reaches the very file on the very mount (same ``nosuid`` check) without walking its parents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        proc = subprocess.run(
            [f"/proc/self/fd/{fd}"], pass_fds=(fd,), user=NOBODY, group=NOBODY, extra_groups=[],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextlib.contextmanager
def mounted(env: dict[str, str], ref: str, mnt: Path, mode: str, *extra: str) -> Iterator[dict]:
    doc = json.loads(ok(cli(env, "mount", ref, str(mnt), "--mode", mode, "--background", "--json", *extra)).stdout)
    try:
        yield doc
    finally:
        ok(cli(env, "umount", str(mnt)))


# --- nosuid,nodev (finding 4) ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["lazy", "parallel", "sequential"])
def test_setuid_binaries_and_devices_of_an_image_have_no_effect(env, layout: str, mnt: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    with mounted(env, layout, mnt, mode) as doc:
        if mode == "lazy":
            assert doc["layers"][0]["how"] == "lazy"
        suid = mnt / "bin/suid-id"
        assert suid.stat().st_mode & stat.S_ISUID and suid.stat().st_uid == 0  # the bit is there in the view
        out = _run_as_nobody(suid)
        assert "euid=" not in out and out.startswith(f"uid={NOBODY}"), out
        flags = os.statvfs(mnt).f_flag
        assert flags & os.ST_NOSUID and flags & os.ST_NODEV
        assert stat.S_ISCHR((mnt / "dev/zero2").lstat().st_mode)
        with pytest.raises(PermissionError):
            (mnt / "dev/zero2").open("rb")
        if mode == "lazy":  # the FUSE layer mount under the state directory too
            from soci_lab.snapshot import find_state_dir

            record = find_state_dir(mnt).read_record()
            fuse = [lay.path for lay in record.layers if lay.how == "lazy"]
            assert fuse and all(os.statvfs(p).f_flag & os.ST_NOSUID and os.statvfs(p).f_flag & os.ST_NODEV
                                for p in fuse)


def test_allow_setuid_and_devices_lifts_it(env, layout: str, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    with mounted(env, layout, mnt, "lazy", "--allow-setuid-and-devices"):
        out = _run_as_nobody(mnt / "bin/suid-id")
        assert "euid=0" in out, out
        assert (mnt / "dev/zero2").open("rb").read(4) == b"\0" * 4


# --- umount touches only what soci-lab mounted (finding 2) -------------------------------------------------


def test_umount_refuses_a_tmpfs_soci_lab_never_mounted(env, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hostsafety", str(mnt)], check=True)
    try:
        (mnt / "sub").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hostsafety-nested", str(mnt / "sub")], check=True)
        (mnt / "sub/keep").write_text("mine")
        for target in (mnt, mnt / "sub"):
            one_line_refusal(cli(env, "umount", str(target)), "not mounted by soci-lab")
        assert mounts_under(mnt) == [str(mnt), str(mnt / "sub")]
        assert (mnt / "sub/keep").read_text() == "mine"
    finally:
        umount_tree(mnt)


def test_umount_refuses_while_a_foreign_mount_is_inside_the_rootfs(env, layout: str, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    from soci_lab.snapshot import find_state_dir

    ok(cli(env, "mount", layout, str(mnt), "--mode", "lazy", "--background"))
    record = find_state_dir(mnt).read_record()
    inner = mnt / "mnt"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hostsafety-inner", str(inner)], check=True)
    try:
        line = one_line_refusal(cli(env, "umount", str(mnt)), "refusing", "tmpfs", str(inner))
        assert "hostsafety-inner" in line
        # nothing was touched: the rootfs, its layer mounts, the tmpfs and the serving process are all there
        assert str(inner) in mounts_under(mnt) and str(mnt) in mounts_under(mnt)
        assert record.server is not None and record.server.alive()
        assert (mnt / "bin/suid-id").exists()
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    ok(cli(env, "umount", str(mnt)))
    assert mounts_under(mnt) == [] and not record.server.alive()


# --- state directories (finding 3) -------------------------------------------------------------------------


def test_a_state_dir_that_is_not_empty_is_refused_and_left_alone(env, layout: str, mnt: Path, base: Path) -> None:  # type: ignore[no-untyped-def]
    state = base / "users-dir"
    state.mkdir()
    (state / "thesis.tex").write_text("years of work")
    (state / "layers").mkdir()  # even a name soci-lab would use
    (state / "layers/notes").write_text("mine")
    before = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    # a mount that would work (in the background: a foreground one would serve), and one that fails
    for ref, extra in (
        (layout, ("--background",)),
        (f"oci:{base}/no-such-layout:v1", ()),
        (f"oci:{base}/no-such-layout:v1", ("--background",)),
    ):
        proc = cli(env, "mount", ref, str(mnt), "--mode", "parallel", "--state-dir", str(state), *extra)
        try:
            one_line_refusal(proc, str(state), "not empty")
            assert mounts_under(mnt) == []
            assert sorted(str(p.relative_to(state)) for p in state.rglob("*")) == before
        finally:
            if proc.returncode == 0:  # it mounted (the bug): take it down before failing
                cli(env, "umount", str(mnt))
    proc = cli(env, "run", layout, "--mode", "parallel", "--state-dir", str(state), "--", "/bin/suid-id")
    one_line_refusal(proc, "not empty")
    assert sorted(str(p.relative_to(state)) for p in state.rglob("*")) == before
    shutil.rmtree(state)


def test_an_empty_state_dir_is_given_back_empty_and_a_new_one_removed(env, layout: str, mnt: Path, base: Path) -> None:  # type: ignore[no-untyped-def]
    given = base / "empty-dir"
    given.mkdir()
    with mounted(env, layout, mnt, "lazy", "--state-dir", str(given)):
        assert (given / ".soci-lab-state").is_file()
        (given / "dropped-in-later.txt").write_text("not soci-lab's")
    assert sorted(os.listdir(given)) == ["dropped-in-later.txt"]
    shutil.rmtree(given)
    fresh = base / "new-dir" / "state"
    with mounted(env, layout, mnt, "parallel", "--state-dir", str(fresh)):
        assert (fresh / ".soci-lab-state").is_file()
    assert not fresh.exists()  # soci-lab made it, soci-lab removed it
    shutil.rmtree(base / "new-dir")
    # a failing mount cleans up the same way: given back empty
    given.mkdir()
    proc = cli(env, "mount", f"oci:{base}/no-such-layout:v1", str(mnt), "--mode", "parallel", "--state-dir", str(given))
    assert proc.returncode == 1
    assert os.listdir(given) == []
    given.rmdir()


# --- credentials (finding 5) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_image(tmp_path_factory: pytest.TempPathFactory, layout: str) -> Iterator[str]:
    """The image with its SOCI index in the embedded registry with token auth (no anonymous pulls)."""
    from soci_lab.images import copy_image
    from soci_lab.netlab import EmbeddedRegistry, RegistryAuth

    auth = RegistryAuth(users={USER: PASSWORD})
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("hostsafety-reg"), auth=auth) as reg:
        ref = f"{reg.url.removeprefix('http://')}/safety/img:v1"
        copy_image(layout, ref, creds=f"{USER}:{PASSWORD}")
        from soci_lab.artifacts import create_soci_index

        create_soci_index(ref, span_size=1 << 20, min_layer_size=0, creds=f"{USER}:{PASSWORD}")
        yield ref


def _proc_text(pid: int) -> str:
    out = ""
    for name in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            out += Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    return out


def test_background_creds_never_reach_a_command_line_or_environment(env, layout: str, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    from soci_lab.snapshot import find_state_dir

    with mounted(env, layout, mnt, "parallel", "--creds", f"{USER}:{PASSWORD}"):
        record = find_state_dir(mnt).read_record()
        assert record.server is not None and record.server.alive()
        text = _proc_text(record.server.pid)
        assert "--serve-fd" in text  # it is the serving process
        assert PASSWORD not in text, "the password is readable in the serving process's /proc/PID/cmdline"


def test_background_lazy_mount_with_creds_keeps_them_private_and_serves_lazily(env, token_image, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    from soci_lab.snapshot import find_state_dir

    # without credentials the registry refuses (so the lazy layer below really used them)
    denied = cli(env, "mount", token_image, str(mnt), "--mode", "lazy", "--background")
    assert denied.returncode == 1 and PASSWORD not in denied.stderr
    with mounted(env, token_image, mnt, "lazy", "--creds", f"{USER}:{PASSWORD}") as doc:
        assert [lay["how"] for lay in doc["layers"]] == ["lazy"], doc["layers"]
        record = find_state_dir(mnt).read_record()
        pids = [record.server.pid, *(lay.process.pid for lay in record.layers if lay.process is not None)]
        assert len(pids) == 2
        for pid in pids:
            assert PASSWORD not in _proc_text(pid), f"the password is readable in /proc/{pid}"
        # the lazy layer really reads through the registry: a whole file comes back
        assert len((mnt / "data/blob.bin").read_bytes()) == (64 << 10) * 24
        state = Path(record.state_dir)
        for p in state.rglob("*"):
            small = p.is_file() and not p.is_symlink() and "/mnt/" not in str(p) and p.stat().st_size < 1 << 20
            if small and PASSWORD.encode() in p.read_bytes():
                assert p.stat().st_mode & 0o077 == 0, f"{p} holds the password and others can read it"
