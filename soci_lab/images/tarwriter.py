"""A deterministic tar of one directory: the uncompressed form of one image layer.

The same tree always gives the same bytes, so the same layer digest and diffID:

- **Order.** Depth first, the entries of each directory sorted by their file-system bytes (GNU tar's
  ``--sort=name``); a directory comes before what it holds. The source directory itself is not an entry
  (as BuildKit and ``docker build`` layers have it): names are relative, without a ``./`` prefix, and
  directories end with ``/``.
- **Headers.** POSIX ustar, with a PAX extended header only when an entry needs one: names and link
  targets longer than ustar holds or not ASCII, uid/gid/size/mtime beyond the octal fields, sub-second
  or negative mtimes (PAX ``mtime`` with exact nanoseconds; the ustar field keeps whole seconds),
  extended attributes (``SCHILY.xattr.<name>``, the spelling GNU tar, Go's archive/tar and containerd
  use). ``atime``/``ctime`` are never written, so reading or touching a file changes nothing.
- **Metadata.** Permission bits including setuid/setgid/sticky, numeric uid and gid, mtime. ``uname``
  and ``gname`` are always empty: a layer's bytes must not depend on the builder's ``/etc/passwd``, and
  every unpacker (containerd, umoci, soci) uses the numeric ids.
- **Hard links** are found by ``(st_dev, st_ino)``: the first path in the order above carries the data,
  later ones are ``LNKTYPE`` entries naming it. Any non-directory can be hard-linked.
- **Types.** Regular files, directories, symlinks, FIFOs, character and block devices. A socket cannot
  be represented in a tar: it is skipped, and reported through ``on_skip`` (GNU tar does the same).
- **Whiteouts** are just names: ``.wh.NAME`` and ``.wh..wh..opq`` files pass through as they are. (An
  overlayfs upper directory's whiteouts, 0/0 character devices, are not translated: they stay devices.)
- **xattrs.** Every attribute ``listxattr`` shows (``user.*``, ``trusted.*``, ``security.capability``,
  POSIX ACLs), sorted by name, except ``security.selinux``, which is a label of the build host rather
  than content of the image.
- **End.** Two zero blocks, no padding to a 10 KiB record (as Go's archive/tar writes layers).

Headers are made by the standard ``tarfile`` module (``TarInfo.tobuf``); file data is streamed in large
blocks and never held whole in memory. Everything written is hashed on the way out, giving the diffID.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageBuildError, LayerSourceError, UnreadableFile
from ..oci import Digest

BLOCK = 512
#: how much file data is read and passed on at once
DEFAULT_READ_SIZE = 1 << 20
#: extended attributes never copied into a layer
SKIPPED_XATTRS = frozenset({"security.selinux"})

Sink = Callable[[bytes | bytearray | memoryview], object]


@dataclass
class TarStats:
    """What one tar of a directory held, and its diffID (sha256 of the uncompressed tar)."""

    diff_id: Digest | None = None
    size: int = 0  #: bytes of tar written
    entries: int = 0
    regular_files: int = 0
    hardlinks: int = 0
    content_bytes: int = 0  #: bytes of regular-file data
    skipped: list[str] = field(default_factory=list)  #: relative paths left out (sockets)


class _HashingSink:
    """Passes bytes on to ``out`` while hashing and counting them."""

    def __init__(self, out: Sink) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self.hash.update(data)
        self.size += len(data)
        self.out(data)


def walk_sorted(root: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(relative name, absolute path, lstat)`` of every entry under ``root`` (not ``root`` itself).

    Depth first, each directory's entries sorted by their bytes; a directory's subtree follows its entry
    (GNU ``tar --sort=name`` order: ``a``, ``a/x``, ``b``). Names are ``str`` decoded with the file-system
    encoding, undecodable bytes as surrogate escapes, so they round-trip to the original bytes.
    Iterative, so any depth the file system allows is fine.
    """
    pending: list[Iterator[tuple[str, str, os.stat_result]]] = [iter(_entries("", str(root)))]
    while pending:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        yield item
        rel, path, st = item
        if stat.S_ISDIR(st.st_mode):
            pending.append(iter(_entries(rel + "/", path)))


def _entries(prefix: str, dirpath: str) -> list[tuple[str, str, os.stat_result]]:
    try:
        names = os.listdir(dirpath)
    except OSError as exc:
        raise _read_error(dirpath, exc) from None
    names.sort(key=os.fsencode)
    out = []
    for name in names:
        path = os.path.join(dirpath, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ImageBuildError(f"{path} disappeared while the layer was being built") from None
        except OSError as exc:
            raise _read_error(path, exc) from None
        out.append((prefix + name, path, st))
    return out


def _read_error(path: str, exc: OSError) -> ImageBuildError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableFile(f"cannot read {path}: {reason}")
    return ImageBuildError(f"cannot read {path}: {reason}")


def pax_time(ns: int) -> str:
    """A PAX time value with exact nanoseconds, shortest form (``1700000000.5``, ``-1.25``)."""
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(ns), 1_000_000_000)
    if not frac:
        return f"{sign}{sec}"
    return f"{sign}{sec}.{frac:09d}".rstrip("0")


