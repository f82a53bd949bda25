"""Run a command chrooted in a rootfs, wait for readiness, time it, and leave nothing behind.

:class:`RunningWorkload` is the building block (a context manager): it mounts what the command needs
(:mod:`.mounts`), starts ``chroot [--userspec] ROOT CMD`` in a new session — optionally under a wrapper
such as ``strace`` that runs *outside* the rootfs — reads its merged stdout/stderr on a thread (keeping
the tail, matching ``line:`` rules), and on exit kills the whole process tree and unmounts, whatever
happened. "The whole tree" is every process of the command's session plus every process whose root
directory is the rootfs (daemons that ``setsid`` away still live in the chroot).

:func:`run_in_rootfs` is the one-call form: start, wait for readiness, stop; it returns a
:class:`RunResult` with ``cmd_s`` (start → ready), ``exit_code`` (``None`` when the command was still
running at readiness and was stopped), ``ready`` and the output tail. The ``soci-lab run`` command builds
on these two.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from ..errors import ReadinessTimeout, WorkloadError
from ..events import EventRecorder
from .mounts import DEFAULT_MOUNTS, chroot_mounts
from .readiness import Readiness

#: the environment a chrooted command gets unless the caller gives one
DEFAULT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
#: lines of output kept for diagnostics
TAIL_LINES = 200


@dataclass
class RunResult:
    """The timings and outcome of one run in a rootfs (seconds from the command's start)."""

    cmd: tuple[str, ...]
    readiness: str
    ready: bool
    cmd_s: float | None  #: start → readiness (None if never ready)
    total_s: float  #: start → stopped (kill and reap included)
    exit_code: int | None  #: None when the command was stopped after readiness
    timed_out: bool = False
    output_tail: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "cmd": list(self.cmd),
            "readiness": self.readiness,
            "ready": self.ready,
            "cmd_s": self.cmd_s,
            "total_s": self.total_s,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "output_tail": self.output_tail[-20:],
        }


