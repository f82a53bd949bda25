"""The whole-layer inflate rate from a suite whose layers differ in what bounds them (issue 17, point 1): a
layer of many small files is apply-bound (its inflate thread waits for the applier, so its rate is a lower
bound), one of large files inflates at the host's rate. The fit takes the tightest bound, not the median."""

from __future__ import annotations

import pandas as pd
import pytest

from soci_lab.sim import fit


def _layer(run: str, layer: str, nbytes: int, seconds: float) -> dict:
    return dict(run_id=run, source="real", strategy="sequential", kind="decompress", t_start=1.0,
                t_end=1.0 + seconds, layer=layer, span=None, bytes=nbytes, path=None, ok=True, error=None,
                attrs={"compression": "gzip", "compressed_bytes": nbytes // 3})  # fmt: skip


def test_the_highest_layer_rate_is_the_inflate_rate() -> None:
    rows = [_layer("a", "sha256:small1", 5_000_000, 0.05), _layer("a", "sha256:small2", 6_000_000, 0.06),
            _layer("b", "sha256:small1", 5_000_000, 0.045), _layer("b", "sha256:big", 40_000_000, 0.1),
            _layer("c", "sha256:big", 40_000_000, 0.098)]  # fmt: skip
    cal = fit(pd.DataFrame(rows))
    # 100-111 MB/s where apply held the inflater back, 400-408 MB/s where it did not
    assert cal.layer_decompress_rate["gzip"] == pytest.approx(40_000_000 / 0.098, rel=1e-9)
    assert cal.samples["layer_decompress_gzip"] == 5
    assert 0 < cal.uncertainty["layer_decompress_rate.gzip"] < 0.5 * cal.layer_decompress_rate["gzip"]


def test_a_fuse_copy_slower_than_any_real_one_is_refused() -> None:
    """54 cache-hit reads of one size on a loaded host gave 13 ± 11 MB/s for a FUSE copy (1 s for 13 MB of a
    held-out image): a rate no FUSE copy has is refused with a warning, the base parameters' rate stands."""
    from soci_lab.sim.calibrate import Calibration, _vet

    cal = Calibration()
    cal.host.fuse_read_rate = 13.3e6
    cal.uncertainty["fuse_read_rate"] = 11.4e6
    _vet(cal)
    assert cal.fuse_read_rate is None and "outside" in cal.warnings["fuse_read_rate"]
