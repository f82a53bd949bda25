"""The real thing, on the smallest recipe: ``minbase`` built by debootstrap (cached across sessions — the
first build takes 1-2 minutes, later runs a second), its layers, its OCI image, its startup recorded, and
the ``soci-lab dataset`` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from soci_lab.cli import main
from soci_lab.datasets import export_image, record_startup
from soci_lab.oci import OCILayout
from soci_lab.workload import mounts_under, run_in_rootfs

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_minbase_layers(minbase_build) -> None:
    b = minbase_build
    assert [lay["name"] for lay in b.layers] == ["base", "application"]
    base, app = (Path(lay["path"]) for lay in b.layers)
    assert (base / "usr/bin/dpkg").is_file() and (base / "etc/debian_version").is_file()
    assert (base / "usr/share/doc").is_dir() and any((base / "usr/share/doc").iterdir())
    assert list((base / "dev").iterdir()) == [] and list((base / "proc").iterdir()) == []
    assert not list((base / "var/lib/apt/lists").glob("*_Packages"))  # cleaned like a RUN line
    # the application layer: the script, and one whiteout per removed doc directory
    assert (app / "app/hello.sh").stat().st_mode & 0o777 == 0o755
    docs = sorted(p.name for p in (base / "usr/share/doc").iterdir())
    whiteouts = sorted(p.name for p in (app / "usr/share/doc").iterdir())
    assert whiteouts == [f".wh.{d}" for d in docs]
    assert not (app / "usr/bin").exists() and not (app / "usr/sbin").exists()  # untouched: not carried
    assert b.image_bytes == sum(lay["uncompressed_size"] for lay in b.layers)
    assert 50 << 20 < b.image_bytes < 400 << 20
    assert b.packages["dash"] and b.suite["arch"]


def test_minbase_image_and_export(minbase_build, tmp_path: Path) -> None:
    b = minbase_build
    layout = OCILayout(b.image.removeprefix("oci:").rsplit(":", 1)[0], create=False)
    assert layout.resolve("latest").digest == b.manifest_digest
    for lay in b.layers:
        assert layout.size(lay["digest"]) == lay["size"]
    digest = export_image(b, f"oci:{tmp_path / 'copy'}:v1")
    assert digest == b.manifest_digest  # deterministic layer tars: the same image again


def test_minbase_runs_and_records(minbase_build, tmp_path: Path) -> None:
    b = minbase_build
    rootfs = tmp_path / "rootfs"
    os.system(f"cp -a {b.rootfs} {rootfs}")
    r = run_in_rootfs(rootfs, b.recipe["cmd"], b.recipe["readiness"], 30)
    assert r.ready and any(line.startswith("hello from Debian GNU/Linux") for line in r.output_tail)
    assert mounts_under(rootfs) == []
    rec, doc = record_startup(b, trace_out=tmp_path / "t.csv", json_out=tmp_path / "s.json")
    assert rec.mapped_pages
    assert ("open", "/app/hello.sh") in {(row.op, row.path) for row in rec.trace}
    assert ("read", "/etc/os-release") in {(row.op, row.path) for row in rec.trace} or \
        ("read", "/usr/lib/os-release") in {(row.op, row.path) for row in rec.trace}
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["fraction_read"] == pytest.approx(doc["bytes_read"] / b.image_bytes)
    assert 0.001 < saved["fraction_read"] < 0.2
    assert saved["bytes_read_syscalls"] <= saved["bytes_read"]


def test_dataset_cli(minbase_build, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "list", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)["datasets"]]
    assert {"minbase", "python-pandas", "nodejs", "postgresql"} <= set(names)
    assert main(["dataset", "build", "minbase", "--json", "--out", f"oci:{tmp_path / 'out'}:t"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cached"] is True and doc["out_digest"] == minbase_build.manifest_digest
    assert main(["dataset", "build", "nope"]) == 1
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_umoci_unpacks_the_image_into_the_built_rootfs(minbase_build, tmp_path: Path) -> None:
    """Interop: a standard unpacker (umoci) applying the layers, whiteouts included, gives the rootfs the
    recipe built (device nodes aside: /dev, /proc, /sys stay empty in images)."""
    import shutil
    import subprocess

    from soci_lab.datasets import snapshot_tree

    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed: run scripts/setup.sh")
    layout = minbase_build.image.removeprefix("oci:")
    subprocess.run(["umoci", "raw", "unpack", "--image", layout, str(tmp_path / "u")], check=True,
                   capture_output=True)

    def view(root: str) -> dict[str, tuple]:
        return {p: (m.kind, m.mode, m.uid, m.gid, m.size, m.target, m.mtime_ns if m.kind == "f" else 0)
                for p, m in snapshot_tree(root).items()}

    assert view(str(tmp_path / "u")) == view(minbase_build.rootfs)


def test_committed_trace_replays_on_the_build(minbase_build) -> None:
    """The committed startup trace of minbase names only paths the built image has (same build key)."""
    from soci_lab.workload import load_trace, replay_trace

    here = Path(__file__).resolve().parents[2] / "datasets" / "minbase"
    doc = json.loads((here / "startup.json").read_text())
    if doc["dataset_key"] != minbase_build.key:
        pytest.skip("the committed trace was recorded from another build of minbase (suite moved on)")
    result = replay_trace(minbase_build.rootfs, load_trace(here / "startup-trace.csv"), strict_size=True)
    assert result.failed == 0, result.errors
    assert result.rows == doc["rows"]


@pytest.mark.distribution
def test_dataset_pushed_to_the_distribution_registry(minbase_build, distribution_registry,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``dataset build --out HOST/REPO:TAG`` pushes the same image (same digest) to a real registry."""
    from soci_lab.images import verify_image

    ref = distribution_registry.ref("datasets/minbase")
    assert main(["dataset", "build", "minbase", "--out", ref]) == 0
    assert capsys.readouterr().out.strip() == minbase_build.manifest_digest
    verified = verify_image(ref)
    assert str(verified.digest) == minbase_build.manifest_digest


def test_unreachable_mirror_uses_the_cached_build(minbase_build, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, the cache key cannot be known: the cached build is used instead of failing or rebuilding."""
    from soci_lab.datasets import build_dataset, debian

    monkeypatch.setattr(debian, "suite_state", lambda *a: ({"date": "unknown", "packages_sha256": "unknown"}, False))
    again = build_dataset("minbase")
    assert again.cached and again.key == minbase_build.key and again.manifest_digest == minbase_build.manifest_digest
