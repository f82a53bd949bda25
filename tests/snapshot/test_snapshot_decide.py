"""The snapshotter's decision flow (soci-formats.md §4.3), end to end on a small three-layer image.

Layers 0 and 2 hold 3 MiB each (indexable at a 1 MiB minimum), layer 1 a few bytes (never indexed), and
layer 2 whites out a file of layer 0. Each case mounts for real and checks both how every layer was
mounted and that the rootfs is right, whatever the route.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from soci_lab import lab
from soci_lab.artifacts import create_soci_index
from soci_lab.config import Config, ParallelPullUnpackConfig, PullModesConfig, SociV1Config, SociV2Config
from soci_lab.errors import AllLazyPullModesDisabled, NoIndex
from soci_lab.events import detail
from soci_lab.snapshot import decide, mounts_under
from soci_lab.unpack import LayerSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _check_rootfs(root: Path, trees: list[Path]) -> None:
    assert (root / "data/one.bin").read_bytes() == (trees[0] / "data/one.bin").read_bytes()
    assert (root / "data/two.bin").read_bytes() == (trees[2] / "data/two.bin").read_bytes()
    assert (root / "etc/config").read_text() == "local layer\n"
    assert not (root / "etc/hostname").exists()  # whited out by layer 2


def _hows(m) -> list[str]:  # type: ignore[no-untyped-def]
    return [lay.plan.how for lay in m.layers]


def _config(**pull_modes: object) -> Config:
    cfg = Config()
    cfg.background_fetch.disable = True
    if pull_modes:
        cfg.pull_modes = PullModesConfig(**pull_modes)  # type: ignore[arg-type]
    return cfg


def test_no_index_mounts_the_whole_image_sequentially(small_copy: Path, small_trees: list[Path], mnt: Path) -> None:
    with lab.mounted(f"oci:{small_copy}:v1", mnt, mode="lazy", config=_config()) as m:
        assert _hows(m) == ["sequential"] * 3
        assert m.plan.reason.startswith("NoIndex")
        _check_rootfs(mnt, small_trees)
    assert mounts_under(mnt) == []


def test_no_index_goes_parallel_when_parallel_is_the_fallback(
    small_copy: Path, small_trees: list[Path], mnt: Path
) -> None:
    cfg = _config(parallel_pull_unpack=ParallelPullUnpackConfig(experimental_parallel_pull_as_fallback=True))
    with lab.mounted(f"oci:{small_copy}:v1", mnt, mode="lazy", config=cfg) as m:
        assert _hows(m) == ["parallel"] * 3
        _check_rootfs(mnt, small_trees)


def test_no_index_without_fallback_is_an_error(small_copy: Path, mnt: Path, snapshot_roots: dict[str, Path]) -> None:
    with (
        pytest.raises(NoIndex),
        lab.mounted(f"oci:{small_copy}:v1", mnt, mode="lazy", config=_config(), fallback=False),
    ):
        pass
    assert mounts_under(mnt) == []
    state = snapshot_roots["state"]
    assert not state.exists() or not any(state.iterdir()), "a failed mount left its state behind"


def test_sparse_index_mounts_unindexed_layers_locally(small_copy: Path, small_trees: list[Path], mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    with lab.mounted(ref, mnt, mode="lazy", config=_config()) as m:
        assert _hows(m) == ["lazy", "local", "lazy"]
        assert m.layers[1].plan.reason.startswith("NoZtoc")
        assert m.plan.artifacts.found_via == "v2"
        _check_rootfs(mnt, small_trees)
        # the local layer is a plain directory; the lazy ones are FUSE mounts served by child processes
        assert m.layers[1].path.name == "fs" and m.layers[0].mount.process.poll() is None
    ev = m.events()
    assert set(ev[ev["kind"] == "span_fetch"]["layer"]) == {m.layers[0].plan.digest, m.layers[2].plan.digest}
    local = ev[(ev["kind"] == "blob_download") & (ev["layer"] == m.layers[1].plan.digest)]
    assert len(local) == 1 and local["ok"].all()


def test_v2_disabled_finds_the_v1_index(small_copy: Path, small_trees: list[Path], mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    v1 = create_soci_index(ref, version="v1", span_size=1 << 20, min_layer_size=1 << 20)
    cfg = _config(soci_v1=SociV1Config(enable=True), soci_v2=SociV2Config(enable=False))
    with lab.mounted(ref, mnt, mode="lazy", config=cfg) as m:
        assert m.plan.artifacts.found_via == "v1" and m.plan.artifacts.digest == v1.digest
        assert _hows(m) == ["lazy", "local", "lazy"]
        _check_rootfs(mnt, small_trees)


def test_v1_index_is_not_used_with_upstream_defaults(small_copy: Path, mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, version="v1", span_size=1 << 20, min_layer_size=1 << 20)
    with lab.mounted(ref, mnt, mode="lazy", config=_config()) as m:  # soci_v1 is off by default
        assert _hows(m) == ["sequential"] * 3


def test_all_lazy_pull_modes_disabled(small_copy: Path, small_trees: list[Path], mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    cfg = _config(soci_v1=SociV1Config(enable=False), soci_v2=SociV2Config(enable=False))
    # upstream: the remote mount fails, each layer is snapshotted locally
    with lab.mounted(ref, mnt, mode="lazy", config=cfg) as m:
        assert _hows(m) == ["local"] * 3
        assert m.plan.reason.startswith("AllLazyPullModesDisabled")
        _check_rootfs(mnt, small_trees)
    with pytest.raises(AllLazyPullModesDisabled), lab.mounted(ref, mnt, mode="lazy", config=cfg, fallback=False):
        pass


def test_failed_fuse_mount_falls_back_to_local(small_copy: Path, small_trees: list[Path], mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    broken = {"missing-blob": lambda _ref, digest: {"blob_path": f"/nonexistent/{digest}"} if digest else None}
    with lab.mounted(ref, mnt, mode="lazy", config=_config(), resolve_handlers=broken) as m:
        assert _hows(m) == ["local", "local", "local"]
        assert all(lay.plan.reason.startswith("MountError") for lay in (m.layers[0], m.layers[2]))
        _check_rootfs(mnt, small_trees)
    ev = m.events()
    failed = ev[(ev["kind"] == "error") & (detail(ev, "op") == "fuse_mount")]
    assert set(failed["layer"]) == {m.layers[0].plan.digest, m.layers[2].plan.digest}


def test_explicit_index_digest_wins(small_copy: Path, mnt: Path) -> None:
    ref = f"oci:{small_copy}:v1"
    v1 = create_soci_index(ref, version="v1", span_size=1 << 20, min_layer_size=1 << 20)
    with lab.mounted(ref, mnt, mode="lazy", config=_config(), explicit_index_digest=str(v1.digest)) as m:
        assert m.plan.artifacts.found_via == "explicit" and _hows(m) == ["lazy", "local", "lazy"]


# --- the pure decision ------------------------------------------------------------------------------------


LAYERS = [LayerSpec(f"sha256:{i:064x}", 100) for i in range(3)]


class _Arts:
    digest = "sha256:" + "f" * 64

    def has_ztoc(self, d: str) -> bool:
        return d != LAYERS[1].digest


def test_decide_eager_modes_need_no_discovery() -> None:
    for mode in ("parallel", "sequential"):
        plan = decide(mode, Config(), LAYERS, None)
        assert [p.how for p in plan.layers] == [mode] * 3 and plan.eager == mode


def test_decide_lazy() -> None:
    plan = decide("lazy", Config(), LAYERS, _Arts())  # type: ignore[arg-type]
    assert [p.how for p in plan.layers] == ["lazy", "local", "lazy"] and plan.eager is None
    assert plan.hows == {"lazy": 2, "local": 1}
    no_index = decide("lazy", Config(), LAYERS, NoIndex("none"))
    assert no_index.eager == "sequential"
    cfg = Config()
    cfg.pull_modes.parallel_pull_unpack.enable = True
    assert decide("lazy", cfg, LAYERS, NoIndex("none")).eager == "parallel"
    other = decide("lazy", Config(), LAYERS, AllLazyPullModesDisabled("off"))
    assert [p.how for p in other.layers] == ["local"] * 3
    with pytest.raises(NoIndex):
        decide("lazy", Config(), LAYERS, NoIndex("none"), fallback=False)
