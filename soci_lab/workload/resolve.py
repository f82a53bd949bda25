"""Resolve a path *inside* a rootfs, as a process chrooted there would, without chrooting.

A rootfs holds absolute symlinks (``/usr/bin/python3 -> python3.11``, ``/etc/alternatives/...``) that
point inside the image, not at the host. Joining ``root + path`` and letting the kernel follow links would
escape to the host's files, so replay walks the path itself, one component at a time, following links
relative to ``root`` and never climbing above it (``..`` at the top stays at the top, like ``/..``).

The walk is :func:`soci_lab.rootwalk.walk`, the rule the simulator resolves a trace's paths by too
(:meth:`soci_lab.sim.image.ImageModel.resolve`); here it asks ``lstat``/``readlink`` on the tree.
"""

from __future__ import annotations

import errno
import os
import stat

from ..rootwalk import MAX_LINKS, walk

__all__ = ["MAX_LINKS", "resolve_in_root"]

_ERRORS: dict[str, type[OSError]] = {"ENOENT": FileNotFoundError, "ENOTDIR": NotADirectoryError}


def resolve_in_root(root: str | os.PathLike[str], path: str, *, follow_last: bool = True) -> str:
    """The host path of ``path`` (absolute inside ``root``), symlinks followed inside ``root``.

    With ``follow_last=False`` a final symlink is left as it is (``lstat``/``readlink`` semantics).
    Raises ``FileNotFoundError``/``NotADirectoryError``/``OSError(ELOOP)`` as the kernel would.
    """
    base = os.path.abspath(os.fspath(root))

    def host(inside: str) -> str:
        return base + inside if inside != "/" else base

    def kind_of(inside: str) -> str | None:
        try:
            mode = os.lstat(host(inside)).st_mode
        except FileNotFoundError:
            return None
        except NotADirectoryError:  # cannot happen after the walk's own checks; answered as the kernel would
            return None
        return "dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "other"

    walked = walk(path, kind_of, lambda inside: os.readlink(host(inside)), follow_last=follow_last)
    if walked.error is not None:
        code = getattr(errno, walked.error)
        raise _ERRORS.get(walked.error, OSError)(code, os.strerror(code), path)
    return host(walked.path)
