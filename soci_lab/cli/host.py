"""``soci-lab mount``, ``umount`` and ``run``: an image's rootfs on this host (docs/cli.md, "Host side").

``mount REF MOUNTPOINT --mode lazy|parallel|sequential`` returns when the rootfs is ready. Without
``--background`` it then serves until SIGINT/SIGTERM and unmounts; with it, a serving process keeps the
mount and ``mount`` exits 0: a fork of the per-host service (:mod:`soci_lab.service`, started when absent;
everything is imported there already, so the command itself imports little), or, where the service cannot
be used, this command re-run in a new session. Either way the state directory
holds the record ``umount`` needs (``soci_lab.snapshot.state``). ``--json`` prints ``mode, ready_s,
bytes_fetched, requests, layers [{digest, how, bytes_fetched}], events`` (bytes and requests seen by the
time the rootfs is ready; a FUSE server's own fetches are in ``umount``'s totals and the merged events).

``umount MOUNTPOINT`` asks the serving process to unmount (or, when it is gone, does it from the record):
nothing stays mounted or running. It acts only on the mounts the record names (checked against
``/proc/self/mountinfo``, :mod:`soci_lab.snapshot.ownership`); anything else is refused in one line.
``--json`` prints ``bytes_fetched, requests, spans_fetched, spans_total``.

A ``--state-dir`` must be new or empty (``StateDir.create``); every mount is ``nosuid,nodev`` unless
``--allow-setuid-and-devices``; ``--background`` hands ``--creds`` to its serving process on a pipe
(``--creds-fd``), never on a command line.

``run REF --mode M -- CMD …`` mounts (with a writable upper layer, as a container has), runs CMD chrooted
in the rootfs under strace (every open, read, stat, readdir, readlink), unmounts, and with ``--json``
prints the mount keys plus ``cmd_s, total_s, exit_code, files_read, bytes_read``; ``--trace-out`` keeps
the access trace (cli.md's CSV). A CMD that exits non-zero makes ``run`` exit 1 (after its JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import MountError, SociLabError, WorkloadError
from . import argtypes
from .progress import LayerProgress, wanted

CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
#: how long ``mount --background`` waits for its serving process to report ready
BACKGROUND_TIMEOUT = 900.0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=argtypes.reference, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    p.add_argument("--mode", choices=("lazy", "parallel", "sequential"), required=True,
                   help="how to get layers: lazy (SOCI index, FUSE), parallel (concurrent download and unpack) "
                   "or sequential (containerd-like)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="where layers, caches and the record live")
    p.add_argument("--config", type=argtypes.config_file, metavar="FILE", help="soci-snapshotter style config.toml")
    p.add_argument("--artifact-store", type=argtypes.url, metavar="URL",
                   help="Hermes-compatible artifact store (enables it)")
    p.add_argument("--index-digest", type=argtypes.digest_text, metavar="DIGEST",
                   help="use this SOCI index (skips discovery)")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="lazy: fail instead of going eager (no index) or local (no lazy pull mode)",
    )
    p.add_argument("--events", type=argtypes.events_file, metavar="FILE",
                   help="write the run's events (.csv, .jsonl or .parquet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json)")
    p.add_argument(
        "--allow-setuid-and-devices",
        action="store_true",
        help="mount without nosuid,nodev: the image's setuid binaries and device nodes take effect on this host",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser(
        "mount",
        help="mount an image's rootfs (lazy, parallel or sequential)",
        description="Prepare every layer the way --mode says and mount the merged rootfs at MOUNTPOINT with "
        "overlayfs. Returns when the rootfs is ready; serves until SIGINT/SIGTERM unless --background.",
    )
    _common(m)
    m.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT", help="an existing, empty directory")
    m.add_argument("--background", action="store_true", help="leave a serving process behind and exit 0")
    m.add_argument("--writable", action="store_true", help="add a writable upper layer (in the state dir)")
    m.add_argument("--allow-nonempty", action="store_true",
                   help="mount even when MOUNTPOINT has files (they are hidden until umount)")
    m.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    m.add_argument("--creds-fd", type=int, default=None, help=argparse.SUPPRESS)
    m.set_defaults(handler=cmd_mount)

    u = subparsers.add_parser(
        "umount",
        help="unmount a rootfs mounted by 'soci-lab mount' and stop its serving processes",
        description="Unmount the rootfs and every layer mount under it, stop the serving process (or clean "
        "up after it if it was killed), and remove what soci-lab made in the state directory. Only mounts "
        "soci-lab recorded making are touched: a path without a record, or with another mount at or under it, "
        "is refused (exit 1) and left as it is.",
    )
    u.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT", help="where 'soci-lab mount' mounted the rootfs")
    u.add_argument("--json", action="store_true", help="print bytes_fetched, requests, spans_fetched, spans_total")
    u.add_argument("--events", type=argtypes.events_file, metavar="FILE",
                   help="write the events recovered from a killed mount")
    u.add_argument("--timeout", type=argtypes.duration, default=30.0, metavar="D",
                   help="how long to wait for the serving process, e.g. 30s (default 30s)")
    u.set_defaults(handler=cmd_umount)

    r = subparsers.add_parser(
        "run",
        help="mount, run a command chrooted in the rootfs recording its file accesses, unmount",
        usage="soci-lab run REF --mode M [options] -- CMD [ARG…]",
        description="Mount REF as 'mount' does (with a writable upper layer), run CMD chrooted in the rootfs "
        "under strace, unmount. Put CMD after '--'. Like 'docker run': CMD's stdout and stderr stream through "
        "(with --json its stdout goes to stderr, so that stdout holds only the JSON object), and CMD's exit "
        "code is soci-lab's (128+N when a signal N killed it); the summary goes to stderr. soci-lab's own "
        "failures exit 1 (runtime) or 2 (usage) before CMD runs.",
    )
    _common(r)
    r.add_argument("--trace-out", type=Path, metavar="FILE", help="write the access trace (t_s,op,path,offset,size)")
    r.add_argument("--timeout", type=argtypes.duration, default=600.0, metavar="D",
                   help="how long CMD may run, e.g. 90s or 10m (default 10m); then it is stopped and run fails")
    r.add_argument("--readiness", default="exit", metavar="RULE",
                   help="when CMD counts as done: exit (default: it exits), line:REGEX (a line of its output "
                   "matches; then it is stopped) or path:/P (a file appears in the rootfs)")
    r.set_defaults(handler=cmd_run, takes_cmd="required")


# --- helpers ---------------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Any:
    """``--config`` (a soci-snapshotter config.toml, else the defaults), with ``--artifact-store`` enabling the
    external store at that URL — what :func:`soci_lab.lab.pull` does, without importing :mod:`soci_lab.lab`
    (it brings matplotlib: ~1.5 s of every ``mount``)."""
    import dataclasses

    from ..config import Config

    cfg = Config.from_toml(args.config) if args.config is not None else Config()
    if args.artifact_store:
        cfg = dataclasses.replace(cfg)
        cfg.external_artifact_store = dataclasses.replace(
            cfg.external_artifact_store, enable=True, endpoint=args.artifact_store.rstrip("/")
        )
    return cfg


def _filesystem(args: argparse.Namespace, state: Path, rec: Any, owns: bool) -> Any:
    from ..snapshot import Filesystem

    return Filesystem(
        state,
        config=_config(args),
        events=rec,
        explicit_index_digest=args.index_digest,
        fallback=not args.no_fallback,
        insecure=args.insecure,
        creds=args.creds,
        owns_state_dir=owns,
        allow_setuid_and_devices=args.allow_setuid_and_devices,
    )


def _mount_json(mounted: Any, events: Any) -> dict[str, Any]:
    """``mount --json``'s document from the mount's events (a list or a frame; no pandas needed)."""
    from ..snapshot.teardown import totals_of

    t = totals_of(events, 0)
    return {
        "mode": mounted.mode,
        "ready_s": mounted.ready_s,
        "bytes_fetched": t.bytes_fetched,
        "requests": t.requests,
        "layers": mounted.layer_summary(),
        "events": len(events),
    }


def _state_for(args: argparse.Namespace, mountpoint: Path) -> tuple[Path, bool]:
    from ..snapshot.state import default_state_dir

    if args.state_dir is not None:
        return args.state_dir.resolve(), False
    return default_state_dir(mountpoint), True


# --- mount -----------------------------------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    if args.creds_fd is not None:  # the serving process of --background: credentials come on a pipe
        args.creds = _read_secret_fd(args.creds_fd)
    target = args.mountpoint.resolve()
    if args.background:  # the serving process does the work: this command imports no more than it needs
        return _mount_background(args, target)
    from ..snapshot.state import StateDir

    _check_target(args, target, fresh=args.serve_fd is None)
    state, _owns = _state_for(args, target)
    StateDir(state).create()  # made here, or an empty one taken; anything else is refused before any write
    return _mount_and_serve(args, target)


def _check_target(args: argparse.Namespace, target: Path, *, fresh: bool) -> None:
    """A mountpoint ``mount`` may use: a directory, not mounted, and (``fresh``: not yet checked by the
    command that started this serving process) empty unless ``--allow-nonempty``, with no earlier mount's
    state."""
    from ..snapshot import find_state_dir, is_mounted

    if not target.is_dir():
        raise MountError(f"mountpoint {target} is not a directory")
    if is_mounted(target):
        raise MountError(f"{target} is already a mount point")
    if not fresh:
        return
    if not args.allow_nonempty and any(target.iterdir()):
        raise MountError(f"mountpoint {target} is not empty: its files would be hidden while the image is mounted "
                         "(pass --allow-nonempty to mount over them)")
    if find_state_dir(target) is not None:
        raise MountError(f"{target} has the state of an earlier mount: run 'soci-lab umount {target}' first")


def _read_secret_fd(fd: int) -> str | None:
    """Everything the parent wrote on ``fd`` (then closed): the credentials, kept off the command line."""
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    finally:
        os.close(fd)
    return data.decode() or None


def _clean_state(state: Path) -> None:
    """Delete what soci-lab made in ``state`` — unless something is still mounted there."""
    from ..snapshot import mounts_under
    from ..snapshot.state import StateDir

    if not mounts_under(state):
        StateDir(state).remove()


def _spawn_by_service(argv: list[str]) -> tuple[Any, int] | None:
    """The serving process forked by the per-host service and the read end of its report pipe, or None when
    the service cannot be used (then this command re-runs itself)."""
    from .. import service
    from . import one_line

    if not service.enabled():
        return None
    rfd, wfd = os.pipe()
    try:
        return service.get().spawn_mount(argv, wfd), rfd  # the serving process checks the mountpoint
    except SociLabError as exc:
        os.close(rfd)
        print(f"soci-lab mount: {one_line(exc)}; serving without the soci-lab service", file=sys.stderr)
        return None
    finally:
        os.close(wfd)


def _spawn_rerun(args: argparse.Namespace, target: Path, argv: list[str]) -> tuple[Any, int]:
    """This command re-run as the serving process in a new session, and the read end of its report pipe.

    The serving process gets the credentials on a pipe it inherits (``--creds-fd``), never on its command
    line: ``/proc/PID/cmdline`` is readable by every user of the host."""
    from ..snapshot.state import SERVER_LOG, StateDir

    _check_target(args, target, fresh=True)
    state, _owns = _state_for(args, target)
    StateDir(state).create()  # made here, or an empty one taken; anything else is refused before any write
    secret = args.creds.encode() if args.creds is not None else None
    if secret is not None and len(secret) > 60000:  # a pipe holds 64 KiB: written before the child runs
        raise MountError("--creds is too long")
    rfd, wfd = os.pipe()
    pass_fds = [wfd]
    creds_r = None
    if secret is not None:
        creds_r, creds_w = os.pipe()
        os.write(creds_w, secret)
        os.close(creds_w)
        pass_fds.append(creds_r)
        argv = [*argv, "--creds-fd", str(creds_r)]
    log_fd = os.open(state / SERVER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI_CODE, *argv, "--serve-fd", str(wfd)],
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
        )
    finally:
        os.close(wfd)
        os.close(log_fd)
        if creds_r is not None:
            os.close(creds_r)
    return proc, rfd


def _mount_background(args: argparse.Namespace, target: Path) -> int:
    """Start a serving process — forked by the per-host service, or (with ``--creds``, whose private pipe
    the service cannot carry, or without the service) this command re-run in a new session — and wait for
    its ready report."""
    from . import print_json

    argv = _rebuild_argv(args)
    spawned = _spawn_by_service(argv) if args.creds is None else None
    proc, rfd = spawned if spawned is not None else _spawn_rerun(args, target, argv)
    data = b""
    deadline = time.monotonic() + BACKGROUND_TIMEOUT
    msg: dict[str, Any] | None = None
    from ..events import EventRecorder

    layers = EventRecorder(strategy=args.mode)  # the serving process's per-layer reports, for the bar
    try:
        with LayerProgress(layers, f"mount ({args.mode})", "mount", enabled=wanted(args)):
            while msg is None and time.monotonic() < deadline:
                ready, _, _ = select.select([rfd], [], [], 0.5)
                if ready:
                    chunk = os.read(rfd, 65536)
                    if not chunk:
                        break
                    data += chunk
                elif proc.poll() is not None:
                    break
                while b"\n" in data and msg is None:
                    line, _, data = data.partition(b"\n")
                    msg = _serving_message(line, layers)
    finally:
        os.close(rfd)
    if not msg or not msg.get("ok"):
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        if msg and msg.get("checked") is False:
            raise MountError(msg.get("error") or "the mountpoint was refused")  # nothing of ours to undo
        from ..snapshot.state import SERVER_LOG

        state, _owns = _state_for(args, target)
        error = msg.get("error") if msg else _tail(state / SERVER_LOG) or "the serving process did not report"
        with contextlib.suppress(SociLabError):
            from ..snapshot import unmount_recorded

            unmount_recorded(target)
        _clean_state(state)  # only what soci-lab made, and only when nothing is mounted there any more
        raise MountError(error)
    if args.json:
        print_json(msg["result"])
    else:
        print(
            f"mounted {args.ref} at {target} ({args.mode}, ready in {msg['result']['ready_s']:.3f}s; "
            f"serving process {proc.pid})",
            file=sys.stderr,
        )
    return 0


def _serving_message(line: bytes, layers: Any) -> dict[str, Any] | None:
    """The serving process's final report (``ok`` …), or None for a progress line (replayed into ``layers``)."""
    try:
        doc = json.loads(line.decode())
    except ValueError:
        return {"ok": False, "error": "the serving process sent an unreadable report"}
    if isinstance(doc, dict) and "progress" in doc:
        layers.emit("mount", 0.0, layer=str(doc["progress"].get("layer")), nbytes=0)
        return None
    return doc if isinstance(doc, dict) else {"ok": False, "error": "the serving process sent an unreadable report"}


