"""The layer's file tree from its TOC, and verified file reads through the span manager.

:class:`LayerTree` is what the FUSE filesystem shows: the tree the eager unpacker would write from the same
entries (the rules live in :mod:`soci_lab.pathrules`, shared with :mod:`soci_lab.unpack.tarapply`; see the
class). Upstream differs on hostile layers — it clamps ``../`` names, passes ``trusted.overlay.*`` xattrs,
shows a whiteout only when no real ``<name>`` exists and makes a directory of a symlink parent — and
soci_lab follows eager there, so that a lazy and an eager mount of one image show the same files.

:class:`LayerReader` serves file bytes: the first read of a file verifies its tar header — the bytes
``[TarHeaderOffset, UncompressedOffset)``, fetched through the span manager (so they are span-verified),
parsed with :mod:`tarfile` and compared field by field with the TOC entry (name, type, size, mode, uid,
gid, mtime, linkname, device numbers, SCHILY xattrs) — unless verification is disabled (config
``disable_verification`` or Hermes ``skip-file-verification``), and those of the hard links to it;
:meth:`LayerReader.verify_node` does the same for the other entries before they are shown. Once the whole
layer passed :mod:`soci_lab.lazy.layercheck` (``mark_checked``) no header is fetched any more; after a
failed check (``failed``) nothing is served. Reads map to span ranges; a read that
continues where the previous one of the same file ended is *sequential* and triggers readahead of the
next spans in the background: ``readahead_spans`` at first, the window doubling with every span's worth of
sequential reads up to ``max_readahead_spans`` (a long stream keeps several span fetches and inflates in
flight; a short read of a big file fetches little ahead).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from ..errors import FileVerificationError, LayerCheckFailed, SociLabError, UnsafeArchiveEntry
from ..events import EventRecorder, NullRecorder
from ..pathrules import (
    MAX_SYMLINKS,
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    clean_name,
    whiteout_target,
    xattr_allowed,
)
from ..ztoc.toc import FileMetadata
from .span import SpanState
from .span_manager import SpanManager


class TaskSpawner(Protocol):
    """Where readahead runs in the background: an anyio task group (``lab``'s reader) or a trio nursery (the
    FUSE server's)."""

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any, name: Any = None) -> None: ...


OPAQUE_WHITEOUT = WHITEOUT_OPAQUE
ROOT_INODE = 1
#: first inode number of tree nodes (1 is the root, 2 and 3 the state directory and its file)
FIRST_INODE = 4

