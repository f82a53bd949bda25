"""Fixtures of the workload room: the mini rootfs, and the leak check every test here runs under."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from wltools import children_of, leak_report, make_mini_rootfs, mounts, our_tmp_dirs


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail a test that leaves a mount, a process or one of our temporary directories behind."""
    before, tmp_before, kids = mounts(), our_tmp_dirs(), frozenset(children_of(os.getpid()))
    yield
    base = os.path.realpath(tmp_path_factory.getbasetemp())
    problems = leak_report(before, tmp_before, [base + "/"], kids)
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session")
def mini_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chroot-able tree (host programs + libraries, /etc/passwd, /data files); do not modify."""
    return make_mini_rootfs(tmp_path_factory.mktemp("mini") / "rootfs")


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, mount)")
