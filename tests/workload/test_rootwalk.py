"""The one in-root walk (``soci_lab.rootwalk``, used by the real replay's ``resolve_in_root`` and by the
simulator's ``ImageModel.resolve``) against the kernel's own: ``openat2(RESOLVE_IN_ROOT)`` on generated
trees (directories, files, symlinks relative, absolute, dangling, looping, with trailing slashes) and
generated paths (``.``, ``..``, ``//``, trailing slashes, missing names).

The two walkers this replaced dropped ``.`` and a trailing slash, so ``/file/`` and ``/file/.`` resolved to
the file where the kernel answers ENOTDIR (a process would not have read it); a symlink with an empty
target resolved to its directory. These tests fail on that code.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from soci_lab.rootwalk import walk
from soci_lab.workload.resolve import resolve_in_root

SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
RESOLVE_IN_ROOT = 0x10


def _openat2(dirfd: int, path: str, flags: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    how = struct.pack("QQQ", flags, 0, RESOLVE_IN_ROOT)
    fd = libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), how, len(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def _kernel_has_openat2() -> bool:
    if SYS_OPENAT2 is None:
        return False
    fd = os.open("/", os.O_PATH)
    try:
        os.close(_openat2(fd, ".", os.O_PATH))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


pytestmark = pytest.mark.skipif(not _kernel_has_openat2(), reason="the kernel has no openat2 (Linux >= 5.6)")

NAMES = ("a", "b", "c")
POOL = [f"{x}" for x in NAMES] + [f"{x}/{y}" for x in NAMES for y in NAMES]
TARGETS = [*POOL, "a/", "b/.", "/a", "/a/", "../b", "..", ".", "/", "/missing", "c/a/", "a/b/../c", "../../a/."]
PATH_TAILS = ["", "/", "/.", "/..", "/./", "//"]

entry = st.tuples(st.sampled_from(POOL), st.sampled_from(("dir", "file", "file", "sym")), st.sampled_from(TARGETS))
path_st = st.tuples(
    st.lists(st.sampled_from([*NAMES, ".", "..", "missing"]), min_size=0, max_size=4),
    st.sampled_from(PATH_TAILS),
    st.booleans(),
).map(lambda t: ("/" if t[2] else "") + "/".join(t[0]) + (t[1] if t[0] else ""))


def _build(root, entries) -> None:
    root.mkdir()
    for rel, kind, target in entries:
        p = root / rel
        if not p.parent.is_dir() or os.path.lexists(p):
            continue  # under a file or a link, or taken: the entry cannot be made
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_bytes(b"x")
        else:
            os.symlink(target, p)


def _kernel(root, path: str, follow_last: bool) -> tuple[str, tuple[int, int] | None]:
    """What openat2(RESOLVE_IN_ROOT) reaches: ("ok", (dev, inode)) or (errno name, None)."""
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = _openat2(dirfd, path, os.O_PATH | (0 if follow_last else os.O_NOFOLLOW))
    except OSError as exc:
        return errno.errorcode[exc.errno], None
    finally:
        os.close(dirfd)
    try:
        st_ = os.fstat(fd)
        return "ok", (st_.st_dev, st_.st_ino)
    finally:
        os.close(fd)


def _ours(root, path: str, follow_last: bool) -> tuple[str, tuple[int, int] | None]:
    try:
        host = resolve_in_root(root, path, follow_last=follow_last)
    except OSError as exc:
        return errno.errorcode[exc.errno], None
    st_ = os.lstat(host)
    return "ok", (st_.st_dev, st_.st_ino)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(entry, max_size=10), paths=st.lists(path_st, min_size=1, max_size=12),
       follow_last=st.booleans())
@example(entries=[("a", "file", "")], paths=["/a/", "/a/.", "a//", "/a/.."], follow_last=True)
@example(entries=[("a", "dir", ""), ("b", "sym", "a/"), ("c", "sym", "/b/")], paths=["/b", "/c/", "/c/.."],
         follow_last=False)
@example(entries=[("a", "sym", "a"), ("b", "sym", "../../c/."), ("c", "file", "")], paths=["/a", "/b", "b"],
         follow_last=True)
def test_the_walk_reaches_what_the_kernel_reaches_in_root(tmp_path_factory, entries, paths, follow_last):
    root = tmp_path_factory.mktemp("walk") / "root"
    _build(root, entries)
    for path in paths:
        assert _ours(root, path, follow_last) == _kernel(root, path, follow_last), path


def test_the_walk_is_pure_and_names_the_failure() -> None:
    tree = {"/a": "dir", "/a/f": "other", "/l": "symlink", "/loop": "symlink", "/empty": "symlink"}
    links = {"/l": "a/f", "/loop": "/loop", "/empty": ""}
    kind_of, link_of = tree.get, links.__getitem__
    assert walk("/l", kind_of, link_of).path == "/a/f"
    assert walk("/l", kind_of, link_of, follow_last=False).path == "/l"
    assert walk("/l/", kind_of, link_of, follow_last=False).error == "ENOTDIR"
    assert walk("/a/f/.", kind_of, link_of).error == "ENOTDIR"
    assert walk("/../../a/./f", kind_of, link_of).path == "/a/f"
    assert walk("/a/nope/x", kind_of, link_of).error == "ENOENT"
    assert walk("/loop", kind_of, link_of).error == "ELOOP"
    assert walk("/empty", kind_of, link_of).error == "ENOENT"
    assert walk("", kind_of, link_of).error == "ENOENT"
    assert walk("/", kind_of, link_of) == walk("/.", kind_of, link_of) == walk("..", kind_of, link_of)