_TAR_TYPES = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.CONTTYPE: "reg",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass
class Node:
    """One inode of the layer: a TOC entry (or an implicit directory, or a whiteout device)."""

    inode: int
    name: str  # base name ("" for the root)
    path: str  # cleaned path ("" for the root)
    entry: FileMetadata | None
    mode: int  # st_mode
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    nlink: int = 1
    linkname: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, Node] = field(default_factory=dict)
    opaque: bool = False
    whiteout: bool = False
    verified: bool = False
    #: hard link entries naming this node, and the ``.wh..wh..opq`` entry making it opaque (header checks)
    link_entries: list[FileMetadata] = field(default_factory=list)
    opaque_entry: FileMetadata | None = None
    read_end: int = -1  # where the last read of this file ended (readahead)
    streak: int = 0  # consecutive sequential reads (the readahead window grows with it)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class LayerTree:
    """The inode tree of one layer, built from its TOC entries by the eager applier's rules.

    Entries are taken in stream order and each does to the tree what :mod:`soci_lab.unpack.tarapply` does to
    a directory, so that the lazy view of a layer is the eager one: names cleaned by
    :func:`soci_lab.pathrules.clean_name` (a name or hard link target above the root is refused with
    :class:`~soci_lab.errors.UnsafeArchiveEntry`, as eager refuses the layer), a later entry replaces an
    earlier one of the same name (a directory over a directory keeps it and takes the later metadata), a
    parent component that is a symlink is followed scoped to the layer root (``evil -> /etc`` then
    ``evil/passwd`` is ``etc/passwd``; more than 40 links, or a parent that is a file, is refused), hard
    links resolve to their target's node (missing target or a directory: refused), ``.wh.<name>`` replaces
    ``<name>`` with a 0:0 character device in order, ``.wh..wh..opq`` marks its directory opaque, other
    ``.wh..wh.*`` are skipped, and ``trusted.overlay.*`` / ``user.overlay.*`` xattrs are dropped. Nothing
    recurses, so a path of any depth is fine.
    """

    def __init__(self, entries: list[FileMetadata], *, max_entry_size: int = 1 << 40) -> None:
        self.nodes: dict[int, Node] = {}
        self._next = FIRST_INODE
        self.root = Node(ROOT_INODE, "", "", None, stat.S_IFDIR | 0o755, nlink=2)
        self.nodes[ROOT_INODE] = self.root
        self.by_path: dict[str, Node] = {"": self.root}
        for e in entries:
            self._entry(e, max_entry_size)
        self._index()

    # --- building (mirrors TarApplier._entry) ----------------------------------------------------------

    def _entry(self, e: FileMetadata, max_entry_size: int) -> None:
        rel = clean_name(e.name)
        if e.uncompressed_size < 0 or e.uncompressed_size > max_entry_size:
            raise UnsafeArchiveEntry(
                f"tar entry {e.name!r} claims {e.uncompressed_size} bytes (more than the limit {max_entry_size})"
            )
        if rel == "":
            if e.type == "dir":
                self._apply_attrs(self.root, e)
            return
        parent_rel, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(e, parent_rel, base)
            return
        parent = self._parent(parent_rel, create=True)
        t = e.type
        if t == "dir":
            old = parent.children.get(base)
            if old is not None and old.is_dir:
                self._apply_attrs(old, e)
                return
            node = self._new(base, e)
        elif t == "hardlink":
            target = self._link_target(e, parent, base)
            if target is not None and parent.children.get(base) is not target:
                parent.children[base] = target
                target.link_entries.append(e)
            return
        elif t == "symlink":
            if "\x00" in e.linkname:
                raise UnsafeArchiveEntry(f"tar symlink {e.name!r} has a NUL byte in its target")
            node = self._new(base, e)
        else:  # reg, char, block, fifo
            node = self._new(base, e)
        parent.children[base] = node

    def _whiteout(self, e: FileMetadata, parent_rel: str, base: str) -> None:
        parent = self._parent(parent_rel, create=True)
        if base == WHITEOUT_OPAQUE:
            parent.opaque = True
            parent.opaque_entry = e
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return
        name = whiteout_target(base, e.name)
        node = self._new(name, None)
        node.entry = e  # (its header is checked before the whiteout is shown)
        node.mode = stat.S_IFCHR | 0o000
        node.uid, node.gid = e.uid, e.gid
        node.mtime_ns = e.mod_time_ns()
        node.whiteout = True
        parent.children[name] = node

    def _link_target(self, e: FileMetadata, parent: Node, base: str) -> Node | None:
        """The node a hard link entry names (``TarApplier._hardlink``'s checks); None for a link to itself."""
        target = clean_name(e.linkname, "hardlink target")
        if not target:
            raise UnsafeArchiveEntry(f"tar hardlink {e.name!r} points at the destination root")
        tparent_rel, _, tbase = target.rpartition("/")
        try:
            tparent = self._parent(tparent_rel, create=False)
        except FileNotFoundError:
            raise UnsafeArchiveEntry(f"tar hardlink {e.name!r} → {e.linkname!r}: target does not exist") from None
        if tparent is parent and tbase == base:
            return None  # a link to itself: nothing to do
        node = tparent.children.get(tbase)
        if node is None:
            raise UnsafeArchiveEntry(f"tar hardlink {e.name!r} → {e.linkname!r}: target does not exist")
        if node.is_dir:
            raise UnsafeArchiveEntry(f"tar hardlink {e.name!r} → {e.linkname!r}: target is a directory")
        replaced = parent.children.get(base)
        # (by the target's directory: a directory has one place, a file may have several through hard links)
        if replaced is not None and replaced.is_dir and (tparent is replaced or _holds(replaced, tparent)):
            raise UnsafeArchiveEntry(f"tar hardlink {e.name!r} → {e.linkname!r}: target is inside the "
                                     "directory the link replaces")
        return node

    def _parent(self, rel: str, *, create: bool) -> Node:
        """The directory node of ``rel``, walking symlinks scoped to the root (``TarApplier._parent``)."""
        todo = rel.split("/") if rel else []
        todo.reverse()
        stack: list[Node] = []
        cur = self.root
        links = 0
        while todo:
            comp = todo.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if stack:
                    stack.pop()
                cur = stack[-1] if stack else self.root
                continue
            child = cur.children.get(comp)
            if child is None:
                if not create:
                    raise FileNotFoundError(rel)
                child = self._new(comp, None)
                cur.children[comp] = child
            elif not child.is_dir:
                if not stat.S_ISLNK(child.mode):
                    key = "/".join([*(n.name for n in stack), comp])
                    raise UnsafeArchiveEntry(f"path {rel!r}: {key!r} is not a directory")
                links += 1
                if links > MAX_SYMLINKS:
                    raise UnsafeArchiveEntry(f"path {rel!r}: too many levels of symbolic links")
                target = child.linkname
                if target.startswith("/"):
                    stack = []
                    cur = self.root
                todo.extend(reversed(target.split("/")))
                continue
            stack.append(child)
            cur = child
        return cur

    def _new(self, name: str, entry: FileMetadata | None) -> Node:
        node = Node(self._next, name, "", entry, stat.S_IFDIR | 0o755)
        self._next += 1
        if entry is not None:
            self._apply_attrs(node, entry)
        return node

    def _index(self) -> None:
        """Paths, the inode table and link counts of the nodes reachable from the root (replaced ones drop)."""
        self.nodes = {ROOT_INODE: self.root}
        self.by_path = {"": self.root}
        refs: dict[int, int] = {}
        stack = [self.root]
        while stack:
            n = stack.pop()
            for name, c in n.children.items():
                refs[c.inode] = refs.get(c.inode, 0) + 1
                path = f"{n.path}/{name}" if n.path else name
                self.by_path[path] = c
                if c.inode in self.nodes:
                    continue  # a second name of a hard-linked node
                c.path = path
                self.nodes[c.inode] = c
                stack.append(c)
        for node in self.nodes.values():
            if node.is_dir:
                node.nlink = 2 + sum(1 for c in node.children.values() if c.is_dir)
            else:
                node.nlink = refs.get(node.inode, 1)

    @staticmethod
    def _apply_attrs(node: Node, e: FileMetadata) -> None:
        node.entry = e
        node.mode = e.st_mode()
        node.uid, node.gid = e.uid, e.gid
        if e.type == "reg":
            node.size = e.uncompressed_size
        elif e.type == "symlink":
            node.size = len(e.linkname.encode("utf-8", "surrogateescape"))
        else:
            node.size = 0
        node.mtime_ns = e.mod_time_ns()
        node.linkname = e.linkname
        node.rdev = os.makedev(e.devmajor, e.devminor) if e.type in ("char", "block") else 0
        node.xattrs = {
            k: v.encode("utf-8", "surrogateescape") for k, v in e.xattrs().items() if xattr_allowed(k, node.mode)
        }

    # --- queries ---------------------------------------------------------------------------------------

    def lookup(self, path: str) -> Node | None:
        try:
            return self.by_path.get(clean_name(path))
        except UnsafeArchiveEntry:
            return None

    def walk(self) -> Iterator[Node]:
        """Every distinct node once, parents before children."""
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n.inode in seen:
                continue
            seen.add(n.inode)
            yield n
            stack.extend(n.children.values())

    def opaque_xattrs(self, opaque_type: str) -> list[str]:
        """The xattr names an opaque directory reports (``all``, ``trusted`` or ``user``)."""
        if opaque_type in ("all", "0"):
            return ["trusted.overlay.opaque", "user.overlay.opaque"]
        if opaque_type in ("user", "2"):
            return ["user.overlay.opaque"]
        return ["trusted.overlay.opaque"]


