"""Layer apply in worker processes, so layers unpacked at once do not share one GIL.

Why: applying a layer is a loop of short Python steps (a tar header parsed) and syscalls (a file created,
written, timed, closed). In one process the apply threads of two layers, their inflaters and the download
loop share one GIL, and a thread coming back from a syscall waits for the GIL while another thread runs
Python (up to the 5 ms switch interval each time): the convoy effect. Two layers applied at once on two
threads of one process took more than twice as long as in two processes (figures: ``benchmarks/README.md``).

:class:`ApplyWorkers` keeps a few worker processes (``python -c`` … :func:`worker_main`). A request is
``apply_layer(ingest, dest, **kwargs)`` pickled over the worker's stdin; the answer (the
:class:`~.archive.LayerApplyResult` or the exception, and the events the apply recorded) comes back over its
stdout. The worker runs the very same :func:`~.archive.apply_layer`, so every check (safe names, digests
while streaming, limits) holds unchanged; only trusted data (our own requests) is unpickled.

Lifetime and cancellation: a worker gets ``PR_SET_PDEATHSIG = SIGKILL``, so it dies with the process that
started it (a pull killed with SIGKILL leaves no worker writing into a job directory); workers are started
from the event loop's thread, which outlives every request. Cancelling :meth:`ApplyWorkers.apply` kills the
worker and waits for it to exit before the cancellation propagates: nothing writes into the destination
once the caller has moved on. :meth:`ApplyWorkers.close` ends idle workers (stdin closed) and kills busy ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ApplyStopped, ArchiveError
from ..events import EventRecorder, NullRecorder
from .archive import LayerApplyResult, apply_layer

_LEN = struct.Struct("<Q")
_WORKER_CODE = "import sys; from soci_lab.unpack.applyproc import worker_main; worker_main(int(sys.argv[1]))"
_PR_SET_PDEATHSIG = 1


def _send(f: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)))
    f.write(data)
    f.flush()


def _recv(f: BinaryIO) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("apply worker closed its pipe")
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError("apply worker closed its pipe mid-message")
    return pickle.loads(data)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ArchiveError(f"{type(exc).__name__}: {exc}")


#: glibc ``mallopt`` parameters (malloc.h); not in Python's standard library, hence ctypes
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_chunk_memory() -> bool:
    """Let this process reuse the memory of freed decompressed chunks instead of faulting in fresh pages.

    Why: the inflater hands over chunks of up to 8 MiB (``decompress.MAX_CHUNK``), allocated in the producer
    thread and freed in the apply thread. glibc serves such sizes with ``mmap`` (its dynamic threshold) or
    trims them back to the kernel when freed, so each new chunk's pages are faulted in and zeroed again:
    37,000 page faults and 0.43 s of system time for the eager image's largest layer (255 MB gzip). With
    allocations below 32 MiB taken from the heap and up to 256 MiB of free heap kept: 11,700 faults and
    0.34 s. Only apply workers do this (a notebook's own process keeps glibc's defaults). False where
    ``mallopt`` is missing (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


def worker_main(parent: int) -> None:
    """The worker's loop: one request at a time from stdin until it closes; ``parent`` is the starter's pid."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    keep_chunk_memory()
    if os.getppid() != parent:  # the parent died before prctl: go now
        return
    rfile, wfile = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the answer pipe
    while True:
        try:
            ingest, dest, kwargs, rec = _recv(rfile)
        except EOFError:
            return
        recorder = EventRecorder(rec[0], strategy=rec[1], origin=rec[2]) if rec else None
        try:
            result = apply_layer(ingest, dest, recorder=recorder, **kwargs)
            answer: tuple[str, Any, list[Any]] = ("ok", result, recorder.events if recorder else [])
        except BaseException as exc:
            answer = ("error", _picklable(exc), recorder.events if recorder else [])
        _send(wfile, answer)


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )

    def roundtrip(self, request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _send(self.proc.stdin, request)  # type: ignore[arg-type]
            return _recv(self.proc.stdout)  # type: ignore[arg-type]
        except (EOFError, BrokenPipeError, OSError) as exc:
            code = self.proc.poll()
            raise ApplyStopped(f"apply worker {self.proc.pid} ended (exit status {code}): {exc}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()


class ApplyWorkers:
    """Worker processes applying layers (see the module docstring). ``size`` are started by :meth:`start`;
    more are started when more requests run at once. Use from async code; close with :meth:`close`."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the workers now (each takes ~0.25 CPU-s to import), e.g. while the first layers download."""
        while len(self._idle) + len(self._busy) < self.size:
            self._idle.append(_Worker())

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ApplyStopped("apply workers closed")
            worker = self._idle.pop() if self._idle else None
            if worker is not None and worker.proc.poll() is not None:
                worker = None
        if worker is None:
            worker = _Worker()  # on the caller's (event loop) thread: outlives the request
        with self._lock:
            self._busy.add(worker)
        return worker

    async def apply(
        self,
        ingest: str | os.PathLike[str],
        dest: str | os.PathLike[str],
        *,
        recorder: EventRecorder | None = None,
        **kwargs: Any,
    ) -> LayerApplyResult:
        """:func:`~.archive.apply_layer` in a worker process; its events are recorded in ``recorder``."""
        import anyio  # here, not at the top: a worker process imports this module and never needs anyio

        rec = None
        if recorder is not None and not isinstance(recorder, NullRecorder) and recorder.source == "real":
            rec = (recorder.run_id, recorder.strategy, time.monotonic() - recorder.now())  # its origin
        request = (str(Path(ingest)), str(Path(dest)), kwargs, rec)
        worker = self._take()
        try:
            status, value, events = await anyio.to_thread.run_sync(worker.roundtrip, request, abandon_on_cancel=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(worker.kill)  # dead before anyone moves on
            with self._lock:
                self._busy.discard(worker)
            raise
        with self._lock:
            self._busy.discard(worker)
            if self._closed:
                worker.close()
            else:
                self._idle.append(worker)
        if recorder is not None:
            for e in events:
                attrs = dict(e.attrs or {})
                recorder.emit(
                    e.kind,
                    e.t_start,
                    e.t_end,
                    layer=e.layer,
                    span=e.span,
                    path=e.path,
                    nbytes=e.bytes,
                    ok=e.ok,
                    error=e.error,
                    strategy=e.strategy,
                    **attrs,
                )
        if status == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        """End every worker: idle ones by closing their stdin, busy ones (a cancelled pull) by SIGKILL."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for w in busy:
            w.kill()
        for w in idle:
            w.close()


__all__ = ["ApplyWorkers", "keep_chunk_memory", "worker_main"]
