"""Apply a layer tar stream to an empty directory, safely and fast, with overlay whiteout conversion.

This is containerd's ``archive.Apply`` + ``OverlayConvertWhiteout`` re-done for Python. Headers are parsed
by :func:`.tarheader.read_header`, which gives exactly what :mod:`tarfile`'s ``TarInfo.fromtarfile`` gives
over a small shim (and is that for every header it is not sure about), only faster; everything else is ours.

Safety — nothing is ever created, changed or removed outside the destination
--------------------------------------------------------------------------------
* Every parent directory is reached from a directory file descriptor, one component at a time, with
  ``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=parent)``; every entry is created with a ``*at`` call
  (``dir_fd=``) relative to its parent's descriptor, with ``O_EXCL | O_NOFOLLOW``. Nothing opens a path
  string that the kernel could resolve through a symlink.
* Names are cleaned lexically first. A leading ``/`` is dropped (an absolute name is taken relative to the
  destination, as GNU tar and containerd do). ``..`` that stays inside is cleaned away (``a/../b`` is
  ``b``, as containerd's ``filepath.Clean``). **A name or hardlink target that climbs above the destination
  (``../x``, ``a/../../x``) is refused** with :class:`~soci_lab.errors.UnsafeArchiveEntry` — stricter than
  containerd, which clamps it at the root: such an entry only appears in a malicious layer.
* A parent component that is a symlink (created earlier in the same layer) is followed *scoped to the
  destination*, like containerd's ``fs.RootPath`` / ``securejoin``: an absolute target or ``..`` can never
  climb above the root, so ``evil -> /etc`` followed by ``evil/passwd`` writes ``<dest>/etc/passwd``.
  More than 40 symlinks on one path is refused.
* An entry whose name already exists (duplicates, a symlink then a file of the same name, ...) replaces it:
  the old one is unlinked (a directory is removed with ``shutil.rmtree(dir_fd=...)``, which never follows
  symlinks) and the new one created with ``O_EXCL``. An existing file is never opened for writing, so a
  symlink or a hardlink can never redirect data. Directory over directory keeps the directory (metadata
  updated), as tar does.
* Hardlink targets are resolved like names (inside the destination only) and linked with
  ``linkat(..., 0)``, which does not follow a symlink target. A hardlink to a missing entry or to a
  directory is refused.
* Device nodes follow :class:`DevicePolicy` (allow / skip / refuse). Sizes above ``max_entry_size`` and
  header material above 16 MiB are refused before anything is read into memory. Sparse and unknown entry
  types are refused (containerd refuses unknown types too). Names with NUL bytes are refused.
* ``trusted.overlay.*`` / ``user.overlay.*`` extended attributes carried by the archive are dropped: only
  the whiteout conversion sets overlay attributes (an archive must not be able to set
  ``overlay.redirect`` or ``overlay.metacopy`` on the upper dir).

Speed — few syscalls per entry, no Python per byte
--------------------------------------------------
Most entries of a layer are plain: a ustar header of a regular file or directory whose name needs no
cleaning and whose parent is already open. :meth:`TarApplier._plain_entry` creates those from the header's
seven values (:func:`.tarheader.plain_fields`) without building a ``TarInfo``: 6.8 instead of 8.4 µs of
Python per entry on a 24,425-entry layer; everything else, and every header split across two chunks,
takes the general path. ``tests/unpack/test_tarapply_plain.py`` holds the two paths to the same trees.

Parent directories' descriptors are cached by path, so a regular file costs ``openat``, ``write``
(memoryview slices of the decompressed chunk, see :mod:`.chunkstream`), ``futimens`` and ``close``, plus
``fchown`` only when the owner is not us and ``fchmod`` only when the mode cannot be given at creation
(special bits, or bits the umask would clear). Directory metadata (owner, mode, xattrs, times) is applied
once at the end, so creating children does not disturb the recorded mtimes.

``ApplyOptions.file_workers`` (default 0) adds threads that create *new* small regular files (≤ 1 MiB)
while the main thread parses the next headers; ext4 spends ~100+ µs of kernel time per small file, so on
a file-heavy layer this is where a second core helps. Order is kept where it matters: an entry whose name
was already used in this apply (duplicates, replacements, whiteouts over a file), every hardlink, every
removal, every parent walk that misses the descriptor cache and the final directory pass first wait for
the workers (a *barrier*). A name not used before cannot exist (the destination starts empty), so a
worker's ``O_EXCL`` create never meets an old entry. The security suite runs with and without workers.

Whiteouts (overlay conversion): ``.wh.<name>`` becomes a 0:0 character device ``<name>``;
``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` and/or ``user.overlay.opaque=y`` on its directory per
:class:`OverlayOpaqueType`; other ``.wh..wh.*`` (aufs bookkeeping) are skipped.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ArchiveError, ConfigError, UnsafeArchiveEntry
from ..pathrules import (
    MAX_SYMLINKS,
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    clean_name,
    is_dropped_xattr,
    whiteout_target,
)
from .chunkstream import ChunkStream
from .tarheader import plain_fields, read_header

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

_MAX_SYMLINKS = MAX_SYMLINKS  # the path rules live in soci_lab.pathrules (shared with the lazy tree)


def _max_cached_dirs() -> int:
    """Directory descriptors kept open: 2048, or a quarter of the process's file limit if that is lower."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    return 2048 if soft == resource.RLIM_INFINITY else max(16, min(2048, soft // 4))


