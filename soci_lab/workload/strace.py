"""Turn ``strace -f -ttt -T -y -s 0`` output of a chrooted command into trace rows.

The command runs as ``strace … chroot ROOT CMD``, so strace itself stays on the host and ``-y`` annotates
every descriptor with its *host* path (``3</srv/root/usr/lib/libc.so.6>``): the kernel's own resolution,
symlinks already followed. A host path under ``ROOT`` becomes the path inside the rootfs; anything else
(the ``chroot`` binary's own libraries, pipes, sockets, ``/proc``, ``/dev``, ``/sys``) is dropped. Path
arguments (``stat``, ``readlink``) are inside-the-root paths once the first process has called
``chroot``; relative ones are joined to their directory descriptor's annotation.

What becomes a row (successful calls only — a failed lookup fetches no data):

- ``openat``/``open`` → ``open`` of the returned descriptor's path; ``execve`` → ``open`` of the program;
- ``read`` → ``read`` at the descriptor's position (tracked per process, descriptor and path from
  ``openat`` and ``lseek``; a thread or child using a descriptor it did not open moves the opener's
  position, as they share the open file), ``pread64`` → ``read`` at its explicit offset; sizes are the
  bytes returned;
- ``stat``/``lstat``/``fstat``/``newfstatat``/``statx`` → ``stat``; ``getdents64`` → ``readdir`` (bytes
  of entries returned); ``readlink``/``readlinkat`` → ``readlink`` (target length).

Pages touched through ``mmap`` are invisible to strace; :mod:`.pagemap` adds them (see ``record``).

``-T`` gives each call's time in the kernel (``<0.000123>`` at the end of the line, on the ``resumed``
half of a split call): :attr:`StraceConversion.durations` holds it per row (0 for a log without ``-T``),
so a recorded read has a latency — the same measure in every pull mode, a FUSE read's span fetch included.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from .trace import TraceRow

#: the system calls strace is asked to show
TRACED_SYSCALLS: tuple[str, ...] = (
    "execve", "chroot", "open", "openat", "read", "pread64", "lseek", "stat", "lstat", "fstat",
    "newfstatat", "statx", "getdents64", "readlink", "readlinkat", "mmap",
)
#: inside-the-root prefixes that are kernel file systems, not image content
PSEUDO_PREFIXES: tuple[str, ...] = ("/proc", "/sys", "/dev")

_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<ts>\d+\.\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>.*)$")
_UNFINISHED = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_FD = re.compile(r"^(?P<fd>-?\d+|AT_FDCWD)(?:<(?P<path>.*)>)?$")
_RET = re.compile(r"^(?P<val>-?\d+|0x[0-9a-f]+)(?:<(?P<path>.*)>)?(?:\s.*)?$")
_DURATION = re.compile(r"\s<(?P<s>\d+\.\d+)>$")


def strace_argv(output: str) -> list[str]:
    """The strace command line that writes what :func:`parse_strace` reads to ``output``."""
    return [shutil.which("strace") or "strace", "-f", "-qq", "-ttt", "-T", "-y", "-s", "0", "-e", "signal=none",
            "-e", f"trace={','.join(TRACED_SYSCALLS)}", "-o", output]


def unescape(text: str) -> str:
    """Undo strace's C escapes in a path (``\\n``, ``\\xHH``, ``\\ooo``, ``\\"``, ``\\\\``)."""
    if "\\" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    simple = {ord("n"): 10, ord("t"): 9, ord("r"): 13, ord("v"): 11, ord("f"): 12, ord('"'): 34, ord("\\"): 92}
    while i < len(raw):
        c = raw[i]
        if c != 92 or i + 1 >= len(raw):
            out.append(c)
            i += 1
            continue
        n = raw[i + 1]
        if n == ord("x") and i + 3 < len(raw) + 1:
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        elif 48 <= n <= 55:
            j = i + 1
            while j < len(raw) and j < i + 4 and 48 <= raw[j] <= 55:
                j += 1
            out.append(int(raw[i + 1 : j], 8) & 0xFF)
            i = j
        else:
            out.append(simple.get(n, n))
            i += 2
    return out.decode("utf-8", "surrogateescape")


