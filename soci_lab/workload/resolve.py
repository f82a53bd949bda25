"""Resolve a path *inside* a rootfs, as a process chrooted there would, without chrooting.

A rootfs holds absolute symlinks (``/usr/bin/python3 -> python3.11``, ``/etc/alternatives/...``) that
point inside the image, not at the host. Joining ``root + path`` and letting the kernel follow links would
escape to the host's files, so replay walks the path itself, one component at a time, following links
relative to ``root`` and never climbing above it (``..`` at the top stays at the top, like ``/..``).
"""

from __future__ import annotations

import errno
import os
import stat

#: how many symlinks one resolution follows before giving up, as the kernel's MAXSYMLINKS
MAX_LINKS = 40


def resolve_in_root(root: str | os.PathLike[str], path: str, *, follow_last: bool = True) -> str:
    """The host path of ``path`` (absolute inside ``root``), symlinks followed inside ``root``.

    With ``follow_last=False`` a final symlink is left as it is (``lstat``/``readlink`` semantics).
    Raises ``FileNotFoundError``/``NotADirectoryError``/``OSError(ELOOP)`` as the kernel would.
    """
    base = os.path.abspath(os.fspath(root))
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(base, *done, name)
        last = not parts
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if last:
                return host  # the caller's open/stat reports ENOENT itself
            raise
        if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if not last and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        done.append(name)
    return os.path.join(base, *done) if done else base