_MAX_CACHED_DIRS = _max_cached_dirs()
#: regular files up to this size may be written by the file workers (bigger ones stream in the main thread).
_DISPATCH_MAX = 1 << 20
#: most files / bytes handed to the workers and not yet written (bounds the chunks kept alive).
_INFLIGHT_FILES = 256
_INFLIGHT_BYTES = 64 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_IGNORABLE_XATTR_ERRNOS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


class OverlayOpaqueType(enum.IntEnum):
    """Which xattr marks an opaque directory (upstream ``OverlayOpaqueType``)."""

    ALL = 0
    TRUSTED = 1
    USER = 2

    @property
    def xattrs(self) -> tuple[str, ...]:
        if self is OverlayOpaqueType.ALL:
            return ("trusted.overlay.opaque", "user.overlay.opaque")
        if self is OverlayOpaqueType.TRUSTED:
            return ("trusted.overlay.opaque",)
        return ("user.overlay.opaque",)

    @classmethod
    def parse(cls, text: str) -> OverlayOpaqueType:
        """``"all"``, ``"trusted"`` or ``"user"`` (the config's ``overlay_opaque_type``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ConfigError(f"overlay opaque type must be all, trusted or user, not {text!r}") from None


class DevicePolicy(enum.Enum):
    """What to do with character and block device entries."""

    ALLOW = "allow"
    SKIP = "skip"
    REFUSE = "refuse"


@dataclass
class ApplyOptions:
    """How to apply a layer."""

    convert_whiteouts: bool = True
    opaque: OverlayOpaqueType = OverlayOpaqueType.TRUSTED
    devices: DevicePolicy = DevicePolicy.ALLOW
    #: chown entries to the archive's numeric uid/gid; None = only when running as root.
    preserve_owners: bool | None = None
    #: entries larger than this are refused (1 TiB).
    max_entry_size: int = 1 << 40
    #: archives with more entries than this are refused.
    max_entries: int = 10_000_000
    #: threads creating small regular files beside the main thread (0: the main thread does it all).
    file_workers: int = 0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> ApplyOptions:
        """Options from a :class:`soci_lab.config.Config` (its ``overlay_opaque_type``), plus overrides."""
        return cls(opaque=OverlayOpaqueType.parse(getattr(config, "overlay_opaque_type", "trusted")), **overrides)


@dataclass
class ApplyStats:
    """What one apply did."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    opaques: int = 0
    replaced: int = 0
    skipped: int = 0
    file_bytes: int = 0
    tar_bytes: int = 0
    xattrs_skipped: int = 0


