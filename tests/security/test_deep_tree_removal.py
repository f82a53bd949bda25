"""State directories of any depth are removed (issue 20, finding 8).

An image of 1,200 nested directories mounted fine but ``umount`` died in ``shutil.rmtree`` recursion and
left its state behind, on every retry. ``StateDir.remove`` now uses :func:`remove_tree` (iterative, one
descriptor at a time, never following symlinks, never entering another filesystem).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.snapshot.removal import TreeRemovalError, remove_tree
from soci_lab.snapshot.state import StateDir


def _deep(root: Path, depth: int, name: str = "d") -> Path:
    """``depth`` nested directories under ``root`` (made through descriptors: the path outgrows PATH_MAX)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            os.mkdir(name, dir_fd=fd)
            if i % 100 == 0:
                with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                    f.write("x")
                os.symlink("/etc", "link", dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return root


def test_state_dir_with_1200_nested_directories_is_removed(tmp_path):
    state = StateDir(tmp_path / "state").create()
    _deep(state.root / "layers", 1200)
    (state.root / "mount.json").write_text("{}")
    state.remove()
    assert not state.root.exists()
    assert Path("/etc/passwd").exists()  # the symlinks were unlinked, not followed


def test_deeper_than_path_max(tmp_path):
    _deep(tmp_path / "t", 400, name="n" * 200)  # 80,000-character paths
    assert remove_tree(tmp_path / "t") == []
    assert not (tmp_path / "t").exists()


def test_keeps_listed_names(tmp_path):
    state = StateDir(tmp_path / "state").create()
    _deep(state.root / "upper", 1100)
    (state.root / "keepme").write_text("k")
    state.remove(keep=("keepme",))
    # the marker stays with what is kept, so that a later cleanup still knows the directory is soci-lab's
    assert sorted(p.name for p in state.root.iterdir()) == [".soci-lab-state", "keepme"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_does_not_enter_a_mount_left_inside(tmp_path):
    top = tmp_path / "top"
    (top / "a" / "mnt").mkdir(parents=True)
    (top / "a" / "file").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "a" / "mnt")], check=True)
    try:
        (top / "a" / "mnt" / "precious").write_text("keep")
        with pytest.raises(TreeRemovalError, match="another filesystem is mounted there"):
            remove_tree(top)
        assert (top / "a" / "mnt" / "precious").read_text() == "keep"
        assert not (top / "a" / "file").exists()
    finally:
        subprocess.run(["umount", str(top / "a" / "mnt")], check=True)
    assert remove_tree(top) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from("abc"), min_size=1, max_size=6), st.booleans()), max_size=25))
def test_removes_any_tree(tmp_path_factory, shape):
    top = tmp_path_factory.mktemp("tree") / "t"
    top.mkdir()
    for parts, as_file in shape:
        p = top.joinpath(*parts)
        try:
            if as_file:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("x")
            else:
                p.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
    assert remove_tree(top) == []
    assert not top.exists()


CLI = "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_umount_of_an_image_of_1200_nested_directories(tmp_path, embedded_registry):
    """End to end: before, ``soci-lab umount`` exited 1 with a RecursionError and left the state behind."""
    from soci_lab.images import build_image

    tree = tmp_path / "tree"
    _deep(tree, 1200)
    (tree / "hello").write_text("hi\n")
    ref = embedded_registry.ref("security/deep", "v1")
    build_image([tree], ref)
    mnt, roots = tmp_path / "mnt", tmp_path / "stateroot"
    mnt.mkdir()
    env = {**os.environ, "SOCI_LAB_STATE_ROOT": str(roots)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env,
                              timeout=600)

    remove_tree(tree)  # pytest's own clean-up of tmp_path is shutil.rmtree, which this tree would break
    up = cli("mount", ref, str(mnt), "--mode", "sequential", "--background")
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        assert (mnt / "hello").read_text() == "hi\n"
    finally:
        down = cli("umount", str(mnt))
    assert down.returncode == 0, down.stderr[-2000:]
    assert not os.path.ismount(mnt)
    assert not roots.exists() or not any(roots.iterdir())
