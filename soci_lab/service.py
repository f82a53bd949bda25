"""The per-host soci-lab service: one long-lived process with everything imported that forks the lazy layers'
FUSE servers and the serving processes of ``soci-lab mount --background``.

Why: a cold ``soci-lab mount --mode lazy`` used to start two fresh interpreters before the first FUSE server
could answer (the background serving process, then the pre-warmed forker of :mod:`soci_lab.lazy.zygote`),
each importing anyio, httpx, trio, pyfuse3, pandas and soci_lab: 1–2 s of a two-core machine per process.
soci-snapshotter is a daemon that containerd talks to on a unix socket; this service is its counterpart. It
is started once, by the first command that needs it (``mount``, or any library use of
:class:`soci_lab.lazy.mount.LayerMount`: the demo, ``compare``, the notebooks), and later commands only
connect to it: a fork of an already-imported process is ready in milliseconds.

Where: a unix socket ``<service dir>/<code key>.sock``. The directory is ``$SOCI_LAB_SERVICE_DIR``, else
``/run/soci-lab`` for root, else ``$XDG_RUNTIME_DIR/soci-lab``, else ``/tmp/soci-lab-<uid>``; it is made mode
0700 and must belong to this user. It is per host, not per state directory (as the snapshotter's socket is
not under its root): a mount's state directory holds only that mount. The *code key* hashes the interpreter,
the package's location and every module's size and mtime, so a service only ever runs the code the client
would run: another checkout, another virtualenv or an edited file gets a service of its own.

Trust: a client uses a socket only when the directory is its own and not writable by others, the path is a
socket owned by this user, the peer's credentials (``SO_PEERCRED``) are this user's, and the peer answers the
hello with this protocol, this code key and its own pid. Anything else raises
:class:`~soci_lab.errors.ServiceRefused` and is left alone; only a socket of ours that nobody listens on any
more (the service died) is removed and replaced. The service answers only peers of its own user.

Protocol: ``SOCK_SEQPACKET``, one JSON object per message, file descriptors attached with ``SCM_RIGHTS``.
``hello``, ``status``, ``stop``; ``layer`` (fork a FUSE layer server: spec pickle, log, readiness pipe) and
``mount`` (fork the serving process of a background mount: argv, readiness pipe). Every fork runs with the
requester's environment, working directory and umask, in a session of its own. The service reaps its
children; a requester follows one with a pidfd (:class:`ServerProcess`).

Lifetime: until ``soci-lab service stop`` or SIGTERM (clean: socket removed, children left serving their
mounts), or until it has had no child and no request for ``$SOCI_LAB_SERVICE_IDLE_S`` seconds (default
900; 0 = never), or its socket was removed or replaced, or its code changed on disk while it is idle.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ServiceError, ServiceRefused

PROTOCOL = "soci-lab-service/1"
#: how long a client waits for a connected service's answer (a peer that never answers is refused)
ANSWER_TIMEOUT_S = 10.0
#: how long a client waits for the answer to a request (a fork is answered in milliseconds)
REQUEST_TIMEOUT_S = 60.0
#: how long a client waits for a service it started to listen
START_TIMEOUT_S = 120.0
DEFAULT_IDLE_S = 900.0
_MAX_MSG = 1 << 20

#: the socket of the service this process was forked from (set in the service before it forks): a forked
#: mount serving process asks that same service for its layer servers, whatever its environment says
_inherited_path: str | None = None
_lock = threading.Lock()
_client: ServiceClient | None = None
_client_owner = 0
_key: str | None = None


# --- where ---------------------------------------------------------------------------------------------------


def service_dir() -> Path:
    """The directory of the service's socket, log and start lock (see the module docstring)."""
    env = os.environ.get("SOCI_LAB_SERVICE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0 and os.path.isdir("/run") and os.access("/run", os.W_OK):
        return Path("/run/soci-lab")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "soci-lab"
    return Path(f"/tmp/soci-lab-{os.geteuid()}")


def code_key() -> str:
    """12 hex digits naming the code a service runs: interpreter, package location, every module's size and
    mtime. Computed once per process (a forked child keeps its parent's: it runs the parent's code)."""
    global _key
    if _key is None:
        pkg = Path(__file__).resolve().parent
        h = hashlib.sha256(f"{PROTOCOL}\0{sys.executable}\0{sys.version}\0{pkg}".encode())
        for root, dirs, files in os.walk(pkg):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    full = os.path.join(root, name)
                    st = os.stat(full)
                    h.update(f"\0{os.path.relpath(full, pkg)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        _key = h.hexdigest()[:12]
    return _key


def socket_path() -> Path:
    """This code's service socket (the inherited one in a process the service forked)."""
    if _inherited_path is not None:
        return Path(_inherited_path)
    return service_dir() / f"{code_key()}.sock"


def idle_seconds() -> float:
    try:
        return float(os.environ.get("SOCI_LAB_SERVICE_IDLE_S", DEFAULT_IDLE_S))
    except ValueError:
        return DEFAULT_IDLE_S


# --- a process the service forked ------------------------------------------------------------------------------


class ServerProcess:
    """A ``subprocess.Popen``-like handle on a process another one forked (not our child: a pidfd).

    ``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``. The exit status of
    a process that is not our child cannot be read: ``returncode`` is 0 once it is gone.
    """

    def __init__(self, pid: int, spawn: str = "") -> None:
        self.pid = pid
        #: how it was started (a ``mount`` event's ``spawn``): ``service-warm`` (forked by a service that was
        #: running), ``service-cold`` (the first fork of a service this process had to start),
        #: ``zygote-warm``/``zygote-cold`` (the private pre-warmed forker, running or started for it)
        self.spawn = spawn
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

    def __del__(self) -> None:
        if getattr(self, "_pidfd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)  # type: ignore[arg-type]

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0)
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


# --- client ----------------------------------------------------------------------------------------------------


def _requester() -> dict[str, Any]:
    """What a fork for this process runs with: its environment, working directory and umask."""
    mask = os.umask(0)
    os.umask(mask)
    return {"env": dict(os.environ), "cwd": os.getcwd(), "umask": mask}


class ServiceClient:
    """A verified connection to the service (thread-safe: one request at a time)."""

    def __init__(self, sock: socket.socket, path: Path, pid: int) -> None:
        self.sock = sock
        self.path = path
        self.pid = pid
        self._lock = threading.Lock()
        #: this process started the service to get this connection (its first fork is a cold start)
        self.started = False
        self._spawned = 0
        self._count_lock = threading.Lock()

    def request(self, msg: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> dict[str, Any]:
        """Send one request (with ``fds`` attached), return the answer; an error answer raises."""
        with self._lock:
            try:
                socket.send_fds(self.sock, [json.dumps(msg).encode()], list(fds))
                data = self.sock.recv(_MAX_MSG)
            except (OSError, TimeoutError) as exc:
                raise ServiceError(f"the soci-lab service at {self.path} did not answer: {exc}") from None
        if not data:
            raise ServiceError(f"the soci-lab service at {self.path} closed the connection")
        try:
            answer = json.loads(data)
        except ValueError:
            raise ServiceError(f"the soci-lab service at {self.path} sent a malformed answer") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise ServiceError(f"the soci-lab service refused {msg.get('op')!r}: {error or 'no reason given'}")
        return answer

    def spawn_layer(self, spec_path: str, log_path: str, ready_fd: int) -> ServerProcess:
        """Fork a FUSE layer server (:func:`soci_lab.lazy.zygote.run_layer_server`); ``ready_fd``: the write end
        of its readiness pipe."""
        with self._count_lock:  # one cold start per service started, whatever the threads asking
            cold = self.started and self._spawned == 0
            self._spawned += 1
        answer = self.request({"op": "layer", "spec": spec_path, "log": log_path, **_requester()}, [ready_fd])
        return ServerProcess(int(answer["pid"]), "service-cold" if cold else "service-warm")

    def spawn_mount(self, argv: list[str], ready_fd: int) -> ServerProcess:
        """Fork the serving process of ``soci-lab mount --background`` (``argv``: the ``mount`` command line
        without ``--background``); it reports ready or its error on ``ready_fd``."""
        answer = self.request({"op": "mount", "argv": list(argv), **_requester()}, [ready_fd])
        return ServerProcess(int(answer["pid"]))

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the service to stop; returns once it is gone (its forked servers keep serving)."""
        proc = ServerProcess(self.pid)
        self.request({"op": "stop"})
        self.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _check_dir(d: Path, *, create: bool) -> None:
    if create:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        raise ServiceError(f"no soci-lab service directory {d}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ServiceRefused(
            f"{d} is not a directory of this user closed to others (owner uid {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}): refusing to use a soci-lab service there"
        )


def _connect_verified(path: Path) -> ServiceClient | None:
    """A verified client, or None when nothing listens at ``path`` (absent, or a dead service's socket of
    ours, which is removed). Raises :class:`ServiceRefused` for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        kind = "socket" if stat.S_ISSOCK(st.st_mode) else stat.filemode(st.st_mode)
        raise ServiceRefused(f"{path} is a {kind} of uid {st.st_uid} that soci-lab did not make: refusing it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(ANSWER_TIMEOUT_S)
    try:
        sock.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(path).st_ino == st.st_ino:
                os.unlink(path)  # ours (checked above), nobody listening: a dead service's
        return None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EPROTOTYPE:
            raise ServiceRefused(f"{path} is not a soci-lab service socket ({exc.strerror}): refusing it") from None
        raise ServiceError(f"cannot connect to the soci-lab service at {path}: {exc}") from None
    try:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.geteuid():
            raise ServiceRefused(f"{path} is served by uid {uid}, not this user: refusing it")
        try:
            sock.send(json.dumps({"op": "hello"}).encode())
            data = sock.recv(_MAX_MSG)
            hello = json.loads(data)
        except (OSError, TimeoutError, ValueError) as exc:
            why = exc or "no answer"
            raise ServiceRefused(f"{path} did not answer as a soci-lab service ({why}): refusing it") from None
        if (
            not isinstance(hello, dict)
            or hello.get("protocol") != PROTOCOL
            or hello.get("key") != code_key()
            or hello.get("pid") != pid
        ):
            raise ServiceRefused(f"{path} did not answer as this soci-lab's service: refusing it")
    except BaseException:
        sock.close()
        raise
    sock.settimeout(REQUEST_TIMEOUT_S)
    return ServiceClient(sock, path, pid)


def connect(*, start: bool = True, timeout: float = START_TIMEOUT_S) -> ServiceClient:
    """A verified connection to this code's service, starting it when absent (``start``)."""
    path = socket_path()
    if _inherited_path is None:
        _check_dir(path.parent, create=start)
    client = _connect_verified(path)
    if client is not None:
        return client
    if not start:
        raise ServiceError(f"no soci-lab service is running at {path}")
    import fcntl

    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others then find it running
        client = _connect_verified(path)
        if client is None:
            _start(path, timeout)
            client = _connect_verified(path)
            if client is not None:
                client.started = True
        if client is None:
            raise ServiceError(f"the soci-lab service did not listen at {path}")
        return client
    finally:
        os.close(lock)


def get(*, start: bool = True) -> ServiceClient:
    """This process's shared connection to the service (made, and the service started, on first use; made
    anew after a fork, or when the service it knew is gone)."""
    global _client, _client_owner
    with _lock:
        if _client is not None and (_client_owner != os.getpid() or not _alive(_client.pid)):
            _client.close()  # a forked child closes only its copy of the descriptor
            _client = None
        if _client is None:
            _client = connect(start=start)
            if not _client_owner:
                import atexit

                atexit.register(forget)  # closed at exit, not left to the collector (ResourceWarning)
            _client_owner = os.getpid()
        return _client


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget() -> None:
    """Drop this process's shared connection (the next :func:`get` connects again)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def enabled() -> bool:
    """Whether layer servers and background mounts go through the service (``SOCI_LAB_SERVICE=0``: never)."""
    return os.environ.get("SOCI_LAB_SERVICE", "1").strip().lower() not in ("0", "no", "false", "off")


def _start(path: Path, timeout: float) -> None:
    """Start the service (detached: it is not our child) and wait until it listens."""
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    # no threads in a process that forks: OpenBLAS's pool, and pyarrow's jemalloc background thread
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, *filter(None, [os.environ.get("PYTHONPATH")])])
    rfd, wfd = os.pipe()
    try:
        with open(path.with_suffix(".log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "soci_lab.servicedaemon", "--serve", str(path), str(wfd)],
                pass_fds=(wfd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,
                env=env,
            )
    finally:
        os.close(wfd)
    try:
        proc.wait(timeout)  # the launcher forks the service and leaves at once
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(rfd, 256)
            if not chunk:
                break
            data += chunk
    except subprocess.TimeoutExpired:
        proc.kill()
        data = b""
    finally:
        os.close(rfd)
    if not data.startswith(b"up"):
        tail = ""
        with contextlib.suppress(OSError):
            lines = path.with_suffix(".log").read_text(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        raise ServiceError(f"the soci-lab service did not start ({tail or 'no report'})")