def xattr_error(entry: str, name: str, value: bytes, exc: OSError) -> ArchiveError:
    """The one line for an xattr the kernel refused (a malformed ``security.capability`` gives EINVAL):
    names the entry, the xattr and why, never the descriptor number ``os.setxattr`` reports."""
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.EINVAL and name == "security.capability":
        why += " (not a valid file capability)"
    return ArchiveError(f"tar entry {entry!r}: cannot set xattr {name} ({len(value)} bytes): {why}")


@dataclass(slots=True)
class _DirMeta:
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    xattrs: dict[str, bytes] = field(default_factory=dict)


class _Shim:
    """The attributes and the file object :meth:`tarfile.TarInfo.fromtarfile` (and ``read_header``) use."""

    def __init__(self, stream: ChunkStream) -> None:
        self.fileobj = stream
        self.offset = 0
        self.encoding = "utf-8"
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}


def _ns(t: float | int) -> int:
    return int(t) * 1_000_000_000 if isinstance(t, int) else round(t * 1e9)


def _pax_time_ns(text: str) -> int:
    """A pax time record (``"1600000000.123456789"``) in nanoseconds, exactly (a float would round)."""
    text = text.strip()
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    return -ns if neg else ns


def _time_ns(info: tarfile.TarInfo, key: str) -> int | None:
    pax = info.pax_headers
    if pax and key in pax:
        try:
            return _pax_time_ns(pax[key])
        except ValueError:
            return None
    return None


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@dataclass(slots=True)
class _NewFile:
    """A small regular file for a worker to create: the name is new, its parent's fd stays open."""

    pfd: int
    base: str
    perm: int
    chmod: int | None
    data: list[memoryview]
    owner: tuple[int, int] | None
    xattrs: dict[str, bytes]
    atime_ns: int
    mtime_ns: int
    entry: str = ""

    def run(self) -> int:
        """Create and fill the file; returns how many xattrs were skipped (not supported here)."""
        skipped = 0
        fd = os.open(self.base, _FILE_FLAGS, self.perm, dir_fd=self.pfd)
        try:
            for view in self.data:
                while view:
                    view = view[os.write(fd, view) :]
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            if self.chmod is not None:
                os.fchmod(fd, self.chmod)
            for name, value in self.xattrs.items():
                try:
                    os.setxattr(fd, name, value)
                except OSError as exc:
                    if exc.errno not in _IGNORABLE_XATTR_ERRNOS:
                        raise xattr_error(self.entry or self.base, name, value, exc) from None
                    skipped += 1
            os.utime(fd, ns=(self.atime_ns, self.mtime_ns))
        finally:
            os.close(fd)
        return skipped