def read_xattrs(path: str) -> list[tuple[str, bytes]]:
    """The extended attributes of ``path`` (not following a symlink), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise _read_error(path, exc) from None
    out = []
    for name in sorted(names, key=os.fsencode):
        if name in SKIPPED_XATTRS:
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed between list and get
                continue
            raise _read_error(path, exc) from None
    return out


def tar_info(name: str, path: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """The header of one entry (without hard-link handling); ``None`` for a type tar cannot hold."""
    ti = tarfile.TarInfo(name)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        ti.type = tarfile.REGTYPE
        ti.size = st.st_size
    elif stat.S_ISDIR(mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        ti.type = tarfile.SYMTYPE
        try:
            ti.linkname = os.readlink(path)
        except OSError as exc:
            raise _read_error(path, exc) from None
    elif stat.S_ISFIFO(mode):
        ti.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        ti.devmajor = os.major(st.st_rdev)
        ti.devminor = os.minor(st.st_rdev)
    else:  # socket, or anything stranger
        return None
    ti.mode = stat.S_IMODE(mode)
    ti.uid = st.st_uid
    ti.gid = st.st_gid
    ti.uname = ""
    ti.gname = ""
    pax: dict[str, str] = {}
    for key, value in read_xattrs(path):
        # bytes that are not UTF-8 survive as surrogate escapes; tarfile then writes the PAX header
        # with hdrcharset=BINARY and the original bytes
        pax[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
    ns = st.st_mtime_ns
    ti.mtime = ns // 1_000_000_000 if ns >= 0 else 0
    if ns < 0 or ns % 1_000_000_000:
        pax["mtime"] = pax_time(ns)
    ti.pax_headers = pax
    return ti


def write_tree_tar(
    root: str | os.PathLike[str],
    out: Sink,
    *,
    read_size: int = DEFAULT_READ_SIZE,
    on_skip: Callable[[str, str], None] | None = None,
) -> TarStats:
    """Write the deterministic tar of the directory ``root`` to ``out`` and return its stats and diffID.

    ``out`` is called with successive chunks (which it must consume before returning: buffers are
    reused). ``on_skip(relative_name, reason)`` hears of entries left out. Raises ``LayerSourceError``
    when ``root`` is not a directory, ``UnreadableFile`` when an entry cannot be read, and
    ``ImageBuildError`` when a file changes while it is being read.
    """
    root_path = Path(root)
    try:
        root_st = os.stat(root_path)
    except FileNotFoundError:
        raise LayerSourceError(f"layer directory {root_path} does not exist") from None
    except OSError as exc:
        raise _read_error(str(root_path), exc) from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise LayerSourceError(f"layer source {root_path} is not a directory")

    sink = _HashingSink(out)
    stats = TarStats()
    seen: dict[tuple[int, int], str] = {}
    buf = bytearray(max(BLOCK, read_size))
    view = memoryview(buf)

    for name, path, st in walk_sorted(root_path):
        ti = tar_info(name, path, st)
        if ti is None:
            stats.skipped.append(name)
            if on_skip is not None:
                on_skip(name, "a socket cannot be stored in a tar layer")
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = seen.get(key)
            if first is not None:
                ti.type = tarfile.LNKTYPE
                ti.linkname = first
                ti.size = 0
                stats.hardlinks += 1
            else:
                seen[key] = name
        sink(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        stats.entries += 1
        if ti.type == tarfile.REGTYPE:
            stats.regular_files += 1
            stats.content_bytes += ti.size
            _copy_file(path, st, ti.size, sink, buf, view)
            pad = -ti.size % BLOCK
            if pad:
                sink(bytes(pad))
    sink(bytes(2 * BLOCK))
    stats.size = sink.size
    stats.diff_id = Digest(f"sha256:{sink.hash.hexdigest()}")
    return stats


def _copy_file(path: str, st: os.stat_result, size: int, sink: Sink, buf: bytearray, view: memoryview) -> None:
    """Stream exactly ``size`` bytes of ``path`` to ``sink``; the file must still be what lstat saw."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _read_error(path, exc) from None
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or fst.st_size != size:
            raise ImageBuildError(f"{path} changed while the layer was being built")
        left = size
        while left:
            try:
                n = os.readv(fd, [view[: min(left, len(buf))]])
            except OSError as exc:
                raise _read_error(path, exc) from None
            if n == 0:
                raise ImageBuildError(f"{path} shrank while the layer was being built")
            sink(view[:n])
            left -= n
    finally:
        os.close(fd)