def verify_header(entry: FileMetadata, header: bytes) -> None:
    """Parse a tar header with :mod:`tarfile` and compare it with the TOC entry; raise on any difference."""
    try:
        with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r|", encoding="utf-8") as tf:
            info = tf.next()
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise FileVerificationError(f"{entry.name}: tar header does not parse: {exc}") from None
    if info is None:
        raise FileVerificationError(f"{entry.name}: no tar header at offset {entry.tar_header_offset}")
    if info.offset_data != len(header):
        raise FileVerificationError(f"{entry.name}: tar header is {info.offset_data} bytes, TOC says {len(header)}")
    problems: list[str] = []

    def check(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what} {got!r} != TOC {want!r}")

    check("name", info.name.rstrip("/"), entry.name.rstrip("/"))
    check("type", _TAR_TYPES.get(info.type, info.type), entry.type)
    if entry.type == "reg":
        check("size", info.size, entry.uncompressed_size)
    check("mode", info.mode & 0o7777, entry.mode & 0o7777)
    check("uid", info.uid, entry.uid)
    check("gid", info.gid, entry.gid)
    check("mtime", int(info.mtime // 1), entry.mod_time_ns() // 1_000_000_000)
    check("linkname", info.linkname, entry.linkname)
    if entry.type in ("char", "block"):
        check("devmajor", info.devmajor, entry.devmajor)
        check("devminor", info.devminor, entry.devminor)
    hx = {k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    tx = {k: v for k, v in entry.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    check("xattrs", hx, tx)
    if problems:
        raise FileVerificationError(f"{entry.name}: tar header does not match the TOC: " + "; ".join(problems))


class LayerReader:
    """Verified, span-mapped reads of one layer's files."""

    def __init__(
        self,
        tree: LayerTree,
        spans: SpanManager,
        *,
        verify: bool = True,
        readahead_spans: int = 1,
        max_readahead_spans: int = 4,
        events: EventRecorder | None = None,
        layer: str | None = None,
    ) -> None:
        self.tree = tree
        self.spans = spans
        self.verify = verify
        self.readahead_spans = readahead_spans
        self.max_readahead_spans = max(readahead_spans, max_readahead_spans)
        self.events = events if events is not None else NullRecorder()
        self.layer = layer
        #: set by the FUSE server (or any caller with a task group) to run readahead in the background
        self.task_group: TaskSpawner | None = None
        self._verify_locks: dict[int, anyio.Lock] = {}  # by id() of the TOC entry
        self.readaheads = 0
        #: why the layer failed its check against the zTOC (then nothing more is served), or None
        self.failed: str | None = None
        #: the whole layer passed its check: per-entry header checks are skipped
        self.layer_checked = False
        self._verified_entries: set[int] = set()

    def mark_checked(self) -> None:
        """The whole layer passed :func:`~soci_lab.lazy.layercheck.check_layer`: every entry is the layer's
        own, so no header needs fetching any more."""
        self.layer_checked = True

    async def verify_entry(self, entry: FileMetadata, path: str) -> None:
        """Check one TOC entry against the layer's tar header at its offset, once."""
        if self.layer_checked or not self.verify or id(entry) in self._verified_entries:
            return
        lock = self._verify_locks.setdefault(id(entry), anyio.Lock())
        async with lock:
            if id(entry) in self._verified_entries or self.layer_checked:
                return
            t0 = self.events.now()
            header = await self.spans.get_contents(entry.tar_header_offset, entry.uncompressed_offset)
            try:
                await anyio.to_thread.run_sync(verify_header, entry, header)
            except FileVerificationError as exc:
                self.events.emit("verify", t0, layer=self.layer, path=path, ok=False, error=str(exc), what="tar_header")
                raise
            self.events.emit("verify", t0, layer=self.layer, path=path, nbytes=len(header), what="tar_header")
            self._verified_entries.add(id(entry))

    async def verify_file(self, node: Node) -> None:
        """Check the file's tar header against its TOC entry (and those of hard links to it), once per file."""
        if node.verified or not self.verify or node.entry is None or self.layer_checked:
            return
        for e in (node.entry, *node.link_entries):
            await self.verify_entry(e, node.path)
        node.verified = True

    async def verify_node(self, node: Node, *, opaque: bool = False) -> None:
        """Before a node's metadata is shown (a device, fifo or whiteout looked up, a link read, xattrs the
        layer carries): check every entry it comes from; ``opaque`` adds its ``.wh..wh..opq`` entry."""
        if self.layer_checked or not self.verify:
            return
        await self.verify_file(node)
        if opaque and node.opaque_entry is not None:
            await self.verify_entry(node.opaque_entry, node.path)

    async def read(self, node: Node, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file at ``offset`` (fewer at end of file)."""
        if self.failed is not None:
            raise LayerCheckFailed(self.failed)
        e = node.entry
        if e is None or not stat.S_ISREG(node.mode):
            return b""
        if offset >= node.size or size <= 0:
            await self.verify_file(node)
            return b""
        end = min(node.size, offset + size)
        t0 = self.events.now()
        lo, hi = e.uncompressed_offset + offset, e.uncompressed_offset + end
        try:
            if node.verified or not self.verify or self.layer_checked:
                data = await self.spans.get_contents(lo, hi)
            else:
                # first read: fetch the data's spans while the header is verified; serve only if it passes
                got: dict[str, bytes] = {}

                async def fetch_data() -> None:
                    got["data"] = await self.spans.get_contents(lo, hi)

                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(fetch_data)
                        await self.verify_file(node)
                except BaseExceptionGroup as group:
                    first = group.exceptions[0]
                    raise first if isinstance(first, SociLabError) else group from None
                data = got["data"]
        except SociLabError as exc:
            self.events.emit("file_read", t0, layer=self.layer, path=node.path, ok=False, error=str(exc), offset=offset)
            raise
        self.events.emit("file_read", t0, layer=self.layer, path=node.path, nbytes=len(data), offset=offset)
        sequential = offset == node.read_end and offset > 0
        node.read_end = end
        node.streak = node.streak + 1 if sequential else 0
        if sequential and self.readahead_spans > 0 and self.task_group is not None and end < node.size:
            # the window doubles with every span-worth of sequential reads, up to max_readahead_spans
            span_len = max(1, self.spans.spans[0].uncomp_size)
            grown = self.readahead_spans << min(8, (node.streak * max(1, end - offset)) // span_len)
            window = min(self.max_readahead_spans, max(self.readahead_spans, grown))
            self._readahead(e.uncompressed_offset + end, e.uncompressed_offset + node.size, window)
        return data

    def _readahead(self, start: int, file_end: int, window: int) -> None:
        first = self.spans.geometry.span_of(start)
        last = min(self.spans.geometry.span_of(file_end - 1), first + window)
        for sid in range(first, last + 1):
            state = self.spans.spans[sid].state
            if state == SpanState.REQUESTED or (state == SpanState.UNCOMPRESSED and self.spans.is_hot(sid)):
                continue  # being fetched, or servable from memory: nothing to do ahead
            assert self.task_group is not None
            try:
                self.task_group.start_soon(self._quiet_resolve, sid)
            except RuntimeError:  # the task group has closed (server stopping): no readahead
                self.task_group = None
                return
            self.readaheads += 1

    async def _quiet_resolve(self, sid: int) -> None:
        with contextlib.suppress(SociLabError):  # the read that needs it will fail (and report) on its own
            await self.spans.resolve_span(sid)

    async def read_all(self, node: Node) -> bytes:
        """The whole file (tests, materialisation)."""
        return await self.read(node, 0, node.size)


def _holds(directory: Node, subdir: Node) -> bool:
    """Whether directory ``subdir`` is somewhere under ``directory`` (iteratively: a tree may be thousands
    deep)."""
    todo = [directory]
    while todo:
        for child in todo.pop().children.values():
            if child.is_dir:
                if child is subdir:
                    return True
                todo.append(child)
    return False
