"""A lazy mount with the Hermes-compatible artifact store (``--artifact-store``): the store is asked first
and its index is used without any registry discovery; with the store down and no registry fallback the
image has no index, so it is pulled eagerly — the decision flow of hermes.md §2.4 through the Filesystem."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_snapshot_lab import TRACE

from soci_lab import lab
from soci_lab.config import Config
from soci_lab.images import copy_image
from soci_lab.store import ArtifactStore, BuildSettings, request_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture(scope="module")
def hermes(
    distribution_registry, small_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(ref, store URL): the small image, not indexed in the registry, built into a running store."""
    ref = distribution_registry.ref("snap/hermes", "v1")
    copy_image(f"oci:{small_layout}:v1", ref, insecure=True)
    db = tmp_path_factory.mktemp("hermes") / "hermes.db"
    with ArtifactStore(db=db, settings=BuildSettings(span_size=1 << 20, min_layer_size=1 << 20)) as store:
        state = request_build(store.url, ref, wait=True, timeout=180)
        assert state["status"] == "Ready", state
        yield ref, store.url


def _quiet() -> Config:
    cfg = Config()
    cfg.background_fetch.disable = True
    return cfg


def test_lazy_mount_uses_the_store_and_skips_registry_discovery(hermes) -> None:  # type: ignore[no-untyped-def]
    ref, url = hermes
    cfg = _quiet()
    cfg.pull_modes.soci_v1.enable = True  # both registry discoveries on: neither may run
    run = lab.pull(ref, "lazy", trace=TRACE, config=cfg, artifact_store=url, insecure=True)
    assert run.provenance["found_via"] == "hermes"
    assert "lazy" in {lay["how"] for lay in run.provenance["layers"]}
    assert run.provenance["replay"]["failed"] == 0
    http = run.events[run.events["kind"] == "http_request"]
    registry = http[~http["host"].map(lambda h: str(h or "") in url)]
    assert not registry["path"].str.contains("/referrers/").any(), "v1 discovery ran despite the store"
    manifests = registry[registry["path"].str.contains("/manifests/")]["path"]
    # resolution reads REF's manifest once; v2 discovery would read the platform manifest a second time
    assert not manifests.duplicated().any(), f"v2 discovery ran despite the store: {list(manifests)}"
    assert (run.events["kind"] == "span_fetch").any()


def test_store_down_without_registry_fallback_pulls_eagerly(hermes) -> None:  # type: ignore[no-untyped-def]
    ref, _url = hermes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = lab.pull(ref, "lazy", config=_quiet(), artifact_store=dead, insecure=True)
    assert [lay["how"] for lay in run.provenance["layers"]] == ["sequential"] * 3
    assert "Hermes" in run.provenance["fallback"] and run.provenance["fallback"].startswith("NoIndex")
