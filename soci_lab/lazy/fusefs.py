"""A read-only pyfuse3 filesystem serving one lazily loaded layer (upstream ``fs/layer/node.go``).

Everything the kernel asks for comes from the :class:`~soci_lab.lazy.reader.LayerTree` (metadata, no
network) except file contents, which go through the verified :class:`~soci_lab.lazy.reader.LayerReader`
(span manager → range fetcher). Handlers are async on pyfuse3's trio loop and never block it: network I/O
is async, hashing/inflating/directory-cache I/O run in worker threads.

Shown as upstream does: ``.wh.<name>`` entries as 0:0 character devices ``<name>``, ``.wh..wh..opq``
hidden and its directory reporting ``trusted.overlay.opaque`` and/or ``user.overlay.opaque`` = ``y`` (per
``overlay_opaque_type``), SCHILY xattrs, hard links sharing one inode, ``statfs`` (overlayfs refuses a lower
dir without it), and a state directory ``.soci-snapshotter/<layerdigest>.json`` with
``{error?, digest, size, fetchedSize, fetchedPercent}``. Any failure serving a read becomes ``EIO``; the
error is recorded in the state file and as an ``error`` event.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

import pyfuse3

from ..errors import SociLabError
from ..events import EventRecorder, NullRecorder
from .reader import LayerReader, LayerTree, Node

STATE_DIR = ".soci-snapshotter"
STATE_DIR_INODE = 2
STATE_FILE_INODE = 3
BLOCK_SIZE = 4096


def _enc(name: str) -> bytes:
    return os.fsencode(name)


def _special(node: Node) -> bool:
    """A device, fifo or whiteout: its entry is checked before it is looked up or listed."""
    return node.whiteout or stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode) or stat.S_ISFIFO(node.mode)


class LayerFS(pyfuse3.Operations):
    """pyfuse3 operations for one layer."""

    enable_writeback_cache = False
    supports_dot_lookup = True

    def __init__(
        self,
        reader: LayerReader,
        *,
        digest: str,
        blob_size: int,
        overlay_opaque_type: str = "trusted",
        attr_timeout: float = 1.0,
        entry_timeout: float = 1.0,
        events: EventRecorder | None = None,
    ) -> None:
        super().__init__()
        self.reader = reader
        self.tree: LayerTree = reader.tree
        self.digest = digest
        self.blob_size = blob_size
        self.opaque_names = [_enc(n) for n in self.tree.opaque_xattrs(overlay_opaque_type)]
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.events = events if events is not None else NullRecorder()
        self.errors: list[str] = []
        self._state_name = f"{digest}.json"
        self._dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self._next_fh = 1
        self._state_snapshots: dict[int, bytes] = {}
        self._total_bytes = sum(n.size for n in self.tree.walk())

    # --- attributes -------------------------------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        a.entry_timeout = self.entry_timeout
        a.attr_timeout = self.attr_timeout
        a.st_mode = node.mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        a.st_size = node.size
        a.st_blksize = BLOCK_SIZE
        a.st_blocks = (node.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime_ns
        return a

    def state_json(self) -> bytes:
        """The state file's content (upstream's layer state: digest, size, fetched bytes and percent)."""
        spans = self.reader.spans
        size = spans.uncompressed_size or 1
        fetched = spans.fetched_uncompressed_bytes()
        doc: dict[str, Any] = {
            "digest": self.digest,
            "size": self.blob_size,
            "fetchedSize": fetched,
            "fetchedPercent": round(100.0 * fetched / size, 2),
        }
        if self.errors:
            doc["error"] = self.errors[-1]
        return (json.dumps(doc) + "\n").encode()

    def _special_attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.entry_timeout = 0
        a.attr_timeout = 0
        if inode == STATE_DIR_INODE:
            a.st_mode = stat.S_IFDIR | 0o500
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o400
            a.st_nlink = 1
            a.st_size = len(self.state_json())
        a.st_blksize = BLOCK_SIZE
        return a

    def fail(self, message: str) -> None:
        """The layer did not pass its check against the zTOC: from now on every request is EIO (the state
        file says why)."""
        self.reader.failed = message
        self.errors.append(message)
        t = self.events.now()
        self.events.emit("error", t, t, ok=False, error=message, op="layer_check")

    def _node(self, inode: int) -> Node:
        if self.reader.failed is not None:
            raise pyfuse3.FUSEError(errno.EIO)
        node = self.tree.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode in (STATE_DIR_INODE, STATE_FILE_INODE):
            return self._special_attrs(inode)
        if inode == self.tree.root.inode:  # (even after a failed check: the state file stays reachable)
            return self._attrs(self.tree.root)
        return self._attrs(self._node(inode))

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        sname = os.fsdecode(name)
        if parent_inode == STATE_DIR_INODE:
            if sname == self._state_name:
                return self._special_attrs(STATE_FILE_INODE)
            if sname in (".", ".."):
                return self._special_attrs(STATE_DIR_INODE)
            raise pyfuse3.FUSEError(errno.ENOENT)
        if parent_inode == self.tree.root.inode and sname == STATE_DIR:
            return self._special_attrs(STATE_DIR_INODE)
        parent = self._node(parent_inode)
        if sname == ".":
            return self._attrs(parent)
        if sname == "..":
            up = self.tree.by_path.get(os.path.dirname(parent.path), self.tree.root)
            return self._attrs(up)
        child = parent.children.get(sname)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if _special(child):
            await self._check(child)
        return self._attrs(child)

    async def _check(self, node: Node, *, opaque: bool = False) -> None:
        """The node's TOC entries checked against the layer's tar headers before its metadata is shown (a
        no-op once the whole layer has been checked); a mismatch is EIO, recorded like a read error."""
        try:
            await self.reader.verify_node(node, opaque=opaque)
        except SociLabError as exc:
            self._record_error(node, exc, op="verify")
            raise pyfuse3.FUSEError(errno.EIO) from None

    # --- directories ------------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if inode == STATE_DIR_INODE:
            entries = [(_enc(self._state_name), STATE_FILE_INODE)]
        else:
            node = self._node(inode)
            if not node.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            for child in node.children.values():
                if _special(child):
                    await self._check(child)
            entries = [(_enc(n), c.inode) for n, c in sorted(node.children.items())]
            if node is self.tree.root:
                entries.insert(0, (_enc(STATE_DIR), STATE_DIR_INODE))
        fh = self._next_fh
        self._next_fh += 1
        self._dir_handles[fh] = entries
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dir_handles.get(fh, [])
        for i in range(start_id, len(entries)):
            name, inode = entries[i]
            attrs = await self.getattr(inode)
            if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    # --- files ------------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if inode == STATE_FILE_INODE:
            fh = self._next_fh
            self._next_fh += 1
            self._state_snapshots[fh] = self.state_json()
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode + (1 << 40), keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh in self._state_snapshots:
            return self._state_snapshots[fh][off : off + size]
        node = self._node(fh - (1 << 40))
        try:
            return await self.reader.read(node, off, size)
        except SociLabError as exc:
            self._record_error(node, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception as exc:  # a bug must still be EIO to the kernel, never a hung request
            self._record_error(node, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def release(self, fh: int) -> None:
        self._state_snapshots.pop(fh, None)

    def _record_error(self, node: Node, exc: BaseException, *, op: str = "read") -> None:
        msg = f"{node.path}: {(str(exc) or type(exc).__name__).splitlines()[0]}"
        self.errors.append(msg)
        t = self.events.now()
        self.events.emit("error", t, t, path=node.path, ok=False, error=msg, op=op)

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self._node(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        await self._check(node)
        return _enc(node.linkname)

    # --- xattrs -----------------------------------------------------------------------------------

    async def _xattrs(self, inode: int, name: bytes | None = None) -> dict[bytes, bytes]:
        """The node's xattrs; those the layer carries (and an opaque marker) are checked against their tar
        headers first — only when ``name`` is one of them, so overlayfs probing names no layer can set
        (``trusted.overlay.*``) costs no fetch."""
        if inode in (STATE_DIR_INODE, STATE_FILE_INODE):
            return {}
        node = self._node(inode)
        out = {_enc(k): v for k, v in node.xattrs.items()}
        if node.opaque:
            for opaque in self.opaque_names:
                out[opaque] = b"y"
        if out and (name is None or name in out):
            await self._check(node, opaque=node.opaque)
        return out

    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        value = (await self._xattrs(inode, name)).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return list(await self._xattrs(inode))

    # --- filesystem -------------------------------------------------------------------------------

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        total = self._total_bytes
        s.f_bsize = BLOCK_SIZE
        s.f_frsize = BLOCK_SIZE
        s.f_blocks = (total + BLOCK_SIZE - 1) // BLOCK_SIZE
        s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.tree.nodes) + 2
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        return not mode & os.W_OK

    async def forget(self, inode_list: Any) -> None:
        return None
