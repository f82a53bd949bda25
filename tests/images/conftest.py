"""Fixtures for the images room."""

from __future__ import annotations

from pathlib import Path

import pytest
from imgtools import make_rich_tree


@pytest.fixture
def rich_tree(tmp_path: Path) -> Path:
    """A tree with every file type, odd modes and owners, xattrs, hard links and long names."""
    return make_rich_tree(tmp_path / "rich")
