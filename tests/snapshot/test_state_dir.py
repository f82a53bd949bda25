"""State directories are soci-lab's own (issue 20, finding 3): :meth:`StateDir.create` makes one or takes an
empty one and marks it; a non-empty directory without the marker is refused with nothing written; and
:meth:`StateDir.remove` deletes only the entries soci-lab makes — never anything else, never anything in
a directory without the marker. A hypothesis property over what a user may have put where, and when."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.errors import MountError
from soci_lab.snapshot.state import MARKER, OWN_ENTRIES, StateDir

#: names a user might have lying around (some of them names soci-lab uses itself)
USER_NAMES = st.sampled_from(["notes.txt", "data", "thesis.tex", ".hidden", "layers", "content", "mount.json"])
OWN = sorted(OWN_ENTRIES - {MARKER})


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _put(root: Path, name: str, as_dir: bool) -> None:
    p = root / name
    if p.exists():
        return
    if as_dir:
        p.mkdir()
        (p / "inside").write_text("x")
    else:
        p.write_text("x")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(st.tuples(USER_NAMES, st.booleans()), max_size=4),
    ours=st.lists(st.tuples(st.sampled_from(OWN), st.booleans()), max_size=5),
    later=st.lists(st.tuples(st.sampled_from(["late.txt", "late-dir", "zz"]), st.booleans()), max_size=3),
    exists=st.booleans(),
)
def test_create_and_remove_touch_only_what_soci_lab_made(
    tmp_path: Path, before: list[tuple[str, bool]], ours: list[tuple[str, bool]], later: list[tuple[str, bool]],
    exists: bool,
) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    root = base / "state"
    if exists or before:
        root.mkdir()
    for name, as_dir in before:
        _put(root, name, as_dir)
    state = StateDir(root)
    if before:  # not empty, not ours: refused, untouched, and cleanup does nothing either
        listing = _listing(root)
        with pytest.raises(MountError, match="not empty and was not made by soci-lab"):
            state.create()
        state.remove()
        assert _listing(root) == listing
        shutil.rmtree(base)
        return
    state.create()
    assert (root / MARKER).is_file() and oct((root / MARKER).stat().st_mode & 0o777) == "0o600"
    for name, as_dir in ours:  # what a mount makes
        _put(root, name, as_dir)
    for name, as_dir in later:  # what someone else drops in while it is mounted
        _put(root, name, as_dir)
    state.remove()
    survivors = sorted({n for n, _ in later})
    if not exists and not survivors:
        assert not root.exists()  # soci-lab made it and nothing else is in it: gone
    else:
        assert sorted(os.listdir(root)) == survivors  # given back as it was, plus only what others added
    shutil.rmtree(base)


def test_a_file_or_symlink_is_not_a_state_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(MountError, match="not a directory"):
        StateDir(tmp_path / "file").create()
    # a symlink to an empty directory is resolved: the directory it names is taken (and marked), not the link
    StateDir(tmp_path / "link").create()
    assert (tmp_path / "target" / MARKER).is_file()
    StateDir(tmp_path / "link").remove()
    assert os.listdir(tmp_path / "target") == []