class TarApplier:
    """Applies one tar stream to ``dest`` (a directory that exists; emptiness is checked by the caller)."""

    def __init__(self, dest: str | os.PathLike[str], options: ApplyOptions | None = None) -> None:
        self.options = options or ApplyOptions()
        self.stats = ApplyStats()
        self._root = os.open(dest, _DIR_FLAGS)
        self._cache: dict[str, int] = {"": self._root}
        self._dirs: dict[str, _DirMeta] = {}
        self._owners = os.geteuid() == 0 if self.options.preserve_owners is None else self.options.preserve_owners
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._umask = _umask()
        workers = self.options.file_workers
        self._pool: ThreadPoolExecutor | None = None
        if workers > 0:
            from concurrent.futures import ThreadPoolExecutor  # only with file workers (~4 ms of imports)

            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="soci-unpack-files")
        #: real paths created (or handed to a worker) by this apply: only with workers, to find conflicts
        self._seen: set[str] = set()
        self._inflight: list[tuple[Future[int], int]] = []
        self._inflight_bytes = 0
        self._fresh = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # before closing the fds they use
            self._pool = None
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()

    def __enter__(self) -> TarApplier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop -------------------------------------------------------------------------------------

    def apply(self, stream: ChunkStream) -> ApplyStats:
        """Apply every entry up to the end-of-archive marker; then finish directory metadata."""
        shim = _Shim(stream)
        opts = self.options
        plain = self._pool is None  # the file workers' bookkeeping (_claim_name) stays on the full path
        while True:
            if len(self._cache) > _MAX_CACHED_DIRS:
                self._barrier()
                self._trim_cache()
            if plain and not shim.pax_headers:
                head = stream.peek(512)
                if head is not None and self._plain_entry(head, stream, shim):
                    continue
            try:
                info = read_header(shim)  # tarfile.TarInfo.fromtarfile(shim), faster (see .tarheader)
            except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):  # type: ignore[attr-defined]
                break
            except tarfile.TruncatedHeaderError:  # type: ignore[attr-defined]
                raise ArchiveError(f"archive truncated inside a tar header at offset {stream.tell()}") from None
            except tarfile.HeaderError as exc:
                raise ArchiveError(f"invalid tar header at offset {stream.tell()}: {exc}") from None
            self.stats.entries += 1
            if self.stats.entries > opts.max_entries:
                raise UnsafeArchiveEntry(f"archive has more than {opts.max_entries} entries")
            try:
                self._entry(info, stream)
            except UnicodeEncodeError:
                raise UnsafeArchiveEntry(f"tar entry {info.name!r} has an unencodable name") from None
            except ValueError as exc:  # embedded NUL in a pax value reaching os.*
                raise UnsafeArchiveEntry(f"tar entry {info.name!r}: {exc}") from None
            rest = shim.offset - stream.tell()
            if rest < 0:
                raise ArchiveError(f"tar entry {info.name!r} overruns its data")
            stream.skip(rest)
        self._barrier()
        self._finish_dirs()
        self.stats.tar_bytes = stream.tell()
        return self.stats

    def _plain_entry(self, head: bytes, stream: ChunkStream, shim: _Shim) -> bool:
        """Apply the entry whose header block is ``head`` if it is a plain one: a regular file or directory
        with a ustar header (no pax, no GNU extensions), a name that needs no cleaning (no ``.``/``..``/empty
        component, no leading ``/``, no dot-file or whiteout) and a parent directory already open. Returns
        False, having consumed nothing, for anything else: :meth:`_entry` then does it the general way.

        Why: on an image of system files nearly every entry is plain, and skipping the ``TarInfo`` and the
        general checks takes a fifth off the Python time per entry (the pull is CPU-bound; see
        ``benchmarks/README.md``, eager). Every check that could refuse a plain entry is still made here."""
        fields = plain_fields(head)
        if fields is None:
            return False
        is_dir, name, mode, uid, gid, size, mtime = fields
        if name.startswith("./"):
            name = name[2:]
        if not name or name[0] in "/." or "//" in name or "/." in name or name[-1] == "/":
            return False  # normpath would change it, or a dot-file / whiteout: the general path
        parent, _, base = name.rpartition("/")
        pfd = self._cache.get(parent)
        opts = self.options
        if pfd is None or size > opts.max_entry_size:
            return False
        self.stats.entries += 1
        if self.stats.entries > opts.max_entries:
            raise UnsafeArchiveEntry(f"archive has more than {opts.max_entries} entries")
        start = stream.tell()
        stream.skip(512)
        mtime_ns = mtime * 1_000_000_000
        if is_dir:
            self._dir(_DirMeta(mode & 0o7777, uid, gid, mtime_ns, mtime_ns), pfd, base, name)
            end = start + 512
        else:
            self._write_file(stream, pfd, base, name, size, mode & 0o7777, uid, gid, {}, mtime_ns, mtime_ns)
            end = start + 512 + ((size + 511) & ~511)
        shim.offset = end
        stream.skip(end - stream.tell())
        return True

    def _entry(self, info: tarfile.TarInfo, stream: ChunkStream) -> None:
        opts = self.options
        rel = clean_name(info.name)
        if info.issparse():
            raise UnsafeArchiveEntry(f"tar entry {info.name!r} is a sparse file, which is not supported")
        if info.size < 0 or info.size > opts.max_entry_size:
            raise UnsafeArchiveEntry(
                f"tar entry {info.name!r} claims {info.size} bytes (more than the limit {opts.max_entry_size})"
            )
        if rel == "":
            if info.isdir():
                self._dirs[""] = self._dir_meta(info)
            return
        parent, _, base = rel.rpartition("/")
        if opts.convert_whiteouts and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(info, parent, base)
            return
        pfd, preal = self._parent(parent, create=True)
        real = f"{preal}/{base}" if preal else base
        self._claim_name(real)
        t = info.type
        if info.isreg():
            self._file(info, stream, pfd, base, real)
        elif t == tarfile.DIRTYPE:
            self._dir(self._dir_meta(info), pfd, base, real)
        elif t == tarfile.SYMTYPE:
            self._symlink(info, pfd, base, real)
        elif t == tarfile.LNKTYPE:
            self._hardlink(info, pfd, base, real)
        elif t in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            self._device(info, pfd, base, real)
        elif t == tarfile.FIFOTYPE:
            self._make(real, pfd, base, lambda: os.mkfifo(base, 0o600, dir_fd=pfd))
            self._node_meta(info, pfd, base)
            self.stats.fifos += 1
        else:
            raise UnsafeArchiveEntry(f"tar entry {info.name!r} has unsupported type {t!r}")

    # --- entry kinds ----------------------------------------------------------------------------------

    def _file(self, info: tarfile.TarInfo, stream: ChunkStream, pfd: int, base: str, real: str) -> None:
        mode = info.mode & 0o7777
        simple = not (mode & 0o7000) and (mode & ~self._umask) == mode
        perm = mode if simple else 0o600
        if self._pool is not None and self._fresh and info.size <= _DISPATCH_MAX:
            # a new name (``_claim_name`` waited for any earlier entry of that name): hand it to a worker
            owner = (info.uid, info.gid) if self._owners and (info.uid, info.gid) != (self._uid, self._gid) else None
            job = _NewFile(
                pfd,
                base,
                perm,
                None if simple else mode,
                stream.take(info.size),
                owner,
                self._xattrs(info),
                self._atime_ns(info),
                self._mtime_ns(info),
                info.name,
            )
            self._submit(job, info.size)
            self.stats.files += 1
            self.stats.file_bytes += info.size
            return
        self._write_file(
            stream, pfd, base, real, info.size, mode, info.uid, info.gid, self._xattrs(info),
            self._atime_ns(info), self._mtime_ns(info),
        )  # fmt: skip

    def _write_file(
        self, stream: ChunkStream, pfd: int, base: str, real: str, size: int, mode: int, uid: int, gid: int,
        xattrs: dict[str, bytes], atime_ns: int, mtime_ns: int,
    ) -> None:  # fmt: skip
        """Create regular file ``base`` in ``pfd`` from the next ``size`` bytes of ``stream`` (``mode`` & 0o7777)."""
        simple = not (mode & 0o7000) and (mode & ~self._umask) == mode
        try:
            fd = os.open(base, _FILE_FLAGS, mode if simple else 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base, real)
            fd = os.open(base, _FILE_FLAGS, mode if simple else 0o600, dir_fd=pfd)
        try:
            if size:
                stream.copy_to(fd, size)
            if self._owners and (uid != self._uid or gid != self._gid):
                os.fchown(fd, uid, gid)
            if not simple:  # after fchown, which clears set-id bits
                os.fchmod(fd, mode)
            for name, value in xattrs.items():
                self._setxattr(fd, name, value, entry=real)
            os.utime(fd, ns=(atime_ns, mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.file_bytes += size

    def _dir(self, meta: _DirMeta, pfd: int, base: str, real: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(pfd, base, real)
                os.mkdir(base, 0o700, dir_fd=pfd)
        self._dirs[real] = meta
        self.stats.dirs += 1
        if self._pool is not None and real not in self._cache:
            self._cache[real] = os.open(base, _DIR_FLAGS, dir_fd=pfd)  # its children need no walk (no barrier)

    def _symlink(self, info: tarfile.TarInfo, pfd: int, base: str, real: str) -> None:
        if "\x00" in info.linkname:
            raise UnsafeArchiveEntry(f"tar symlink {info.name!r} has a NUL byte in its target")
        self._make(real, pfd, base, lambda: os.symlink(info.linkname, base, dir_fd=pfd))
        self._node_meta(info, pfd, base, symlink=True)
        self.stats.symlinks += 1

    def _hardlink(self, info: tarfile.TarInfo, pfd: int, base: str, real: str) -> None:
        self._barrier()  # the target may still be with a worker
        target = clean_name(info.linkname, "hardlink target")
        if not target:
            raise UnsafeArchiveEntry(f"tar hardlink {info.name!r} points at the destination root")
        tparent, _, tbase = target.rpartition("/")
        try:
            tpfd, tpreal = self._parent(tparent, create=False)
        except FileNotFoundError:
            raise UnsafeArchiveEntry(f"tar hardlink {info.name!r} → {info.linkname!r}: target does not exist") from None
        treal = f"{tpreal}/{tbase}" if tpreal else tbase
        if treal == real:
            return  # a link to itself: nothing to do
        try:
            tst = os.stat(tbase, dir_fd=tpfd, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeArchiveEntry(f"tar hardlink {info.name!r} → {info.linkname!r}: target does not exist") from None
        if stat.S_ISDIR(tst.st_mode):
            raise UnsafeArchiveEntry(f"tar hardlink {info.name!r} → {info.linkname!r}: target is a directory")
        if treal.startswith(real + "/"):  # the directory the link replaces holds its target: removed first
            raise UnsafeArchiveEntry(f"tar hardlink {info.name!r} → {info.linkname!r}: target is inside the "
                                     "directory the link replaces")

        def link() -> None:
            os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)

        self._make(real, pfd, base, link)
        self.stats.hardlinks += 1

    def _device(self, info: tarfile.TarInfo, pfd: int, base: str, real: str) -> None:
        policy = self.options.devices
        if policy is DevicePolicy.REFUSE:
            raise UnsafeArchiveEntry(f"tar entry {info.name!r} is a device node, which is not permitted here")
        if policy is DevicePolicy.SKIP:
            self.stats.skipped += 1
            return
        kind = stat.S_IFCHR if info.type == tarfile.CHRTYPE else stat.S_IFBLK
        dev = os.makedev(info.devmajor, info.devminor)
        self._make(real, pfd, base, lambda: os.mknod(base, kind | 0o600, dev, dir_fd=pfd))
        self._node_meta(info, pfd, base)
        self.stats.devices += 1

    def _whiteout(self, info: tarfile.TarInfo, parent: str, base: str) -> None:
        pfd, preal = self._parent(parent, create=True)
        if base == WHITEOUT_OPAQUE:
            for name in self.options.opaque.xattrs:
                os.setxattr(pfd, name, b"y")
            self.stats.opaques += 1
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            self.stats.skipped += 1
            return
        name = whiteout_target(base, info.name)
        real = f"{preal}/{name}" if preal else name
        self._claim_name(real)
        self._make(real, pfd, name, lambda: os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd))
        if self._owners and (info.uid != self._uid or info.gid != self._gid):
            os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        # the whiteout entry's times, so an unpack is reproducible (containerd leaves "now")
        os.utime(name, ns=(self._atime_ns(info), self._mtime_ns(info)), dir_fd=pfd, follow_symlinks=False)
        self.stats.whiteouts += 1

    # --- helpers --------------------------------------------------------------------------------------

    def _claim_name(self, real: str) -> None:
        """With workers: wait for them if ``real`` was already used in this apply (a duplicate or a
        replacement must happen after the earlier entry), then mark it used."""
        self._fresh = False
        if self._pool is None:
            return
        if real in self._seen:
            self._barrier()
        else:
            self._fresh = True  # nothing of that name exists: the destination started empty
        self._seen.add(real)

    def _submit(self, job: _NewFile, size: int) -> None:
        assert self._pool is not None
        if len(self._inflight) >= _INFLIGHT_FILES or self._inflight_bytes >= _INFLIGHT_BYTES:
            half = len(self._inflight) // 2 or 1
            for fut, n in self._inflight[:half]:
                self.stats.xattrs_skipped += fut.result()
                self._inflight_bytes -= n
            del self._inflight[:half]
        self._inflight.append((self._pool.submit(job.run), size))
        self._inflight_bytes += size

    def _barrier(self) -> None:
        """Wait until the workers have created every file handed to them (raises their first error)."""
        if not self._inflight:
            return
        inflight, self._inflight, self._inflight_bytes = self._inflight, [], 0
        error: BaseException | None = None
        for fut, _ in inflight:
            try:
                self.stats.xattrs_skipped += fut.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def _make(self, real: str, pfd: int, base: str, create: Any) -> None:
        """Run ``create``; if the name exists, remove what is there and run it again."""
        try:
            create()
        except FileExistsError:
            self._remove(pfd, base, real)
            create()

    def _remove(self, pfd: int, base: str, real: str) -> None:
        """Remove an existing entry (never following symlinks) and forget cached state under it."""
        self._barrier()
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self._forget(real)
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)
        self.stats.replaced += 1

    def _forget(self, real: str) -> None:
        prefix = real + "/"
        for key in [k for k in self._cache if k == real or k.startswith(prefix)]:
            os.close(self._cache.pop(key))
        for key in [k for k in self._dirs if k == real or k.startswith(prefix)]:
            del self._dirs[key]

    def _trim_cache(self) -> None:
        for key in [k for k in self._cache if k]:
            os.close(self._cache.pop(key))

    def _parent(self, rel: str, *, create: bool) -> tuple[int, str]:
        """The descriptor and real (symlink-free) path of directory ``rel``, resolved inside the root."""
        fd = self._cache.get(rel)
        if fd is not None:
            return fd, rel
        self._barrier()  # a component may be a file a worker has not created yet
        todo = rel.split("/") if rel else []
        todo.reverse()  # a stack: pop() takes the next component
        stack: list[str] = []
        cur = self._root
        links = 0
        while todo:
            comp = todo.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if stack:
                    stack.pop()
                cur = self._dir_fd("/".join(stack))
                continue
            key = "/".join([*stack, comp])
            fd = self._cache.get(key)
            if fd is None:
                try:
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(comp, 0o755, dir_fd=cur)
                    if self._pool is not None:
                        self._seen.add(key)
                    fd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafeArchiveEntry(f"path {rel!r}: {key!r} is not a directory") from None
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise UnsafeArchiveEntry(f"path {rel!r}: too many levels of symbolic links") from None
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        stack = []
                        cur = self._root
                    todo.extend(reversed(target.split("/")))
                    continue
                self._cache[key] = fd
            stack.append(comp)
            cur = fd
        return cur, "/".join(stack)

    def _dir_fd(self, real: str) -> int:
        """Descriptor of a real (symlink-free) directory path, opened strictly if not cached."""
        fd = self._cache.get(real)
        if fd is not None:
            return fd
        cur = self._root
        parts = real.split("/")
        for i, comp in enumerate(parts):
            key = "/".join(parts[: i + 1])
            fd = self._cache.get(key)
            if fd is None:
                fd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                self._cache[key] = fd
            cur = fd
        return cur

    def _dir_meta(self, info: tarfile.TarInfo) -> _DirMeta:
        return _DirMeta(
            info.mode & 0o7777, info.uid, info.gid, self._atime_ns(info), self._mtime_ns(info), self._xattrs(info)
        )

    def _finish_dirs(self) -> None:
        """Owner, mode, xattrs and times of every directory entry, after all their children exist."""
        for real, meta in self._dirs.items():
            # entries removed or replaced later were dropped from _dirs by _forget, so this must succeed
            parent, _, base = real.rpartition("/")
            fd = os.open(base, _DIR_FLAGS, dir_fd=self._dir_fd(parent)) if real else None
            dfd = self._root if fd is None else fd
            try:
                if self._owners and (meta.uid != self._uid or meta.gid != self._gid):
                    os.fchown(dfd, meta.uid, meta.gid)
                os.fchmod(dfd, meta.mode)
                for name, value in meta.xattrs.items():
                    self._setxattr(dfd, name, value, entry=real or ".")
                os.utime(dfd, ns=(meta.atime_ns, meta.mtime_ns))
            finally:
                if fd is not None:
                    os.close(fd)

    def _node_meta(self, info: tarfile.TarInfo, pfd: int, base: str, *, symlink: bool = False) -> None:
        """Owner, mode, xattrs and times of a symlink, device or fifo just created as ``base``."""
        if self._owners and (info.uid != self._uid or info.gid != self._gid):
            os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        if not symlink:
            os.chmod(base, info.mode & 0o7777, dir_fd=pfd)  # just created by us: not a symlink
        xattrs = self._xattrs(info)
        if xattrs:
            proc = f"/proc/self/fd/{pfd}/{base}"
            for name, value in xattrs.items():
                self._setxattr(proc, name, value, follow_symlinks=False, entry=info.name)
        os.utime(base, ns=(self._atime_ns(info), self._mtime_ns(info)), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, info: tarfile.TarInfo) -> dict[str, bytes]:
        if not info.pax_headers:
            return {}
        out: dict[str, bytes] = {}
        for key, value in info.pax_headers.items():
            if key.startswith(_XATTR_PAX_PREFIX):
                name = key[len(_XATTR_PAX_PREFIX) :]
                if is_dropped_xattr(name):
                    self.stats.xattrs_skipped += 1
                    continue
                out[name] = value.encode("utf-8", "surrogateescape")
        return out

    def _setxattr(self, target: int | str, name: str, value: bytes, *, follow_symlinks: bool = True,
                  entry: str = "") -> None:
        try:
            os.setxattr(target, name, value, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if exc.errno not in _IGNORABLE_XATTR_ERRNOS:
                raise xattr_error(entry, name, value, exc) from None
            self.stats.xattrs_skipped += 1

    @staticmethod
    def _mtime_ns(info: tarfile.TarInfo) -> int:
        ns = _time_ns(info, "mtime")
        return _ns(info.mtime) if ns is None else ns

    @staticmethod
    def _atime_ns(info: tarfile.TarInfo) -> int:
        ns = _time_ns(info, "atime")
        return TarApplier._mtime_ns(info) if ns is None else ns


def apply_tar(stream: ChunkStream, dest: str | os.PathLike[str], options: ApplyOptions | None = None) -> ApplyStats:
    """Apply a whole tar stream to ``dest``."""
    with TarApplier(dest, options) as applier:
        return applier.apply(stream)


__all__ = [
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "ApplyOptions",
    "ApplyStats",
    "DevicePolicy",
    "OverlayOpaqueType",
    "TarApplier",
    "apply_tar",
    "clean_name",
]