def lookup_user(rootfs: str | os.PathLike[str], user: str) -> tuple[int, int, str]:
    """``(uid, gid, home)`` of ``user`` (a name or a number) from the rootfs's own ``/etc/passwd``."""
    passwd = os.path.join(os.fspath(rootfs), "etc", "passwd")
    try:
        with open(passwd, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 7 and (parts[0] == user or parts[2] == user):
                    return int(parts[2]), int(parts[3]), parts[5]
    except FileNotFoundError:
        pass
    if user.isdigit():
        return int(user), int(user), "/"
    raise WorkloadError(f"user {user!r} is not in {passwd}")


def processes_in(rootfs: str | os.PathLike[str], session: int | None = None) -> list[int]:
    """PIDs whose root directory is ``rootfs``, or whose session is ``session``."""
    root = os.path.realpath(os.fspath(rootfs))
    me = os.getpid()
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            if session is not None and os.getsid(pid) == session:
                out.append(pid)
                continue
            if os.readlink(f"/proc/{pid}/root") == root:
                out.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return out


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class RunningWorkload:
    """A command running chrooted in ``rootfs``; use as a context manager (see the module docstring).

    ``wrapper`` is a host command put before ``chroot`` (e.g. ``strace -f -o FILE``); ``user`` a name or
    uid from the rootfs's ``/etc/passwd``; ``cwd`` the working directory inside the rootfs; ``mounts``
    what :func:`~.mounts.chroot_mounts` mounts; ``output`` an optional binary file also receiving every
    line. ``on_ready`` is called once, at readiness, while the processes still run (recorders use it).
    """

    def __init__(
        self,
        rootfs: str | os.PathLike[str],
        cmd: Sequence[str],
        readiness: Readiness | str = "exit",
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str = "/",
        wrapper: Sequence[str] = (),
        mounts: tuple[str, ...] = DEFAULT_MOUNTS,
        recorder: EventRecorder | None = None,
        output: IO[bytes] | None = None,
    ) -> None:
        if not cmd:
            raise WorkloadError("no command to run")
        self.rootfs = os.path.realpath(os.fspath(rootfs))
        if not os.path.isdir(self.rootfs):
            raise WorkloadError(f"rootfs {self.rootfs} is not a directory")
        self.cmd = tuple(cmd)
        self.readiness = readiness if isinstance(readiness, Readiness) else Readiness.parse(readiness)
        self.env = dict(DEFAULT_ENV if env is None else env)
        self.user = user
        self.cwd = cwd
        self.wrapper = tuple(wrapper)
        self.mounts = mounts
        self.recorder = recorder
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_start = 0.0
        self.ready_s: float | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._line_ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._mount_cm: contextlib.AbstractContextManager[list[str]] | None = None
        self._ev_t0 = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """The full host command line: wrapper, chroot with its user spec, then the command."""
        chroot = [shutil.which("chroot") or "/usr/sbin/chroot"]  # the host's, whatever PATH the command gets
        if self.user is not None:
            uid, gid, home = lookup_user(self.rootfs, self.user)
            chroot += [f"--userspec={uid}:{gid}", f"--groups={gid}"]
            self.env.setdefault("HOME", home)
            if self.env.get("HOME") == "/root":
                self.env["HOME"] = home
        inner = list(self.cmd)
        if self.cwd not in ("", "/"):
            inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', self.cwd, *inner]
        return [*self.wrapper, *chroot, self.rootfs, *inner]

    def __enter__(self) -> RunningWorkload:
        cm = chroot_mounts(self.rootfs, self.mounts)
        self._mount_cm = cm
        cm.__enter__()
        try:
            self.start()
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            if self._mount_cm is not None:
                cm, self._mount_cm = self._mount_cm, None
                cm.__exit__(None, None, None)

    def start(self) -> None:
        argv = self.argv()
        self._ev_t0 = self.recorder.now() if self.recorder else 0.0
        self.t_start = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise WorkloadError(f"cannot start {argv[0]}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._read_output, name="soci-lab-workload-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            if self.output is not None:
                self.output.write(raw)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if not self._line_ready.is_set() and self.readiness.matches_line(line):
                self._line_ready.set()

    @property
    def event_origin(self) -> float:
        """The recorder time at which the command started (0 without a recorder)."""
        return self._ev_t0

    # -- waiting ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def wait_ready(self, timeout: float, on_ready: Callable[[RunningWorkload], None] | None = None) -> float:
        """Block until the readiness rule holds; returns ``cmd_s``. Raises :class:`ReadinessTimeout`
        after ``timeout`` seconds, and :class:`WorkloadError` when the command ends without being ready."""
        assert self.proc is not None
        rule = self.readiness
        deadline = self.t_start + timeout
        while True:
            code = self.proc.poll()
            if rule.kind == "line" and self._line_ready.is_set():
                break
            if rule.kind == "path" and rule.path_exists(self.rootfs):
                break
            if code is not None:
                if self._reader is not None:
                    self._reader.join(timeout=2)  # the last lines may hold the ready line
                if rule.kind == "exit" and code == 0:
                    break
                if rule.kind == "line" and self._line_ready.is_set():
                    break
                last = self.tail[-1] if self.tail else "(no output)"
                raise WorkloadError(
                    f"{' '.join(self.cmd)} exited with {code} before readiness {rule}; last output: {last}"
                )
            if time.monotonic() >= deadline:
                raise ReadinessTimeout(f"{' '.join(self.cmd)} not ready ({rule}) after {timeout:g}s")
            time.sleep(0.005 if rule.kind != "exit" else 0.002)
        self.ready_s = self.elapsed()
        if self.recorder is not None:
            self.recorder.emit("ready", self._ev_t0, readiness=str(rule), cmd_s=self.ready_s)
        if on_ready is not None:
            on_ready(self)
        return self.ready_s

    # -- stopping --------------------------------------------------------------------------------

    def stop(self, grace: float = 2.0) -> int | None:
        """Stop every process of the workload (TERM, then KILL after ``grace``); returns the exit code
        if the command had already exited by itself, else ``None``."""
        if self.proc is None:
            return None
        proc = self.proc
        exited = proc.poll()
        session = proc.pid
        pids = processes_in(self.rootfs, session)
        if pids:
            _signal_all(pids, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                proc.poll()
                pids = processes_in(self.rootfs, session)
                if not pids:
                    break
                time.sleep(0.02)
            for _ in range(50):
                pids = processes_in(self.rootfs, session)
                if not pids:
                    break
                _signal_all(pids, signal.SIGKILL)
                proc.poll()
                time.sleep(0.02)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        if self.recorder is not None:
            self.recorder.emit(
                "workload", self._ev_t0, ok=self.ready_s is not None, mode="run", cmd=list(self.cmd),
                exit_code=exited, cmd_s=self.ready_s,
            )
        return exited


def run_in_rootfs(
    rootfs: str | os.PathLike[str],
    cmd: Sequence[str],
    readiness: Readiness | str = "exit",
    timeout: float = 60.0,
    *,
    raise_on_timeout: bool = False,
    on_ready: Callable[[RunningWorkload], None] | None = None,
    **kwargs: object,
) -> RunResult:
    """Run ``cmd`` chrooted in ``rootfs`` until ``readiness`` (or ``timeout``), then stop it and unmount.

    Other keyword arguments go to :class:`RunningWorkload` (``env``, ``user``, ``cwd``, ``wrapper``,
    ``mounts``, ``recorder``, ``output``). A timeout gives ``ready=False, timed_out=True`` (or raises
    :class:`ReadinessTimeout` with ``raise_on_timeout``); a command that fails before readiness raises
    :class:`WorkloadError` with its last line of output.
    """
    w = RunningWorkload(rootfs, cmd, readiness, **kwargs)  # type: ignore[arg-type]
    timed_out = False
    exit_code: int | None = None
    with w:
        try:
            w.wait_ready(timeout, on_ready)
        except ReadinessTimeout:
            if raise_on_timeout:
                raise
            timed_out = True
        assert w.proc is not None
        exit_code = w.proc.poll()  # None: still running at readiness, stopped below
    return RunResult(
        cmd=w.cmd,
        readiness=str(w.readiness),
        ready=w.ready_s is not None,
        cmd_s=w.ready_s,
        total_s=w.elapsed(),
        exit_code=exit_code,
        timed_out=timed_out,
        output_tail=list(w.tail),
    )
