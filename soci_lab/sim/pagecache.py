"""The kernel between a reader and a FUSE server: page cache and Linux's on-demand readahead.

A ``pread`` on a FUSE file is served from the file's page cache; the pages it lacks are asked of the
server by readahead (``mm/readahead.c``, ``mm/filemap.c``), in FUSE read requests of whole pages, so the
server sees other offsets and sizes than the reader asked for. :class:`KernelReads` turns a read into
those requests, following the kernel's rules for order-0 pages:

- ``filemap_read`` walks the range in batches of cached pages; a batch stops after a page marked
  ``PG_readahead``, which triggers the asynchronous readahead; a missing page triggers the synchronous one;
- ``page_cache_sync_ra``: at the start of the file, for a read larger than the window, or right after
  the previous read (``prev_pos``), an initial window (``get_init_ra_size``: ×4 of a tiny request, ×2 of a
  small one, else the maximum); after cached history, a window as long as that history; otherwise the
  request as is, with no readahead mark;
- ``page_cache_async_ra``: on the expected mark, the window moves forward and ramps up
  (``get_next_ra_size``) — each 128 KiB step is read when the reader reaches the previous one;
- ``page_cache_ra_unbounded``: pages already cached split a window into several requests; windows stop
  at the end of the file; the mark goes on the first page of the window's async part.

State: pages and marks per file (the inode: ``keep_cache``, so they outlive an open), readahead state
per open file (the replay keeps one descriptor per path).
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE = 4096
_NO_PREV = -1


@dataclass
class _RaState:
    start: int = 0
    size: int = 0
    async_size: int = 0
    prev_pos: int = _NO_PREV


def _init_size(req: int, max_pages: int) -> int:
    new = 1 << max(0, (req - 1).bit_length())  # roundup_pow_of_two
    if new <= max_pages // 32:
        return new * 4
    if new <= max_pages // 4:
        return new * 2
    return max_pages


def _next_size(cur: int, max_pages: int) -> int:
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


class _Inode:
    __slots__ = ("cached", "marked", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.cached = bytearray((size + PAGE - 1) // PAGE)
        self.marked: set[int] = set()


class KernelReads:
    """Page caches and readahead states; :meth:`read` returns the FUSE requests one read causes."""

    def __init__(self, ra_pages: int = 32, max_request: int = 128 * 1024) -> None:
        self.ra_pages = max(1, ra_pages)
        self.max_request_pages = max(1, max_request // PAGE)
        self.inodes: dict[object, _Inode] = {}
        self.files: dict[object, _RaState] = {}

    def read(self, inode: object, fd: object, size_of_file: int, off: int, size: int) -> list[tuple[int, int]]:
        """``pread(fd, size, off)`` of a file of ``size_of_file`` bytes: the FUSE reads, as (offset, end)
        clipped to the file, in the order the kernel sends them."""
        if size <= 0 or off >= size_of_file:
            return []
        ino = self.inodes.get(inode)
        if ino is None:
            ino = self.inodes[inode] = _Inode(size_of_file)
        ra = self.files.get(fd)
        if ra is None:
            ra = self.files[fd] = _RaState()
        out: list[tuple[int, int]] = []
        end = min(off + size, size_of_file)
        last_index = (end + PAGE - 1) // PAGE
        cached, marked = ino.cached, ino.marked
        pos = off
        while pos < end:
            index = pos // PAGE
            if not cached[index]:
                self._sync(ino, ra, index, last_index - index, out)
                if not cached[index]:  # (cannot happen with a window ≥ 1 page) read the one page
                    self._submit(ino, index, index + 1, out)
            j, n = index, 0
            while j < last_index and cached[j] and n < 31:
                n += 1
                if j in marked:
                    break
                j += 1
            last = index + n - 1
            if last in marked:
                self._async(ino, ra, last, last_index - last, out)
            pos = (last + 1) * PAGE
        ra.prev_pos = end
        return out

    # --- mm/readahead.c -----------------------------------------------------------------------------

    def _sync(self, ino: _Inode, ra: _RaState, index: int, req: int, out: list[tuple[int, int]]) -> None:
        max_pages = self.ra_pages
        prev_index = ra.prev_pos // PAGE if ra.prev_pos >= 0 else None
        if index == 0 or req > max_pages or (prev_index is not None and 0 <= index - prev_index <= 1):
            ra.start = index
            ra.size = _init_size(req, max_pages)
            ra.async_size = ra.size - req if ra.size > req else ra.size
            self._window(ino, ra.start, ra.size, ra.async_size, out)
            return
        miss = index - 1  # page_cache_prev_miss(index - 1, max_pages)
        scanned = 0
        while scanned < max_pages and miss >= 0 and ino.cached[miss]:
            miss -= 1
            scanned += 1
        from_start = miss < 0
        contig = index - miss - 1
        if contig <= req:
            self._window(ino, index, req, 0, out)  # a small random read: as is, no mark
            return
        if from_start:
            contig *= 2
        ra.start = index
        ra.size = min(contig + req, max_pages)
        ra.async_size = 1
        self._window(ino, ra.start, ra.size, ra.async_size, out)

    def _async(self, ino: _Inode, ra: _RaState, index: int, req: int, out: list[tuple[int, int]]) -> None:
        ino.marked.discard(index)
        max_pages = self.ra_pages
        if index == ra.start + ra.size - ra.async_size:
            ra.start += ra.size
            ra.size = max(ra.size, _next_size(ra.size, max_pages))
            ra.async_size = ra.size
            self._window(ino, ra.start, ra.size, ra.async_size, out)
            return
        start = index + 1  # page_cache_next_miss(index + 1, max_pages)
        n_pages = len(ino.cached)
        while start < n_pages and start - index <= max_pages and ino.cached[start]:
            start += 1
        if start - index > max_pages:
            return
        ra.start = start
        ra.size = _next_size(start - index + req, max_pages)
        ra.async_size = ra.size
        self._window(ino, ra.start, ra.size, ra.async_size, out)

    def _window(self, ino: _Inode, index: int, nr: int, lookahead: int, out: list[tuple[int, int]]) -> None:
        """``do_page_cache_ra`` + ``page_cache_ra_unbounded``."""
        end_index = len(ino.cached) - 1
        if end_index < 0 or index > end_index:
            return
        nr = min(nr, end_index - index + 1)
        mark = index + nr - lookahead if lookahead else None
        run_start = None
        cached = ino.cached
        for p in range(index, index + nr):
            if cached[p]:
                if run_start is not None:
                    self._submit(ino, run_start, p, out)
                    run_start = None
                continue
            if p == mark:
                ino.marked.add(p)
            if run_start is None:
                run_start = p
        if run_start is not None:
            self._submit(ino, run_start, index + nr, out)

    def _submit(self, ino: _Inode, first: int, end: int, out: list[tuple[int, int]]) -> None:
        """``fuse_readahead``: requests of at most ``max_request_pages``; the pages are now cached."""
        cached = ino.cached
        for p in range(first, end):
            cached[p] = 1
        step = self.max_request_pages
        for a in range(first, end, step):
            b = min(end, a + step)
            out.append((a * PAGE, min(b * PAGE, ino.size)))
