"""The per-host soci-lab service's own process (:mod:`soci_lab.service` is its client side): everything
imported once, then a loop that forks lazy layer servers and ``mount --background``'s serving processes on
request. It sits above every room (it imports the CLI's mount code to run it in a fork); the client sits below
them, so that :mod:`soci_lab.lazy` can ask for a layer server without importing what the service runs.
Started by ``python -m soci_lab.servicedaemon --serve SOCKET READY_FD`` (see :func:`soci_lab.service._start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from . import service
from .service import _MAX_MSG, PROTOCOL, code_key, idle_seconds


def _preimport() -> None:
    """Everything a layer server and a mount serving process use, imported once before any fork (the list
    after the first block: what a fresh process's first mount imported on the way, by ``sys.modules`` at
    ready, minus what the service already had)."""
    import asyncio  # noqa: F401
    import encodings.idna  # noqa: F401
    import importlib.resources.readers  # noqa: F401
    import stringprep  # noqa: F401

    import anyio._backends._asyncio
    import anyio._backends._trio  # noqa: F401
    import httpx  # noqa: F401
    import pyfuse3  # noqa: F401
    import trio  # noqa: F401

    from . import artifacts, config, events, unpack  # noqa: F401
    from .cli import host, parser_for  # noqa: F401
    from .lazy import background, fetcher, fusefs, layer, mount, prefetch, reader, server, span_manager, spec  # noqa: F401
    from .remote import client  # noqa: F401
    from .snapshot import filesystem, teardown  # noqa: F401
    from .ztoc import toc  # noqa: F401

    with contextlib.suppress(ImportError):  # servers write their events with pandas on the way out
        import pandas  # noqa: F401
        import pyarrow.pandas_compat  # noqa: F401
    parser_for(None)  # imports every command group; the full parser, kept, reads every fork's command line
    # the resolver's modules (NSS) load on the first lookup: once here, not in every fork (~2.5 ms each)
    with contextlib.suppress(OSError):
        socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM)


class _Server:
    def __init__(self, path: Path) -> None:
        import selectors

        self.path = path
        self.key = code_key()
        self.children: set[int] = set()
        self.conns: dict[int, socket.socket] = {}
        self.stopping = False
        self.last_active = time.monotonic()
        self.started = time.time()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead service's (the starter checked it under the lock)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(old)
        self.listener.listen(64)
        self.ino = os.lstat(path).st_ino
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)

    # -- loop --

    def run(self) -> None:
        idle = idle_seconds()
        last_check = time.monotonic()
        while not self.stopping:
            for key, _ in self.sel.select(timeout=0.5):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self.listener:
                    self._accept()
                else:
                    self._serve(sock)
            self._reap()
            now = time.monotonic()
            if self.children or self.conns:
                self.last_active = now
            if now - last_check >= 2.0:
                last_check = now
                if not self._still_ours():
                    break
                if not self.children and not self.conns and self._code_changed():
                    break
            if idle > 0 and now - self.last_active > idle:
                break
        self.close()

    def _still_ours(self) -> bool:
        try:
            return os.lstat(self.path).st_ino == self.ino
        except OSError:
            return False

    def _code_changed(self) -> bool:
        mine, service._key = service._key, None  # the cached key is the code as loaded: compute it afresh
        try:
            return code_key() != mine
        finally:
            service._key = mine

    def close(self) -> None:
        self.sel.close()
        for c in self.conns.values():
            c.close()
        self.conns.clear()
        self.listener.close()
        if self._still_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _accept(self) -> None:
        import selectors

        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.geteuid():
            conn.close()  # only this user's processes may ask for forks
            return
        self.conns[conn.fileno()] = conn
        self.sel.register(conn, selectors.EVENT_READ)
        self.last_active = time.monotonic()

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn)
        self.conns.pop(conn.fileno(), None)
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        self.last_active = time.monotonic()
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MSG, 8)
        except OSError:
            self._drop(conn)
            return
        if not data:
            for fd in fds:
                os.close(fd)
            self._drop(conn)
            return
        try:
            answer = self._handle(json.loads(data), fds)
        except Exception as exc:  # a bad request gets one line back; the service goes on
            answer = {"ok": False, "error": f"{type(exc).__name__}: {(str(exc) or '-').splitlines()[0]}"}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            conn.send(json.dumps(answer).encode())
        except OSError:
            self._drop(conn)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "hello":
            return {"ok": True, "protocol": PROTOCOL, "key": self.key, "pid": os.getpid()}
        if op == "status":
            return {
                "ok": True,
                "pid": os.getpid(),
                "key": self.key,
                "socket": str(self.path),
                "started": self.started,
                "children": sorted(self.children),
                "python": sys.executable,
                "package": str(Path(__file__).resolve().parent),
            }
        if op == "stop":
            self.stopping = True
            return {"ok": True}
        if op in ("layer", "mount"):
            if len(fds) != 1:
                raise ValueError(f"{op}: expected one readiness fd, got {len(fds)}")
            env, cwd, mask = msg["env"], msg["cwd"], int(msg["umask"])
            if not isinstance(env, dict) or not isinstance(cwd, str):
                raise ValueError(f"{op}: env must be an object and cwd a string")
            if op == "layer":
                target: Any = (_layer_child, str(msg["spec"]), str(msg["log"]))
            else:
                argv = msg["argv"]
                if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                    raise ValueError("mount: argv must be a list of strings")
                target = (_mount_child, argv)
            pid = os.fork()
            if pid == 0:
                self._become_child(env, cwd, mask, fds[0], target)  # never returns
            self.children.add(pid)
            return {"ok": True, "pid": pid}
        raise ValueError(f"unknown op {op!r}")

    def _become_child(self, env: dict[str, str], cwd: str, mask: int, ready_fd: int, target: Any) -> None:
        code = 1
        try:
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.sel.close()
            self.listener.close()
            for c in self.conns.values():
                c.close()
            os.setsid()
            import tempfile

            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in env.items()})
            tempfile.tempdir = None  # recomputed from the requester's TMPDIR
            os.umask(mask)
            os.chdir(cwd)
            fn, *args = target
            code = int(fn(*args, ready_fd) or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)


def _layer_child(spec_path: str, log_path: str, ready_fd: int) -> int:
    from .lazy.zygote import run_layer_server

    run_layer_server(spec_path, log_path, ready_fd)
    return 0


def _mount_child(argv: list[str], ready_fd: int) -> int:
    from .cli.host import serve_background

    return serve_background(argv, ready_fd)


def serve(path: str | os.PathLike[str], ready_fd: int | None = None) -> None:
    """Run the service on ``path`` until stopped (the body of ``python -m soci_lab.servicedaemon --serve``)."""
    path = Path(path)
    _preimport()
    server = _Server(path)
    service._inherited_path = str(path)

    def stop(*_: Any) -> None:
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import gc

    gc.collect()
    gc.freeze()  # what is imported stays out of every child's collections: fewer copy-on-write pages per fork
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:  # a fork copies only the forking thread: another one's locks would stay held in the child
        print(f"soci-lab service: warning: {threads} threads after the imports (forks may hang)", flush=True)
    if ready_fd is not None:
        os.write(ready_fd, b"up\n")
        os.close(ready_fd)
    print(f"soci-lab service {os.getpid()} listening on {path} (code {server.key})", flush=True)
    server.run()
    print(f"soci-lab service {os.getpid()} stopped", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--serve":
        if os.fork() != 0:  # the launcher leaves: the service is nobody's child but init's
            os._exit(0)
        os.setsid()
        serve(argv[1], int(argv[2]))
        return 0
    print("usage: python -m soci_lab.servicedaemon --serve SOCKET READY_FD (use 'soci-lab service')", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
