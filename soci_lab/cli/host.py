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
nothing stays mounted or running. ``--json`` prints ``bytes_fetched, requests, spans_fetched, spans_total``.

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
import time
from pathlib import Path
from typing import Any

from ..errors import MountError, SociLabError, WorkloadError
from . import argtypes

CLI_CODE = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"
#: how long ``mount --background`` waits for its serving process to report ready
BACKGROUND_TIMEOUT = 900.0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=argtypes.reference, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    p.add_argument("--mode", choices=("lazy", "parallel", "sequential"), required=True, help="how to get layers")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="where layers, caches and the record live")
    p.add_argument("--config", type=Path, metavar="FILE", help="soci-snapshotter style config.toml")
    p.add_argument("--artifact-store", metavar="URL", help="Hermes-compatible artifact store (enables it)")
    p.add_argument("--index-digest", metavar="DIGEST", help="use this SOCI index (skips discovery)")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="lazy: fail instead of going eager (no index) or local (no lazy pull mode)",
    )
    p.add_argument("--events", metavar="FILE", help="write the run's events (.csv, .jsonl or .parquet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for non-loopback hosts")
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json)")


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser(
        "mount",
        help="mount an image's rootfs (lazy, parallel or sequential)",
        description="Prepare every layer the way --mode says and mount the merged rootfs at MOUNTPOINT with "
        "overlayfs. Returns when the rootfs is ready; serves until SIGINT/SIGTERM unless --background.",
    )
    _common(m)
    m.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    m.add_argument("--background", action="store_true", help="leave a serving process behind and exit 0")
    m.add_argument("--writable", action="store_true", help="add a writable upper layer (in the state dir)")
    m.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    m.set_defaults(handler=cmd_mount)

    u = subparsers.add_parser(
        "umount",
        help="unmount a rootfs mounted by 'soci-lab mount' and stop its serving processes",
        description="Unmount the rootfs and every layer mount under it, stop the serving process (or clean "
        "up after it if it was killed), and remove the state directory.",
    )
    u.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    u.add_argument("--json", action="store_true", help="print bytes_fetched, requests, spans_fetched, spans_total")
    u.add_argument("--events", metavar="FILE", help="write the events recovered from a killed mount")
    u.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the serving process")
    u.set_defaults(handler=cmd_umount)

    r = subparsers.add_parser(
        "run",
        help="mount, run a command chrooted in the rootfs recording its file accesses, unmount",
        usage="soci-lab run REF --mode M [options] -- CMD [ARG…]",
        description="Mount REF as 'mount' does (with a writable upper layer), run CMD chrooted in the rootfs "
        "under strace, unmount. Put CMD after '--'. Options: " + _run_parser().format_usage().split(" ", 2)[-1],
        add_help=True,
    )
    r.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    r.set_defaults(handler=cmd_run)


def _run_parser() -> argparse.ArgumentParser:
    """The options of ``run`` (parsed from what comes before ``--``; argparse cannot mix them with a
    command that has options of its own)."""
    p = argparse.ArgumentParser(prog="soci-lab run", add_help=False)
    _common(p)
    p.add_argument("--trace-out", type=Path, metavar="FILE", help="write the access trace (t_s,op,path,offset,size)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds CMD may run (default 600)")
    p.add_argument("--readiness", default="exit", help="exit (default), line:REGEX or path:/P")
    return p


def _parse_run(rest: list[str]) -> argparse.Namespace:
    if "--" in rest:
        i = rest.index("--")
        before, cmd = rest[:i], rest[i + 1 :]
    else:
        before, cmd = rest, []
    args = _run_parser().parse_args(before)
    if not cmd:
        _run_parser().error("run needs a command after '--'")
    args.cmd = cmd
    return args


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
    )


def _mount_json(mounted: Any, frame: Any) -> dict[str, Any]:
    from ..snapshot.teardown import totals_of

    t = totals_of(frame, 0)
    return {
        "mode": mounted.mode,
        "ready_s": mounted.ready_s,
        "bytes_fetched": t.bytes_fetched,
        "requests": t.requests,
        "layers": mounted.layer_summary(),
        "events": len(frame),
    }


