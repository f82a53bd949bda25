"""Fixtures of the datasets room: the leak check (shared with the workload room) and the one real
dataset build the default test run makes — ``minbase``, cached across sessions in the dataset cache."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("wltools", Path(__file__).parents[1] / "workload" / "wltools.py")
assert _spec is not None and _spec.loader is not None
wltools = sys.modules.get("wltools") or importlib.util.module_from_spec(_spec)
if "wltools" not in sys.modules:
    sys.modules["wltools"] = wltools
    _spec.loader.exec_module(wltools)


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail a test that leaves a mount, a process or one of our temporary directories behind (under the
    test's temporary directories, or a minbase build in the dataset cache)."""
    from soci_lab.datasets import cache_root

    before, tmp_before = wltools.mounts(), wltools.our_tmp_dirs()
    kids = frozenset(wltools.children_of(os.getpid()))
    yield
    prefixes = [os.path.realpath(tmp_path_factory.getbasetemp()) + "/", str(cache_root() / "minbase-")]
    problems = wltools.leak_report(before, tmp_before, prefixes, kids)
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def minbase_build():
    """The real ``minbase`` dataset (debootstrap + a script layer), built once and cached across sessions."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, mount)")
    from soci_lab.datasets import build_dataset

    return build_dataset("minbase")
