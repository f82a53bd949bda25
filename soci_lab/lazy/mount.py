"""Mount one lazy layer with FUSE in a serving process of its own, and unmount it without leftovers.

pyfuse3 serves one mount per process and runs its own trio loop, so each layer is served by a process of
its own (forked from :mod:`.zygote`, else ``python -m soci_lab.lazy.server``; the spec handed over as a pickle
file and readiness reported on a pipe: safe from notebooks, threads and scripts without a ``__main__`` guard).
This module is the parent's side: it only waits for the server's "ready" message, so a notebook cell never
hangs on the FUSE loop. Typical use::

    spec = LazyLayerSpec.from_layer_file("layer.tar.gz", span_size=1 << 20)      # or from a zTOC + URL
    with mount_layer(spec, "/mnt/layer", options=ServeOptions()) as m:
        data = open("/mnt/layer/etc/os-release", "rb").read()
        print(m.state())                      # {"digest", "size", "fetchedSize", "fetchedPercent"}
    m.events()                                # the server's events as a DataFrame, after unmount

What the serving process does is :mod:`.server`'s (the layer itself is built by
:func:`soci_lab.lazy.layer.build_layer`). Unmounting (:meth:`LayerMount.unmount`): SIGTERM, wait, SIGKILL if
needed, then ``fusermount3 -u -z`` / ``umount -l`` if the mount is still listed in ``/proc/self/mounts`` —
so nothing stays mounted even when the serving process was killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MountError
from .spec import LazyLayerSpec, ServeOptions

__all__ = ["LayerMount", "LazyLayerSpec", "ServeOptions", "force_unmount", "is_mounted", "mount_layer"]

#: fork layer servers from a pre-warmed zygote process (:mod:`soci_lab.lazy.zygote`) instead of starting a
#: fresh interpreter per layer; set False to always use ``python -m soci_lab.lazy.server``
USE_ZYGOTE = True


def _unescape(field: str) -> str:
    """/proc/self/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(path: str | Path) -> bool:
    """Whether ``path`` is a mount point listed in ``/proc/self/mounts``."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and _unescape(parts[1]) == target:
                return True
    return False


def force_unmount(path: str | Path) -> None:
    """Unmount ``path`` whatever state its server is in (dead server: "transport endpoint not connected")."""
    for cmd in (["fusermount3", "-u", "-z", str(path)], ["umount", "-l", str(path)]):
        if not is_mounted(path):
            return
        if shutil.which(cmd[0]) is None:
            continue
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)
    if is_mounted(path):
        raise MountError(f"{path} is still mounted after fusermount3 -u -z and umount -l")


class LayerMount:
    """A layer served by a child process at ``mountpoint``."""

    def __init__(
        self,
        spec: LazyLayerSpec,
        mountpoint: str | Path,
        options: ServeOptions | None = None,
        *,
        work_dir: str | Path | None = None,
    ) -> None:
        """``work_dir`` keeps the server's spec pickle and log (default: a temporary directory)."""
        self.spec = spec
        self.mountpoint = str(Path(mountpoint).resolve())
        self.options = options or ServeOptions()
        self._tmp: str | None = str(work_dir) if work_dir is not None else None
        #: a temporary directory made here is removed by :meth:`cleanup`; a caller's ``work_dir`` is kept
        self._owns_tmp = work_dir is None
        self._events: Any = None
        if self._tmp is not None:
            Path(self._tmp).mkdir(parents=True, exist_ok=True)
        if self.options.events_path is None:
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="soci-lab-mount-")
            self.options.events_path = os.path.join(self._tmp, "events.jsonl")
        #: the serving process: a ``subprocess.Popen`` or a zygote-forked ``ServerProcess`` (same methods)
        self.process: Any = None
        self.ready_s: float | None = None
        self.spawn: str | None = None

    def start(self, timeout: float = 60.0) -> LayerMount:
        """Start the serving process and wait until the layer is mounted (or raise :class:`MountError`)."""
        import json
        import pickle
        import select
        import sys

        if is_mounted(self.mountpoint):
            raise MountError(f"{self.mountpoint} is already a mount point")
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="soci-lab-mount-")
        spec_path = os.path.join(self._tmp, "spec.pickle")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec_path)
        # 0600: the spec may hold registry credentials (the serving process reads it, then it is deleted)
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump((self.spec, self.mountpoint, self.options), f)
        rfd, wfd = os.pipe()
        t0 = time.monotonic()
        log_path = os.path.join(self._tmp, "server.log")
        try:
            if USE_ZYGOTE:
                from .zygote import spawn_server

                try:
                    self.process = spawn_server(spec_path, log_path, wfd)
                except OSError:
                    self.process = None
            if self.process is None:
                with open(log_path, "ab") as log:
                    self.process = subprocess.Popen(
                        [sys.executable, "-m", "soci_lab.lazy.server", spec_path, str(wfd)],
                        pass_fds=(wfd,),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
        finally:
            os.close(wfd)
        line = b""
        try:
            deadline = t0 + timeout
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MountError(f"layer {self.spec.digest} was not mounted within {timeout}s")
                ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
                if ready:
                    chunk = os.read(rfd, 4096)
                    if not chunk:
                        break
                    line += chunk
        except BaseException:
            os.close(rfd)
            self._forget_spec(spec_path)
            self.unmount()
            raise
        os.close(rfd)
        self._forget_spec(spec_path)  # read by now (the server reported), or never will be
        try:
            kind, detail = json.loads(line.decode().splitlines()[0]) if line.strip() else ("error", None)
        except (ValueError, IndexError):
            kind, detail = "error", line[:200].decode(errors="replace")
        if kind != "ready":
            self.unmount()
            if detail is None:
                detail = f"serving process exited ({self.server_log()[-300:]})"
            raise MountError(f"mounting layer {self.spec.digest} at {self.mountpoint} failed: {detail}")
        self.ready_s = time.monotonic() - t0
        #: how its serving process was started (``ServerProcess.spawn``; ``exec``: a fresh interpreter)
        self.spawn = getattr(self.process, "spawn", "") or "exec"
        return self

    @staticmethod
    def _forget_spec(path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    def server_log(self) -> str:
        """What the serving process wrote to stdout/stderr."""
        if not self._tmp:
            return ""
        try:
            return Path(self._tmp, "server.log").read_text(errors="replace")
        except OSError:
            return ""

    @property
    def state_path(self) -> Path:
        return Path(self.mountpoint) / ".soci-snapshotter" / f"{self.spec.digest}.json"

    def state(self) -> dict[str, Any]:
        """The layer state file: digest, size, fetchedSize, fetchedPercent, error."""
        import json

        return json.loads(self.state_path.read_text())

    def unmount(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM → SIGKILL) and make sure nothing stays mounted."""
        p = self.process
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        force_unmount(self.mountpoint)

    def events(self) -> Any:
        """The serving process's events (a DataFrame), available after :meth:`unmount`."""
        from ..events import read_events

        if self._events is not None:
            return self._events
        path = self.options.events_path
        if path and os.path.exists(path):
            return read_events(path)
        from ..events import events_to_frame

        return events_to_frame([])

    def cleanup(self) -> None:
        """Remove the temporary directory this mount made (its events are kept in memory first)."""
        if self._tmp and self._owns_tmp:
            self._events = self.events()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


@contextlib.contextmanager
def mount_layer(
    spec: LazyLayerSpec, mountpoint: str | Path, options: ServeOptions | None = None, *, timeout: float = 60.0
) -> Iterator[LayerMount]:
    """Mount a lazy layer for the duration of a ``with`` block; always unmounted afterwards."""
    m = LayerMount(spec, mountpoint, options)
    try:
        m.start(timeout)
        yield m
    finally:
        m.unmount()
        m.cleanup()
