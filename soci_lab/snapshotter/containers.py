"""Real containers through containerd 1.6 and the soci-lab snapshotter, driven from Python and timed as events.

:class:`ContainerdStack` is a private containerd and ``soci-lab snapshotter serve`` daemon, both child
processes with their own root, state and sockets under one directory (so a system containerd is never
touched), the daemon loaded as containerd's proxy snapshotter ``soci-lab`` (:mod:`.containerd_config`).
:func:`run_container` pulls an image into it one of three ways and runs a container (runc) on it:

* ``lazy`` — ``soci-lab image rpull`` (:func:`~.rpull.rpull`): layers with a zTOC are FUSE mounts of the
  daemon's layer servers, the rest downloaded and unpacked by the daemon;
* ``parallel`` — the same pull, the daemon started with ``[pull_modes.parallel_pull_unpack] enable``: every
  layer through its ParallelPuller;
* ``containerd`` — containerd's own ``ctr images pull`` and its overlayfs snapshotter (the baseline).

It records, in the run's :class:`~soci_lab.events.EventRecorder`, a ``ready`` event (start of the pull → the
image can run) and a ``workload`` event (``ctr run`` → the workload's end: its readiness line, or its exit),
whose ``first_output_s`` detail is the time from the start of the pull to the container's first output
byte (stdout or stderr). :func:`collect_events` puts the daemon's events (its ``--events`` file) and its
layer servers' on the run's clock: the daemon's clock is aligned on the Commits the pull heard answered
(each layer's ``apply op=Commit`` ends as its Prepare returns), a layer server's on its mount (as
:mod:`soci_lab.snapshot.mounted` aligns a FUSE server's), to within a gRPC round trip.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InvalidInput, SociLabError
from ..events import EventRecorder, detail, read_events
from .containerd_config import containerd_config

#: how a container's image gets to containerd (see the module docstring)
MODES: tuple[str, ...] = ("lazy", "parallel", "containerd")
#: the daemon's config.toml in ``parallel`` mode
PARALLEL_CONFIG = "[pull_modes.parallel_pull_unpack]\nenable = true\n"
_CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


class ContainerError(SociLabError):
    """containerd, the snapshotter daemon or a container did not do what was asked (the message says which)."""


def can_run_containers() -> tuple[bool, str]:
    """Whether this machine can run :class:`ContainerdStack` (root, containerd, ctr and runc), and if not, why."""
    if os.geteuid() != 0:
        return False, "not root (containerd and runc need root)"
    missing = [tool for tool in ("containerd", "ctr", "runc") if shutil.which(tool) is None]
    if missing:
        return False, f"{', '.join(missing)} not found (Debian: apt-get install containerd runc)"
    return True, "ok"


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not up in {timeout:.0f} s"
            raise ContainerError(f"{what} {state}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class ContainerdStack:
    """A private containerd 1.6 with a soci-lab snapshotter daemon as its proxy snapshotter ``soci-lab``.

    ``with ContainerdStack(config=…) as stack:`` starts both (``config``: the daemon's config.toml text) and,
    on leaving, stops them, collects each lazy layer server's events (:attr:`layer_events`, by snapshot
    directory) and removes everything it made. ``base`` (default: a new temporary directory) holds it all."""

    base: Path | None = None
    config: str | None = None
    insecure: bool = False
    namespace: str = field(default_factory=lambda: f"soci-lab-{uuid.uuid4().hex[:8]}")
    #: each lazy layer server's events, by its snapshot directory (filled by :meth:`close`)
    layer_events: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: the daemon's events (its file, read by :meth:`close` before the directory goes)
    daemon_events: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self._owns_base = self.base is None
        self.base = Path(self.base) if self.base is not None else Path(tempfile.mkdtemp(prefix="soci-lab-ctd-"))
        self._daemon: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def dir(self) -> Path:
        assert self.base is not None
        return self.base

    @property
    def socket(self) -> Path:
        """containerd's socket."""
        return self.dir / "containerd.sock"

    @property
    def snapshotter_socket(self) -> Path:
        return self.dir / "sn.sock"

    @property
    def root(self) -> Path:
        """The snapshotter's root."""
        return self.dir / "snroot"

    @property
    def events_path(self) -> Path:
        """The daemon's events (``--events``), appended as they happen."""
        return self.dir / "snapshotter-events.jsonl"

    def start(self) -> ContainerdStack:
        """Start the daemon (and wait until it can fork layer servers), then containerd."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-c", _CLI_CODE, "snapshotter", "serve", "--address", str(self.snapshotter_socket),
                "--root", str(self.root), "--events", str(self.events_path)]
        if self.config is not None:
            (self.dir / "snapshotter-config.toml").write_text(self.config)
            args += ["--config", str(self.dir / "snapshotter-config.toml")]
        if self.insecure:
            args.append("--insecure")
        try:
            with (self.dir / "snapshotter.log").open("ab") as log:
                self._daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            _wait_for(self.snapshotter_socket, self._daemon, "soci-lab snapshotter serve", self.dir / "snapshotter.log")
            from .. import service

            if service.enabled():  # a daemon is long-lived: its layer servers' forker is up before any pull
                service.get()
            (self.dir / "config.toml").write_text(containerd_config(self.dir, self.snapshotter_socket))
            with (self.dir / "containerd.log").open("ab") as log:
                self._containerd = subprocess.Popen(["containerd", "--config", str(self.dir / "config.toml")],
                                                    stdout=log, stderr=subprocess.STDOUT)
            _wait_for(self.socket, self._containerd, "containerd", self.dir / "containerd.log")
        except BaseException:
            self.close()
            raise
        return self

    def ctr(self, *args: str) -> list[str]:
        """The ``ctr`` command line for this containerd and namespace."""
        return ["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args]

    def close(self) -> None:
        """Stop containerd and the daemon, stop the layer servers (collecting their events), remove it all."""
        from ..snapshot import umount_tree
        from . import layer_server_pids, remove_root

        if self._containerd is not None and self._containerd.poll() is None:
            ls = subprocess.run(self.ctr("tasks", "ls", "-q"), capture_output=True, text=True)
            for task in ls.stdout.split():
                subprocess.run(self.ctr("tasks", "kill", "-s", "SIGKILL", task), capture_output=True)
        _stop(self._containerd)
        _stop(self._daemon)
        if self.events_path.exists():
            with contextlib.suppress(Exception):
                self.daemon_events = read_events(self.events_path)
        if self.root.exists():
            pids = layer_server_pids(self.root)
            for pid in pids:  # a layer server writes its events when it stops
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            for path in sorted(self.root.glob("snapshots/*/serve/events.jsonl")):
                with contextlib.suppress(Exception):
                    self.layer_events[str(path.parent.parent / "fs")] = read_events(path)
            remove_root(self.root)
        umount_tree(self.dir)
        if self._owns_base:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ContainerdStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain_http(ref: str) -> bool:
    from ..oci import Reference

    host = Reference.parse(ref).registry.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _watch(proc: subprocess.Popen[bytes], ready: re.Pattern[bytes] | None, deadline: float,
           clock: Any) -> tuple[float | None, float | None, bytes]:
    """(time of the first output, time of the workload's end or None on timeout, the output)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    first = end = None
    out = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while end is None and time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                continue
            chunk = os.read(fd, 65536)
            now = clock()
            if not chunk:
                if ready is None:
                    end = now
                break
            if first is None:
                first = now
            out += chunk
            if ready is not None and any(ready.search(line) for line in out.splitlines()):
                end = now
    return first, end, out


def run_container(
    stack: ContainerdStack,
    ref: str,
    mode: str,
    args: list[str] | None = None,
    *,
    readiness: str = "exit",
    timeout: float = 300.0,
    recorder: EventRecorder,
    insecure: bool = False,
) -> dict[str, Any]:
    """Pull ``ref`` into ``stack`` in ``mode`` and run a container of it (``args``, else the image's command)
    until its readiness (``exit`` or ``line:REGEX``; a container still running then is killed). Emits
    ``ready`` and ``workload`` into ``recorder`` (see the module docstring); returns the times (seconds on
    the recorder's clock) with the exit code and the output."""
    from ..workload.readiness import Readiness

    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    rule = Readiness.parse(readiness)
    if rule.kind == "path":
        raise InvalidInput("a container's readiness is exit or line:REGEX (its rootfs is containerd's to see)")
    pattern = re.compile(rule.value.encode()) if rule.kind == "line" else None
    rec = recorder
    t0 = rec.now()
    if mode == "containerd":
        pull = stack.ctr("images", "pull", *(["--plain-http"] if _plain_http(ref) or insecure else []), ref)
        res = subprocess.run(pull, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ContainerError(f"ctr images pull {ref}: {res.stderr.strip().splitlines()[-1:] or res.returncode}")
        snapshotter: list[str] = []
    else:
        from .rpull import rpull

        rpull(stack.socket, ref, namespace=stack.namespace, insecure=insecure, events=rec)
        snapshotter = ["--snapshotter", "soci-lab"]
    rec.emit("ready", t0, path=ref, mode=mode, via="containerd")
    cid = f"soci-lab-{uuid.uuid4().hex[:8]}"
    cmd = stack.ctr("run", "--rm", "--net-host", *snapshotter, ref, cid, *(args or []))
    t_run = rec.now()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    try:
        first, end, out = _watch(proc, pattern, time.monotonic() + timeout, rec.now)
    finally:
        if proc.poll() is None:
            subprocess.run(stack.ctr("tasks", "kill", "-s", "SIGKILL", cid), capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    exit_code = proc.returncode if rule.kind == "exit" else None
    ok = end is not None and (rule.kind != "exit" or exit_code == 0)
    error = None if ok else ("no readiness in time" if end is None else f"exit code {exit_code}")
    if end is None:
        end = rec.now()
    rec.emit("workload", t_run, end, ok=ok, error=error, mode=mode, cmd=list(args or []),
             exit_code=exit_code, first_output_s=first, readiness=str(rule))
    return {"pull_s": t_run - t0, "first_output_s": first, "end_s": end - t0, "exit_code": exit_code,
            "ok": ok, "output": out}


def collect_events(stack: ContainerdStack, recorder: EventRecorder) -> pd.DataFrame:
    """The daemon's events and its layer servers', on ``recorder``'s clock and under its run id (see the
    module docstring); empty when the pull made no Commit to align on (``containerd`` mode)."""
    daemon = stack.daemon_events
    if daemon is None:
        if not stack.events_path.exists():
            return pd.DataFrame()
        daemon = read_events(stack.events_path)
    mine = recorder.to_frame()
    heard = mine[(mine["kind"] == "mount") & (detail(mine, "op") == "rpull")].set_index("layer")["t_end"]
    commits = daemon[(daemon["kind"] == "apply") & (detail(daemon, "op") == "Commit") & daemon["layer"].notna()]
    pairs = [(float(heard[row.layer]), float(row.t_end)) for row in commits.itertuples() if row.layer in heard.index]
    if not pairs:
        return pd.DataFrame()
    offset = min(h - c for h, c in pairs)  # each answer is heard after its Commit: the least gap is the closest
    frames = [daemon.assign(t_start=daemon["t_start"] + offset, t_end=daemon["t_end"] + offset)]
    mounts = daemon[(daemon["kind"] == "mount") & (detail(daemon, "op") == "remote")]
    for path, server in stack.layer_events.items():
        at = mounts[mounts["path"] == path]
        own = server[server["kind"] == "mount"]
        if len(at) and len(own):
            shift = float(at["t_end"].iloc[0]) + offset - float(own["t_end"].iloc[0])
            frames.append(server.assign(t_start=server["t_start"] + shift, t_end=server["t_end"] + shift))
    out = pd.concat(frames, ignore_index=True)
    out["run_id"], out["source"], out["strategy"] = recorder.run_id, "real", recorder.strategy
    return out


__all__ = ["MODES", "PARALLEL_CONFIG", "ContainerError", "ContainerdStack", "can_run_containers",
           "collect_events", "run_container"]
