"""Fixtures of the store tests: a registry of our own, small images pushed to it, a store in a background
thread (helpers in ``storetools.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storetools import PLATFORM, SPAN, STORE_TOKEN, Images

from soci_lab.netlab import EmbeddedRegistry
from soci_lab.store import ArtifactStore, BuildSettings


@pytest.fixture(scope="module")
def store_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(root=tmp_path_factory.mktemp("store-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def images(store_registry: EmbeddedRegistry, tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(store_registry, tmp_path_factory.mktemp("store-images"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore(db=tmp_path / "hermes.db", platform=PLATFORM,
                       settings=BuildSettings(span_size=SPAN, min_layer_size=0), build_token=STORE_TOKEN) as s:
        yield s
