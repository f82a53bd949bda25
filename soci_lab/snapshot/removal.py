"""Removing a directory tree of any depth: iteratively, through descriptors, never leaving its filesystem.

``shutil.rmtree`` recurses once per directory level: an image of 1,200 nested directories unpacked into a
state directory made it raise ``RecursionError`` (which ``ignore_errors`` does not catch), so ``umount``
failed and left the state behind, on every retry. :func:`remove_tree` walks the tree with an explicit stack
instead, and holds one directory descriptor at a time (not one per level, so depth cannot exhaust the
process's descriptors nor ``PATH_MAX`` bound it):

* every step is relative to a directory descriptor opened with ``O_NOFOLLOW``: a symlink is unlinked, never
  followed, and a directory swapped for a symlink mid-way is refused by the kernel;
* the way back up goes through ``..`` and is checked against the device and inode recorded on the way down,
  so a directory moved away meanwhile stops the removal instead of deleting elsewhere;
* a directory on another filesystem than the top one (a mount left inside, e.g. a busy FUSE mount or a
  bind mount) is not entered: it and its parents stay, and it is reported.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeRemovalError(OSError):
    """What :func:`remove_tree` could not remove (with ``ignore_errors=False``)."""


@dataclass
class _Level:
    name: str  # the name of this directory in its parent
    dev: int
    ino: int
    pending: list[str] = field(default_factory=list)  # subdirectories still to remove


def remove_tree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> list[str]:
    """Remove ``path`` and everything under it (a file or symlink is just unlinked); returns the problems
    met, as ``"<path>: <why>"`` lines (empty when all is gone). With ``ignore_errors=False`` the first problem
    raises :class:`TreeRemovalError` after the rest of the tree was still removed as far as possible."""
    top = os.fspath(path)
    problems: list[str] = []
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return problems
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(top)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{top}: {exc.strerror}")
        return _done(problems, ignore_errors)
    try:
        fd = os.open(top, _DIR_FLAGS)
    except OSError as exc:
        problems.append(f"{top}: {exc.strerror}")
        return _done(problems, ignore_errors)
    root_dev = os.fstat(fd).st_dev
    stack = [_Level("", st.st_dev, st.st_ino)]
    try:
        _scan(fd, stack[-1], root_dev, top, problems)
        while True:
            level = stack[-1]
            if level.pending:
                name = level.pending.pop()
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    problems.append(f"{_where(top, stack, name)}: {exc.strerror}")
                    continue
                cst = os.fstat(child)
                if cst.st_dev != root_dev:
                    os.close(child)
                    problems.append(f"{_where(top, stack, name)}: another filesystem is mounted there; left alone")
                    continue
                os.close(fd)
                fd = child
                stack.append(_Level(name, cst.st_dev, cst.st_ino))
                _scan(fd, stack[-1], root_dev, top, problems)
                continue
            if len(stack) == 1:
                break
            # this directory is emptied (or holds what could not go): back to its parent, then rmdir it
            done = stack.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            pst = os.fstat(fd)
            if (pst.st_dev, pst.st_ino) != (stack[-1].dev, stack[-1].ino):
                problems.append(f"{_where(top, stack, done.name)}: moved while being removed; stopped")
                return _done(problems, ignore_errors)
            try:
                os.rmdir(done.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY or not problems:
                    problems.append(f"{_where(top, stack, done.name)}: {exc.strerror}")
    finally:
        os.close(fd)
    try:
        os.rmdir(top)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY or not problems:
            problems.append(f"{top}: {exc.strerror}")
    return _done(problems, ignore_errors)


def _scan(fd: int, level: _Level, root_dev: int, top: str, problems: list[str]) -> None:
    """Unlink every non-directory in ``fd``; note its subdirectories in ``level.pending``."""
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    level.pending.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{top}/…/{entry.name}: {exc.strerror}")


def _where(top: str, stack: list[_Level], name: str) -> str:
    depth = len(stack) - 1
    inner = "/".join(level.name for level in stack[1:4])
    if depth > 3:
        inner += f"/…({depth - 3} more levels)"
    return "/".join(p for p in (top, inner, name) if p)


def _done(problems: list[str], ignore_errors: bool) -> list[str]:
    if problems and not ignore_errors:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TreeRemovalError(f"cannot remove {problems[0]}{more}")
    return problems


__all__ = ["TreeRemovalError", "remove_tree"]