def _report_layers(fd: int, rec: Any) -> Any:
    """Tell ``mount --background``'s waiting parent of each layer mounted, so it can draw its bar. Returns
    the function that stops it (call it before the final report closes ``fd``: the number may be reused)."""
    lock = threading.Lock()
    live = [True]

    def send(event: Any) -> None:
        if event.kind == "mount" and event.layer and event.ok:
            with lock:
                if live[0]:
                    with contextlib.suppress(OSError):
                        os.write(fd, (json.dumps({"progress": {"layer": event.layer}}) + "\n").encode())

    def stop() -> None:
        with lock:
            live[0] = False

    rec.subscribe(send)
    return stop


def serve_background(argv: list[str], ready_fd: int) -> int:
    """The serving process of ``mount --background``, forked by the service: check the mountpoint, make the
    state directory, send output to its ``server.log``, mount and serve (reporting on ``ready_fd``).

    ``argv`` is the ``mount`` command line without ``--background``. A mountpoint refused before anything was
    made is reported with ``"checked": false``, so the waiting command undoes nothing (it is someone else's).
    """
    from ..snapshot.state import SERVER_LOG, StateDir
    from . import one_line, parser_for

    try:
        args = parser_for("mount").parse_args(argv)
    except SystemExit:
        _report(ready_fd, {"ok": False, "error": f"bad mount command line: {argv}", "checked": False})
        return 2
    args.serve_fd = ready_fd
    target = args.mountpoint.resolve()
    try:
        _check_target(args, target, fresh=True)
        state, _owns = _state_for(args, target)
        StateDir(state).create()
        log = os.open(state / SERVER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    except (SociLabError, OSError) as exc:
        _report(ready_fd, {"ok": False, "error": one_line(exc), "checked": False})
        return 1
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        return int(cmd_mount(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (SociLabError, OSError) as exc:
        print(f"soci-lab mount: {one_line(exc)}", file=sys.stderr)
        return 1


def _rebuild_argv(args: argparse.Namespace) -> list[str]:
    """The mount command line (for the serving process) from the parsed arguments."""
    out = ["mount", str(args.ref), str(args.mountpoint), "--mode", args.mode]
    for flag, value in (
        ("--state-dir", args.state_dir),
        ("--config", args.config),
        ("--artifact-store", args.artifact_store),
        ("--index-digest", args.index_digest),
        ("--events", args.events),
    ):
        if value is not None:
            out += [flag, str(value)]
    for flag, on in (
        ("--no-fallback", args.no_fallback),
        ("--json", args.json),
        ("--insecure", args.insecure),
        ("--writable", args.writable),
        ("--allow-setuid-and-devices", args.allow_setuid_and_devices),
        ("--allow-nonempty", args.allow_nonempty),
    ):
        if on:
            out.append(flag)
    return out


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


@contextlib.contextmanager
def _sigterm_interrupts() -> Any:
    """While a mount is being set up, SIGTERM interrupts it like Ctrl-C, so it undoes what it did (FUSE
    servers, overlay, state) instead of dying with them half-made."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_held() -> Any:
    """SIGINT and SIGTERM only noted (the list yielded) while a mount that is ready reports and writes its
    events: one that comes right after the report (a script that read it and stops the mount at once) ends
    the serving loop, instead of killing this process with its mounts left behind."""
    early: list[int] = []
    old = {s: signal.signal(s, lambda n, _f: early.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield early
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(fd: int | None, doc: dict[str, Any]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(doc, default=str) + "\n").encode())
        os.close(fd)


def _mount_and_serve(args: argparse.Namespace, target: Path) -> int:
    import anyio

    from ..events import EventRecorder
    from ..snapshot.filesystem import wait_for_signal
    from ..snapshot.state import (
        PARENT_EVENTS,
        RECORD,
        SERVER_LOG,
        TOTALS,
        UMOUNT_REQUEST,
        StateDir,
        remove_pointer,
        write_pointer,
    )
    from ..snapshot.teardown import totals_of, write_totals
    from . import one_line, print_json

    fd = args.serve_fd
    state_path, owns = _state_for(args, target)
    rec = EventRecorder(strategy=args.mode)
    stop_reporting = _report_layers(fd, rec) if fd is not None else (lambda: None)
    try:
        fs = _filesystem(args, state_path, rec, owns)
        if not owns:
            write_pointer(target, state_path)
        me = os.getpid()
        show = fd is None and wanted(args)
        with _sigterm_interrupts(), LayerProgress(rec, f"mount ({args.mode})", "mount", enabled=show):
            mounted = anyio.run(
                lambda: fs.mount(
                    args.ref, target, args.mode, writable=args.writable, on_layer=lambda m: m.save_record(me)
                )
            )
    except BaseException as exc:
        if not owns:
            remove_pointer(target)
        stop_reporting()
        if fd is None:  # a serving process of --background leaves it to its parent (which reads server.log)
            _clean_state(state_path)
        _report(fd, {"ok": False, "error": one_line(exc) if isinstance(exc, Exception) else type(exc).__name__})
        raise
    with _signals_held() as early:
        state = StateDir(state_path)
        mounted.save_record(os.getpid())
        events = rec.events
        if args.events:
            rec.write(args.events)  # there when the command returns
        result = _mount_json(mounted, events)
        if fd is not None:
            stop_reporting()
            _report(fd, {"ok": True, "result": result})
        elif args.json:
            print_json(result)
        else:
            print(
                f"mounted {args.ref} at {target} ({args.mode}, ready in {mounted.ready_s:.3f}s); "
                "Ctrl-C or SIGTERM unmounts",
                file=sys.stderr,
                flush=True,
            )
        # after the report: only a teardown from the record (this process dead) reads it, and writing it takes
        # pandas (~50 ms, more in a process that has not imported it) that the waiting command need not wait for
        rec.write(state.root / PARENT_EVENTS)
        # serve: the FUSE servers are child processes; this one waits and takes everything down at the end
        if not early:
            wait_for_signal(stop=lambda: not state.record_path.exists())
    requested = (state.root / UMOUNT_REQUEST).exists()
    try:
        merged = mounted.unmount(remove=False)
    finally:
        if requested:
            merged_frame = mounted.events()
            write_totals(state, totals_of(merged_frame, mounted.spans_total))
            state.remove(keep_root=True, keep=(TOTALS, RECORD, SERVER_LOG))
        else:
            mounted.remove()
            remove_pointer(target)
    if args.events:
        from ..events import write_events

        write_events(merged, args.events)
    return 0


# --- umount ----------------------------------------------------------------------------------------------


def cmd_umount(args: argparse.Namespace) -> int:
    from ..snapshot import unmount_recorded
    from . import print_json

    totals, frame = unmount_recorded(args.mountpoint, timeout=args.timeout)
    if args.events and frame is not None:
        from ..events import write_events

        write_events(frame, args.events)
    if args.json:
        print_json(totals.to_json())
    return 0


# --- run -------------------------------------------------------------------------------------------------


def _streaming_workload(rootfs: str, cmd: list[str], readiness: str, rec: Any, wrapper: list[str],
                        stdout: int, stderr: int) -> Any:
    """A :class:`~soci_lab.workload.RunningWorkload` whose command writes to ``stdout``/``stderr`` (file
    descriptors) as ``docker run``'s does. With a ``line:`` readiness rule its output must be read to be
    matched, so there it is merged and copied through to ``stdout`` line by line instead."""
    from ..workload import RunningWorkload

    class Streaming(RunningWorkload):
        def start(self) -> None:
            if self.readiness.kind == "line":
                super().start()
                return
            argv = self.argv()
            self._ev_t0 = self.recorder.now() if self.recorder else 0.0
            self.t_start = time.monotonic()
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                             env=self.env, start_new_session=True)
            except FileNotFoundError as exc:
                raise WorkloadError(f"cannot start {argv[0]}: {exc.strerror}") from None

    out = os.fdopen(os.dup(stdout), "wb", buffering=0)
    return Streaming(rootfs, cmd, readiness, recorder=rec, wrapper=wrapper, output=out)


def run_recorded(rootfs: Path, cmd: list[str], rec: Any, *, timeout: float, readiness: str,
                 stdout: int = 1, stderr: int = 2) -> dict[str, Any]:
    """Run ``cmd`` chrooted in ``rootfs`` under strace, its output going to the file descriptors ``stdout``
    and ``stderr``; its exit code (128+N after signal N), times and access trace."""
    import tempfile

    from ..errors import ReadinessTimeout
    from ..workload import Trace, parse_strace, strace_argv

    root = os.path.realpath(rootfs)
    out: dict[str, Any] = {"exit_code": None, "timed_out": False}
    with tempfile.TemporaryDirectory(prefix="soci-lab-run-") as tmp:
        log_path = Path(tmp) / "strace.log"
        w = _streaming_workload(root, cmd, readiness, rec, strace_argv(str(log_path)), stdout, stderr)
        try:
            with w:
                try:
                    w.wait_ready(timeout)
                except ReadinessTimeout:
                    out["timed_out"] = True
                except WorkloadError as exc:  # exited non-zero: that is data here, not a failure of run
                    out["error"] = str(exc)
                assert w.proc is not None
                code = w.proc.poll()
                out["exit_code"] = 128 - code if code is not None and code < 0 else code
                out["cmd_s"] = w.ready_s if w.ready_s is not None else w.elapsed()
                out["tail"] = list(w.tail)[-20:]
        finally:
            w.output.close()
        try:
            with open(log_path, encoding="utf-8", errors="surrogateescape") as f:
                conv = parse_strace(f, root)
            out["trace"] = Trace(conv.timed_rows())  # each call's duration kept (the dur_s column)
        except FileNotFoundError:
            out["trace"] = Trace([])
    return out


def _summary_line(args: argparse.Namespace, cmd: list[str], result: dict[str, Any]) -> str:
    from ..units import format_size

    return (
        f"soci-lab run: {args.mode} pull of {args.ref} ready in {result['ready_s']:.3f} s "
        f"({format_size(result['bytes_fetched'])} in {result['requests']} requests); "
        f"{' '.join(cmd)} ran {result['cmd_s']:.3f} s, read {result['files_read']} files "
        f"({format_size(result['bytes_read'])}), "
        + (f"exit code {result['exit_code']}" if result["exit_code"] is not None else "stopped once ready")
    )


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from ..events import EventRecorder, write_events
    from ..run import Run
    from ..workload import save_trace
    from . import print_json

    cmd = list(args.cmd)
    from ..snapshot.state import StateDir, state_root

    rec = EventRecorder(strategy=args.mode)
    owns = args.state_dir is None
    state = args.state_dir.resolve() if args.state_dir is not None else state_root() / f"run-{rec.run_id}"
    StateDir(state).create()  # before anything is written in it: a foreign non-empty directory is refused
    target = state / "rootfs"
    try:
        target.mkdir(exist_ok=True)
        fs = _filesystem(args, state, rec, owns)
        with _sigterm_interrupts(), LayerProgress(rec, f"pull ({args.mode})", "mount", enabled=wanted(args)):
            mounted = anyio.run(lambda: fs.mount(args.ref, target, args.mode, writable=True))
    except BaseException:
        _clean_state(state)
        raise
    ready_json = _mount_json(mounted, rec.to_frame())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # like docker run: CMD's output streams through; with --json stdout is the JSON object's alone
        outcome = run_recorded(target, cmd, rec, timeout=args.timeout, readiness=args.readiness,
                               stdout=2 if args.json else 1, stderr=2)
    finally:
        frame = mounted.unmount()
    trace = outcome["trace"]
    if args.trace_out:
        save_trace(trace, args.trace_out)
    if args.events:
        write_events(frame, args.events)
    run = Run.from_events(frame, run_id=rec.run_id, source="real", strategy=args.mode)
    from ..snapshot.teardown import totals_of

    totals = totals_of(frame, mounted.spans_total)
    result = {
        **ready_json,
        "bytes_fetched": totals.bytes_fetched,
        "requests": totals.requests,
        "layers": mounted.layer_summary(),
        "events": len(frame),
        "cmd_s": outcome["cmd_s"],
        "total_s": run.summary.get("total_s"),
        "exit_code": outcome["exit_code"],
        "files_read": len(trace.read_ranges()),
        "bytes_read": trace.bytes_read(),
        "spans_fetched": totals.spans_fetched,
        "spans_total": totals.spans_total,
    }
    if args.json:
        print_json(result)
    else:
        print(_summary_line(args, cmd, result), file=sys.stderr, flush=True)
    if outcome["timed_out"]:
        raise WorkloadError(f"{' '.join(cmd)} did not finish within {args.timeout:g}s")
    code = outcome["exit_code"]
    return int(code) if code is not None else 0
