"""Fixtures of the CLI room: a state root and temp dir of our own, and the demo's sample image (small scale:
it has a shell and a workload) in the embedded registry with a v2 SOCI index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from privateroots import private_roots


@pytest.fixture(scope="session", autouse=True)
def cli_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Every test here keeps its mounts' state and its temp files under the session's base temp dir."""
    base = tmp_path_factory.mktemp("cliroot")
    roots = {"state": base / "state", "tmp": base / "tmp"}
    roots["tmp"].mkdir()
    with private_roots(roots["state"], roots["tmp"]):
        yield roots


@pytest.fixture(scope="session")
def sample_ref(embedded_registry, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    """The sample image (scale 0.05) in the embedded registry, with a v2 SOCI index (1 MiB spans)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_sample_image

    base = tmp_path_factory.mktemp("clisample")
    ref = embedded_registry.ref("cli/sample", "v1")
    build_sample_image(ref, base / "trees", scale=0.05)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=256 << 10)
    return ref
