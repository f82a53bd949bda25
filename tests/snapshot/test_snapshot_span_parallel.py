"""A parallel eager mount inflates the layers its SOCI index has zTOCs for span-parallel (issue 5 item 6).

Real parts throughout: the images are in the real distribution registry (conftest), discovery is lazy mode's,
the rootfs is compared with ``umoci raw unpack``. The ``decompress`` event says which inflater ran per layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from treecmp import diff_trees

from soci_lab import lab
from soci_lab.images import copy_image
from soci_lab.snapshot.filesystem import SPAN_PARALLEL_MIN_LAYER_SIZE
from soci_lab.unpack.spanpar import DEFAULT_MIN_LAYER_SIZE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _inflaters(ev: pd.DataFrame) -> dict[str, str]:
    """``{layer digest: impl}`` of the run's decompress events."""
    dec = ev[ev["kind"] == "decompress"]
    return dict(zip(dec["layer"], dec["impl"], strict=True))


def _requests_for(ev: pd.DataFrame, digest: str) -> int:
    """How many HTTP requests named ``digest`` (e.g. the SOCI index) in their path."""
    req = ev[ev["kind"] == "http_request"]
    hexpart = digest.split(":", 1)[1]
    return int(req["path"].fillna("").str.contains(hexpart).sum())


def test_the_default_threshold_is_spanpar_s() -> None:
    assert SPAN_PARALLEL_MIN_LAYER_SIZE == DEFAULT_MIN_LAYER_SIZE


def test_indexed_layers_inflate_span_parallel_and_the_tree_is_umoci_s(  # type: ignore[no-untyped-def]
    realistic_image, umoci_rootfs: Path, mnt: Path
) -> None:
    with lab.mounted(
        realistic_image.ref, mnt, mode="parallel", insecure=True, span_parallel_min_layer_size=1 << 20
    ) as m:
        problems = diff_trees(umoci_rootfs, mnt)
        hows = [lay.plan.how for lay in m.layers]
        digests = [lay.plan.digest for lay in m.layers]
        arts = m.plan.artifacts
    assert problems == [], "\n".join(problems[:40])
    assert hows == ["parallel"] * 4
    assert arts is not None and str(arts.digest) == realistic_image.index_digest
    indexed = [d for d in digests if arts.has_ztoc(d)]
    assert len(indexed) == 2  # layers 2 and 3 are under the index's 1 MiB minimum
    assert all(arts.ztoc_for(d).span_count >= 2 for d in indexed)
    ev = m.events()
    impl = _inflaters(ev)
    assert set(impl) == set(digests)
    for d in digests:
        if d in indexed:
            assert impl[d].startswith("span-parallel/"), (d, impl[d])
        else:
            assert not impl[d].startswith("span-parallel"), (d, impl[d])
    verified = ev[(ev["kind"] == "verify") & ev["ok"]]
    assert set(verified["layer"]) == set(digests)  # every layer's digest and diffID checked as always


def test_below_the_threshold_no_discovery_runs(realistic_image, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    with lab.mounted(realistic_image.ref, mnt, mode="parallel", insecure=True) as m:
        arts = m.plan.artifacts
    ev = m.events()
    assert arts is None
    assert _requests_for(ev, realistic_image.index_digest) == 0  # upstream's parallel mode: no SOCI lookup
    assert not any(v.startswith("span-parallel") for v in _inflaters(ev).values())


def test_an_image_without_index_mounts_with_the_serial_inflater(  # type: ignore[no-untyped-def]
    distribution_registry, small_layout: Path, mnt: Path, tmp_path: Path
) -> None:
    ref = distribution_registry.ref("snap/spanpar-noindex", "v1")
    copy_image(f"oci:{small_layout}:v1", ref, insecure=True)
    with lab.mounted(ref, mnt, mode="parallel", insecure=True, span_parallel_min_layer_size=0) as m:
        names = sorted(p.relative_to(mnt).as_posix() for p in mnt.rglob("*"))
        arts = m.plan.artifacts
        n_layers = len(m.layers)
    with lab.mounted(ref, tmp_path / "seq", mode="sequential", insecure=True) as s:
        seq_names = sorted(p.relative_to(s.mountpoint).as_posix() for p in s.mountpoint.rglob("*"))
    assert arts is None
    assert names and names == seq_names
    impl = _inflaters(m.events())
    assert len(impl) == n_layers
    assert not any(v.startswith("span-parallel") for v in impl.values())
