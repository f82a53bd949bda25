"""Where lazy layer servers come from: forks of an already-imported process, so mounting a layer does not pay
Python's start-up.

Starting ``python -m soci_lab.lazy.server`` costs a fresh interpreter plus importing trio, pyfuse3, httpx and
soci_lab (≈0.5 s of CPU per layer, several seconds for five layers on two busy cores). :func:`spawn_server`
asks the per-host service (:mod:`soci_lab.service`, started on first use and kept) to fork the server; where
the service is switched off (``SOCI_LAB_SERVICE=0``) or cannot be used (its socket refused, its start failed)
it falls back to a *private zygote*: a process of this one's own (``python -m soci_lab.lazy.zygote``) that
imports everything, then ``fork()``s one child per request on a socketpair, and exits when this process does.
Either forker has no threads and no event loop when it forks, so the child starts clean.

The private zygote's protocol: the parent sends one pickled ``(spec_path, log_path)`` message with the
readiness pipe's write end attached (``SCM_RIGHTS``); the zygote answers the child's pid. The forker reaps
its children itself, so the parent follows a server with a pidfd (:class:`ServerProcess`, a ``Popen``-like
handle: ``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``). Servers keep running until
they are unmounted, whoever forked them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

from ..errors import ServiceError
from ..service import ServerProcess

log = logging.getLogger(__name__)

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def _start() -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # no threads in a process that forks: OpenBLAS's pool, and pyarrow's jemalloc background thread
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
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


def _warm_private() -> bool:
    """Start the private forker unless it runs; whether it had to be started."""
    global _zygote
    with _lock:
        if _zygote is None or _zygote[0].poll() is not None:
            _zygote = _start()
            return True
    return False


def warm() -> None:
    """Make sure a forker is up now (e.g. when a Filesystem is created) so the first mount is fast too."""
    if _use_service():
        return
    _warm_private()


_service_failed: list[str] = []


def _use_service() -> bool:
    """The per-host service, unless switched off or already found unusable by this process."""
    from .. import service

    if not service.enabled() or _service_failed:
        return False
    try:
        service.get()
    except ServiceError as exc:
        _service_failed.append(str(exc))
        log.warning("soci-lab service not used (%s): layer servers come from a private zygote", exc)
        return False
    return True


def spawn_server(spec_path: str, log_path: str, ready_fd: int) -> ServerProcess:
    """Fork a layer server (from the service, else a private zygote); ``ready_fd``: the readiness pipe's write
    end."""
    from .. import service

    if _use_service():
        for attempt in range(2):
            try:
                return service.get().spawn_layer(spec_path, log_path, ready_fd)
            except ServiceError as exc:  # the service went away: connect (start it) once more
                service.forget()
                if attempt:
                    _service_failed.append(str(exc))
                    log.warning("soci-lab service failed (%s): layer servers come from a private zygote", exc)
    cold = _warm_private()
    with _lock:
        assert _zygote is not None
        sock = _zygote[1]
        socket.send_fds(sock, [pickle.dumps((spec_path, log_path))], [ready_fd])
        pid = int(sock.recv(64).decode())
    return ServerProcess(pid, "zygote-cold" if cold else "zygote-warm")


def run_layer_server(spec_path: str, log_path: str, ready_fd: int) -> None:
    """Body of a forked layer server: output to ``log_path``, serve the pickled spec until stopped."""
    from .server import run_from_spec_file

    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    run_from_spec_file(spec_path, ready_fd)


def _serve(fd: int) -> None:
    """Zygote main loop: import everything, then fork one layer server per request."""
    import pyfuse3  # noqa: F401 - the point is to import before forking
    import trio  # noqa: F401

    from . import background, fusefs, layer, prefetch, reader, server  # noqa: F401

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
                run_layer_server(spec_path, log_path, ready_fd)
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
