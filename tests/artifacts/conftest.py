"""Fixtures of the artifacts room: async tests run under asyncio (and trio where a test asks for both)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
