"""A pre-warmed process that forks FUSE layer servers, so mounting a layer does not pay Python's start-up.

Starting ``python -m soci_lab.lazy.mount`` costs a fresh interpreter plus importing trio, pyfuse3, httpx and
soci_lab (≈0.5 s of CPU per layer, several seconds for five layers on two busy cores). The zygote pays that
once: it is started on first use (``python -m soci_lab.lazy.zygote``), imports everything, and then, for
each request on its Unix socket, ``fork()``s a child that runs the layer server. It has no threads and no
event loop when it forks, so the child starts clean.

Protocol: the parent sends one pickled ``(spec_path, log_path)`` message with the readiness pipe's write
end attached (``SCM_RIGHTS``); the zygote answers the child's pid. The zygote reaps its children itself,
so the parent follows a server with a pidfd (:class:`ServerProcess`, a ``Popen``-like handle: ``pid``,
``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``). When the parent process exits, the zygote
sees its socket close and exits too; servers it forked keep running until they are unmounted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[bytes], socket.socket] | None = None


class ServerProcess:
    """A ``subprocess.Popen``-like handle on a server forked by the zygote (not our child: a pidfd)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            if ready:
                self._exited()
        else:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._exited()
        return self.returncode

    def _exited(self) -> None:
        self.returncode = 0
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"layer server {self.pid}", timeout or 0)
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], min(left, 1.0) if left is not None else 1.0)
            else:
                time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _start() -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "soci_lab.lazy.zygote", str(child.fileno())],
        pass_fds=(child.fileno(),),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    child.close()
    parent.settimeout(60)
    if parent.recv(16) != b"up":
        raise OSError("zygote did not start")
    atexit.register(_stop)
    return proc, parent


def _stop() -> None:
    global _zygote
    with _lock:
        z, _zygote = _zygote, None
    if z is not None:
        proc, sock = z
        sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def warm() -> None:
    """Start the zygote now (e.g. when a Filesystem is created) so the first mount is fast too."""
    global _zygote
    with _lock:
        if _zygote is None or _zygote[0].poll() is not None:
            _zygote = _start()


def spawn_server(spec_path: str, log_path: str, ready_fd: int) -> ServerProcess:
    """Fork a layer server from the zygote; ``ready_fd`` is the write end of the readiness pipe."""
    warm()
    with _lock:
        assert _zygote is not None
        sock = _zygote[1]
        socket.send_fds(sock, [pickle.dumps((spec_path, log_path))], [ready_fd])
        pid = int(sock.recv(64).decode())
    return ServerProcess(pid)


def _serve(fd: int) -> None:
    """Zygote main loop: import everything, then fork one layer server per request."""
    import pyfuse3  # noqa: F401 - the point is to import before forking
    import trio  # noqa: F401

    from . import background, fusefs, prefetch, reader  # noqa: F401
    from . import mount as mount_mod

    with contextlib.suppress(ImportError):
        from ..remote import client  # noqa: F401
    with contextlib.suppress(ImportError):  # servers write their events with pandas on the way out
        import pandas  # noqa: F401
    from .. import ztoc  # noqa: F401

    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    sock = socket.socket(fileno=fd)
    sock.send(b"up")
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        except InterruptedError:
            continue
        if not msg:
            break
        spec_path, log_path = pickle.loads(msg)
        ready_fd = fds[0]
        pid = os.fork()
        if pid == 0:  # the layer server
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock.close()
                os.setsid()
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                with open(spec_path, "rb") as f:
                    spec, mountpoint, options = pickle.load(f)
                mount_mod._child(spec, mountpoint, options, mount_mod._Conn(ready_fd))
                code = 0
            finally:
                os._exit(code)
        os.close(ready_fd)
        sock.send(str(pid).encode())
    _reap()


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> Any:
    _serve(int(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
