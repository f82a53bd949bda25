"""Walk a path *inside* a rootfs, as the kernel resolves it for a process chrooted there: the one rule of
path resolution that the real replay (:mod:`soci_lab.workload.resolve`, on a mounted tree) and the
simulator (:meth:`soci_lab.sim.image.ImageModel.resolve`, on an image model's merged view) both use, so
the two cannot read different files for one trace.

The walk is pure: it asks ``kind_of(path)`` what is at an inside-the-root path (``"dir"``, ``"symlink"``,
another non-None kind for anything else, ``None`` when nothing is there) and ``link_of(path)`` a symlink's
target; the caller answers from ``lstat`` on a real tree or from a table. The rules are those of
``openat2(RESOLVE_IN_ROOT)`` (a test holds the walk to the kernel's own answer):

- components are taken one at a time; every component followed by another (``a/b``, ``a/.``, ``a/..``)
  or by a trailing slash (``a/``) must be a directory once its symlinks are followed;
- ``.`` stays, ``..`` goes to the parent of what has been reached, and at the top stays at the top
  (``/..`` is ``/``);
- a symlink is followed where it is not the last component, or is the last and ``follow_last`` (or a
  trailing slash) says so; a relative target continues from the link's directory, an absolute one from
  the root; more than :data:`MAX_LINKS` links in one walk fail (``ELOOP``), an empty target is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: how many symlinks one walk follows before it fails, as the kernel's MAXSYMLINKS
MAX_LINKS = 40

KindOf = Callable[[str], "str | None"]
LinkOf = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Walked:
    """Where a walk ended: ``path`` (absolute inside the root, ``/`` for the root itself) and ``error``,
    ``None`` when ``path`` exists, else the errno name a process would get: ``ENOENT`` (nothing there — the
    path is then the missing one), ``ENOTDIR`` (a non-directory where a directory was needed), ``ELOOP``."""

    path: str
    error: str | None = None


def _parts(text: str) -> list[str]:
    """The components of ``text``; a trailing slash becomes a final ``.`` (its last name must be a directory)."""
    parts = [p for p in text.split("/") if p]
    if parts and text.endswith("/"):
        parts.append(".")
    return parts


def _join(done: list[str]) -> str:
    return "/" + "/".join(done)


def walk(path: str, kind_of: KindOf, link_of: LinkOf, *, follow_last: bool = True) -> Walked:
    """Resolve ``path`` (inside the root; a relative one starts at the root too) by the rules above; an
    empty path is missing, as for the kernel."""
    if not path:
        return Walked("/", "ENOENT")
    parts = _parts(path)
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue  # what was reached before it was checked to be a directory (it was not the last)
        if name == "..":
            if done:
                done.pop()
            continue
        cur = _join([*done, name])
        last = not parts
        kind = kind_of(cur)
        if kind is None:
            return Walked(cur, "ENOENT")
        if kind == "symlink" and (follow_last or not last):
            links += 1
            if links > MAX_LINKS:
                return Walked(cur, "ELOOP")
            target = link_of(cur)
            if not target:
                return Walked(cur, "ENOENT")
            if target.startswith("/"):
                done = []
            parts = _parts(target) + parts
            continue
        if not last and kind != "dir":
            return Walked(cur, "ENOTDIR")
        done.append(name)
    return Walked(_join(done))


__all__ = ["MAX_LINKS", "Walked", "walk"]