def split_args(args: str) -> list[str]:
    """Split a strace argument list at top-level commas (quotes, ``{}``, ``[]``, ``()`` and ``<>`` nest)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    cur: list[str] = []
    i = 0
    while i < len(args):
        ch = args[i]
        if quoted:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(args):
                cur.append(args[i + 1])
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch in "{[(<":
            depth += 1
            cur.append(ch)
        elif ch in "}])>":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if cur or parts:
        parts.append("".join(cur).strip())
    return parts


def _string_arg(arg: str) -> str | None:
    if len(arg) >= 2 and arg.startswith('"'):
        end = arg.rfind('"')
        return unescape(arg[1:end])
    return None


@dataclass
class Call:
    """One completed system call from the strace log."""

    pid: int
    ts: float
    name: str
    args: list[str]
    ret: str
    duration: float = 0.0  #: seconds in the kernel (strace -T), 0 when not shown


def iter_calls(lines: Iterable[str]) -> Iterator[Call]:
    """Completed calls, with ``<unfinished …>``/``<… resumed>`` pairs of ``-f`` output joined."""
    pending: dict[int, tuple[float, str, str]] = {}
    for line in lines:
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            continue
        pid, ts, rest = int(m["pid"]), float(m["ts"]), m["rest"]
        u = _UNFINISHED.match(rest)
        if u:
            pending[pid] = (ts, u["name"], u["args"])
            continue
        r = _RESUMED.match(rest)
        if r:
            if pid not in pending:
                continue
            ts0, name, head = pending.pop(pid)
            rest = f"{name}({head}{r['tail']}"
            ts = ts0
        c = _CALL.match(rest)
        if not c:
            continue
        ret = c["ret"].strip()
        d = _DURATION.search(ret)
        if d:
            ret = ret[: d.start()].rstrip()
        yield Call(pid, ts, c["name"], split_args(c["args"]), ret, float(d["s"]) if d else 0.0)


@dataclass
class StraceConversion:
    """The rows of a strace log, and when each inside path was first opened/mapped (for mmap pages)."""

    rows: list[TraceRow] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)  #: per row: the call's time in the kernel (strace -T)
    first_seen: dict[str, float] = field(default_factory=dict)  #: inside path → t_s
    t0: float | None = None  #: epoch seconds of the first call (the workload's start)
    calls: int = 0

    def timed_rows(self) -> list[TraceRow]:
        """The rows with each call's duration in ``dur_s`` (to the microsecond; rows as they are when the log
        had no ``-T`` times), so a trace saved from them keeps its timing."""
        if len(self.durations) != len(self.rows):
            return list(self.rows)
        return [replace(r, dur_s=round(d, 6)) if d > 0 else r for r, d in zip(self.rows, self.durations, strict=True)]


class _Converter:
    def __init__(self, rootfs: str) -> None:
        self.root = posixpath.normpath(rootfs)
        self.first_pid: int | None = None
        self.chrooted = False
        self.pos: dict[tuple[int, int, str], int] = {}  # (pid, fd, host path) → file position
        self.opener: dict[tuple[int, str], int] = {}  # (fd, host path) → pid that opened it last
        self.out = StraceConversion()

    def inside(self, host: str | None) -> str | None:
        """Inside path of an annotated host path, or None when it is outside the rootfs or pseudo."""
        if not host or host.endswith(" (deleted)"):
            return None
        host = unescape(host)
        if host == self.root:
            return "/"
        if not host.startswith(self.root + "/"):
            return None
        return self._keep(host[len(self.root) :])

    @staticmethod
    def _keep(path: str) -> str | None:
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = path[1:]
        for p in PSEUDO_PREFIXES:
            if path == p or path.startswith(p + "/"):
                return None
        return path

    def arg_path(self, call: Call, dirfd: str | None, arg: str) -> str | None:
        """Inside path of a path argument (relative ones joined to the dirfd's annotation)."""
        if not self.in_root(call.pid):
            return None
        name = _string_arg(arg)
        if name is None:
            return None
        if name.startswith("/"):
            return self._keep(name)
        base = "/"
        if dirfd is not None:
            m = _FD.match(dirfd)
            if not m or m["path"] is None:
                return None
            b = self.inside(m["path"])
            if b is None:
                return None
            base = b
        return self._keep(posixpath.join(base, name)) if name else self._keep(base)

    def pos_key(self, pid: int, fd: int, host: str) -> tuple[int, int, str]:
        """Whose file position a call on ``fd`` moves: the caller's own open of it, else (a thread of the
        opener, or a child that inherited the descriptor — both share the open file) the last opener's."""
        if (pid, fd, host) in self.pos:
            return (pid, fd, host)
        owner = self.opener.get((fd, host))
        return (owner, fd, host) if owner is not None else (pid, fd, host)

    def in_root(self, pid: int) -> bool:
        return pid != self.first_pid or self.chrooted

    def fd(self, arg: str) -> tuple[int, str | None] | None:
        m = _FD.match(arg)
        if not m or m["fd"] == "AT_FDCWD":
            return None
        return int(m["fd"]), m["path"]

    def emit(self, call: Call, op: str, path: str, offset: int = 0, size: int = 0) -> None:
        assert self.out.t0 is not None
        t = max(0.0, call.ts - self.out.t0)
        self.out.rows.append(TraceRow(round(t, 6), op, path, offset, size))
        self.out.durations.append(call.duration)
        if op in ("open", "read"):
            self.out.first_seen.setdefault(path, t)

    def feed(self, call: Call) -> None:
        if self.first_pid is None:
            self.first_pid = call.pid
            self.out.t0 = call.ts
        self.out.calls += 1
        ret = _RET.match(call.ret)
        if ret is None or ret["val"].startswith("-"):
            return  # failed (or unknown) calls fetch nothing
        val = int(ret["val"], 0)
        name, a = call.name, call.args
        if name == "chroot":
            if call.pid == self.first_pid:
                self.chrooted = True
        elif name == "execve":
            path = self.arg_path(call, None, a[0]) if a else None
            if path:
                self.emit(call, "open", path)
        elif name in ("openat", "open"):
            p = self.inside(ret["path"])
            if p is not None:
                self.pos[(call.pid, val, ret["path"] or "")] = 0
                self.opener[(val, ret["path"] or "")] = call.pid
                self.emit(call, "open", p)
        elif name in ("read", "pread64"):
            fd = self.fd(a[0]) if a else None
            if fd is None or fd[1] is None:
                return
            p = self.inside(fd[1])
            key = self.pos_key(call.pid, fd[0], fd[1])
            if name == "pread64":
                offset = int(a[3], 0) if len(a) > 3 else 0
            else:
                offset = self.pos.get(key, 0)
                self.pos[key] = offset + val
            if p is not None and val > 0:
                self.emit(call, "read", p, offset, val)
        elif name == "lseek":
            fd = self.fd(a[0]) if a else None
            if fd is not None and fd[1] is not None:
                self.pos[self.pos_key(call.pid, fd[0], fd[1])] = val
        elif name == "mmap":
            fd = self.fd(a[4]) if len(a) > 4 else None
            if fd is not None and fd[1] is not None:
                p = self.inside(fd[1])
                if p is not None:
                    self.out.first_seen.setdefault(p, max(0.0, call.ts - (self.out.t0 or call.ts)))
        elif name in ("fstat",):
            fd = self.fd(a[0]) if a else None
            p = self.inside(fd[1]) if fd else None
            if p is not None:
                self.emit(call, "stat", p)
        elif name in ("stat", "lstat"):
            p = self.arg_path(call, None, a[0]) if a else None
            if p is not None:
                self.emit(call, "stat", p)
        elif name in ("newfstatat", "statx"):
            if len(a) < 2:
                return
            if _string_arg(a[1]) == "":
                fd = self.fd(a[0])
                p = self.inside(fd[1]) if fd else None
            else:
                p = self.arg_path(call, a[0], a[1])
            if p is not None:
                self.emit(call, "stat", p)
        elif name == "getdents64":
            fd = self.fd(a[0]) if a else None
            p = self.inside(fd[1]) if fd else None
            if p is not None and val > 0:
                self.emit(call, "readdir", p, 0, val)
        elif name == "readlink":
            p = self.arg_path(call, None, a[0]) if a else None
            if p is not None:
                self.emit(call, "readlink", p, 0, val)
        elif name == "readlinkat":
            p = self.arg_path(call, a[0], a[1]) if len(a) > 1 else None
            if p is not None:
                self.emit(call, "readlink", p, 0, val)


def parse_strace(lines: Iterable[str], rootfs: str) -> StraceConversion:
    """Convert strace output lines (see :func:`strace_argv`) for a command chrooted in ``rootfs``."""
    conv = _Converter(rootfs)
    for call in iter_calls(lines):
        conv.feed(call)
    return conv.out