def _state_for(args: argparse.Namespace, mountpoint: Path) -> tuple[Path, bool]:
    from ..snapshot.state import default_state_dir

    if args.state_dir is not None:
        return args.state_dir.resolve(), False
    return default_state_dir(mountpoint), True


# --- mount -----------------------------------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    target = args.mountpoint.resolve()
    if args.background:
        return _mount_background(args, target)
    _check_target(target, fresh=args.serve_fd is None)
    return _mount_and_serve(args, target)


def _check_target(target: Path, *, fresh: bool) -> None:
    """A mountpoint ``mount`` may use: a directory, not mounted, and (``fresh``) no earlier mount's state."""
    from ..snapshot import find_state_dir, is_mounted

    if not target.is_dir():
        raise MountError(f"mountpoint {target} is not a directory")
    if is_mounted(target):
        raise MountError(f"{target} is already a mount point")
    if fresh and find_state_dir(target) is not None:
        raise MountError(f"{target} has the state of an earlier mount: run 'soci-lab umount {target}' first")


def _mount_background(args: argparse.Namespace, target: Path) -> int:
    """Start a serving process (forked by the service, else this command re-run in a new session) and wait
    for its ready report."""
    from . import one_line, print_json

    argv = _rebuild_argv(args)
    proc: Any = None
    from .. import service

    if service.enabled():
        rfd, wfd = os.pipe()
        try:
            proc = service.get().spawn_mount(argv, wfd)  # the serving process checks the mountpoint
        except SociLabError as exc:
            os.close(rfd)
            print(f"soci-lab mount: {one_line(exc)}; serving without the soci-lab service", file=sys.stderr)
        finally:
            os.close(wfd)
    if proc is None:
        _check_target(target, fresh=True)
        state, _owns = _state_for(args, target)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        rfd, wfd = os.pipe()
        log = open(state / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", CLI_CODE, *argv, "--serve-fd", str(wfd)],
                pass_fds=(wfd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            os.close(wfd)
            log.close()
    data = b""
    deadline = time.monotonic() + BACKGROUND_TIMEOUT
    try:
        while b"\n" not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([rfd], [], [], 0.5)
            if ready:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                data += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(rfd)
    try:
        msg = json.loads(data.decode().splitlines()[0]) if data.strip() else None
    except (ValueError, IndexError):
        msg = None
    if not msg or not msg.get("ok"):
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        if msg and msg.get("checked") is False:
            raise MountError(msg.get("error") or "the mountpoint was refused")  # nothing of ours to undo
        state, _owns = _state_for(args, target)
        error = msg.get("error") if msg else _tail(state / "server.log") or "the serving process did not report"
        with contextlib.suppress(SociLabError):
            from ..snapshot import unmount_recorded

            unmount_recorded(target)
        if args.state_dir is None:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
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


def serve_background(argv: list[str], ready_fd: int) -> int:
    """The serving process of ``mount --background``, forked by the service: check the mountpoint, make the
    state directory, send output to its ``server.log``, mount and serve (reporting on ``ready_fd``).

    ``argv`` is the ``mount`` command line without ``--background``. A mountpoint refused before anything was
    made is reported with ``"checked": false``, so the waiting command undoes nothing (it is someone else's).
    """
    from . import build_parser, one_line

    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        _report(ready_fd, {"ok": False, "error": f"bad mount command line: {argv}", "checked": False})
        return 2
    args.serve_fd = ready_fd
    target = args.mountpoint.resolve()
    try:
        _check_target(target, fresh=True)
        state, _owns = _state_for(args, target)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = os.open(state / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
        ("--creds", args.creds),
    ):
        if value is not None:
            out += [flag, str(value)]
    for flag, on in (
        ("--no-fallback", args.no_fallback),
        ("--json", args.json),
        ("--insecure", args.insecure),
        ("--writable", args.writable),
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
    from ..snapshot.state import PARENT_EVENTS, TOTALS, UMOUNT_REQUEST, StateDir, remove_pointer, write_pointer
    from ..snapshot.teardown import totals_of, write_totals
    from . import one_line, print_json

    fd = args.serve_fd
    state_path, owns = _state_for(args, target)
    rec = EventRecorder(strategy=args.mode)
    try:
        fs = _filesystem(args, state_path, rec, owns)
        if not owns:
            write_pointer(target, state_path)
        me = os.getpid()
        with _sigterm_interrupts():
            mounted = anyio.run(
                lambda: fs.mount(
                    args.ref, target, args.mode, writable=args.writable, on_layer=lambda m: m.save_record(me)
                )
            )
    except BaseException as exc:
        if not owns:
            remove_pointer(target)
        _report(fd, {"ok": False, "error": one_line(exc) if isinstance(exc, Exception) else type(exc).__name__})
        raise
    state = StateDir(state_path)
    mounted.save_record(os.getpid())
    frame = rec.to_frame()
    rec.write(state.root / PARENT_EVENTS)
    if args.events:
        rec.write(args.events)
    result = _mount_json(mounted, frame)
    if fd is not None:
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
    # serve: the FUSE servers are child processes; this one waits and takes everything down at the end
    wait_for_signal(stop=lambda: not state.record_path.exists())
    requested = (state.root / UMOUNT_REQUEST).exists()
    try:
        merged = mounted.unmount(remove=False)
    finally:
        if requested:
            merged_frame = mounted.events()
            write_totals(state, totals_of(merged_frame, mounted.spans_total))
            state.remove(keep_root=True, keep=(TOTALS, "mount.json", "server.log"))
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


def run_recorded(rootfs: Path, cmd: list[str], rec: Any, *, timeout: float, readiness: str) -> dict[str, Any]:
    """Run ``cmd`` chrooted in ``rootfs`` under strace; its exit code, times and access trace."""
    import tempfile

    from ..errors import ReadinessTimeout
    from ..workload import RunningWorkload, Trace, parse_strace, strace_argv

    root = os.path.realpath(rootfs)
    out: dict[str, Any] = {"exit_code": None, "timed_out": False}
    with tempfile.TemporaryDirectory(prefix="soci-lab-run-") as tmp:
        log_path = Path(tmp) / "strace.log"
        w = RunningWorkload(root, cmd, readiness, recorder=rec, wrapper=strace_argv(str(log_path)))
        with w:
            try:
                w.wait_ready(timeout)
            except ReadinessTimeout:
                out["timed_out"] = True
            except WorkloadError as exc:  # exited non-zero: that is data here, not a failure of run
                out["error"] = str(exc)
            assert w.proc is not None
            out["exit_code"] = w.proc.poll()
            out["cmd_s"] = w.ready_s if w.ready_s is not None else w.elapsed()
            out["tail"] = list(w.tail)[-20:]
        try:
            with open(log_path, encoding="utf-8", errors="surrogateescape") as f:
                conv = parse_strace(f, root)
            out["trace"] = Trace(conv.rows)
        except FileNotFoundError:
            out["trace"] = Trace([])
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from ..events import EventRecorder, write_events
    from ..run import Run
    from ..workload import save_trace
    from . import print_json

    args = _parse_run(list(args.rest))
    cmd = list(args.cmd)
    from ..snapshot.state import state_root

    rec = EventRecorder(strategy=args.mode)
    owns = args.state_dir is None
    state = args.state_dir.resolve() if args.state_dir is not None else state_root() / f"run-{rec.run_id}"
    target = state / "rootfs"
    target.mkdir(parents=True, exist_ok=True)
    fs = _filesystem(args, state, rec, owns)
    try:
        with _sigterm_interrupts():
            mounted = anyio.run(lambda: fs.mount(args.ref, target, args.mode, writable=True))
    except BaseException:
        if owns:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
        raise
    ready_json = _mount_json(mounted, rec.to_frame())
    try:
        outcome = run_recorded(target, cmd, rec, timeout=args.timeout, readiness=args.readiness)
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
    if outcome["timed_out"]:
        raise WorkloadError(f"{' '.join(cmd)} did not finish within {args.timeout:g}s")
    code = outcome["exit_code"]
    if code not in (0, None):
        print(f"soci-lab run: {' '.join(cmd)} exited with {code}", file=sys.stderr)
        return 1
    return 0
