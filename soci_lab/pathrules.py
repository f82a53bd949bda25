"""Rules for names, links and attributes of layer entries, shared by the eager applier and the lazy tree.

One module so that :mod:`soci_lab.unpack.tarapply` (which writes a layer to a directory) and
:mod:`soci_lab.lazy.reader` (which shows a layer through FUSE from its TOC) cannot drift apart: a name
that one refuses the other refuses with the same words, an attribute that one drops the other drops.

* :func:`clean_name` — a name relative to the layer root; a leading ``/`` is dropped, ``..`` that stays
  inside is cleaned away, a name that climbs above the root (``../x``) or holds a NUL byte is refused with
  :class:`~soci_lab.errors.UnsafeArchiveEntry`.
* :func:`is_dropped_xattr` — ``trusted.overlay.*`` / ``user.overlay.*`` carried by a layer are never
  applied or shown: only whiteout conversion sets overlay attributes.
* :func:`xattr_allowed` — the same, plus ``user.*`` only on regular files and directories (the kernel
  refuses it on links, devices and fifos, so the eager unpack never has it there).
* Whiteout names (``.wh.<name>``, ``.wh..wh..opq``, other ``.wh..wh.*`` skipped) and
  :data:`MAX_SYMLINKS`, the most symlinks followed on one parent path (more is refused).
"""

from __future__ import annotations

import posixpath
import stat

from .errors import UnsafeArchiveEntry

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
#: symlinks followed on one parent path before the entry is refused
MAX_SYMLINKS = 40
#: extended attributes a layer may not carry (dropped, never applied or shown)
DROPPED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def clean_name(name: str, what: str = "entry") -> str:
    """The entry name relative to the destination root (``""`` for the root); refuses escapes."""
    if "\x00" in name:
        raise UnsafeArchiveEntry(f"tar {what} {name!r} contains a NUL byte")
    rel = name.lstrip("/")
    rel = posixpath.normpath(rel) if rel else "."
    if rel == ".." or rel.startswith("../"):
        raise UnsafeArchiveEntry(f"tar {what} {name!r} points outside the destination")
    return "" if rel == "." else rel


def is_dropped_xattr(name: str) -> bool:
    """Whether an extended attribute carried by a layer is dropped (overlay attributes)."""
    return name.startswith(DROPPED_XATTR_PREFIXES)


def xattr_allowed(name: str, st_mode: int) -> bool:
    """Whether an xattr a layer carries ends up on an entry of type ``st_mode``: not an overlay attribute,
    and ``user.*`` only on regular files and directories (Linux refuses it elsewhere, so eager skips it)."""
    if is_dropped_xattr(name):
        return False
    return not name.startswith("user.") or stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode)


def whiteout_target(base: str, name: str) -> str:
    """The name a ``.wh.<name>`` whiteout hides; refuses a whiteout that names nothing (``.wh.``, ``.wh..``)."""
    target = base[len(WHITEOUT_PREFIX) :]
    if not target or target in (".", ".."):
        raise UnsafeArchiveEntry(f"tar whiteout {name!r} names nothing")
    return target


__all__ = [
    "DROPPED_XATTR_PREFIXES",
    "MAX_SYMLINKS",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "clean_name",
    "is_dropped_xattr",
    "whiteout_target",
    "xattr_allowed",
]
