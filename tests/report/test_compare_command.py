"""`soci-lab compare` with a command workload: the same accesses recorded in every mode, the simulation
run on them, and a simulation failure that keeps the real results and says in one line what failed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from soci_lab.errors import SimulationError

SOCI_LAB = str(Path(sys.executable).with_name("soci-lab"))
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def sample_ref(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sample image (small scale) with a SOCI v2 index, served by the embedded registry."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_sample_image
    from soci_lab.netlab import EmbeddedRegistry

    work = tmp_path_factory.mktemp("sample")
    with EmbeddedRegistry(root=work / "registry") as reg:
        ref = f"{reg.host_port}/sample:latest"
        build_sample_image(ref, work / "trees", scale=0.3)
        create_soci_index(ref, version="v2", min_layer_size=1 << 20)
        yield ref


def test_command_accesses_are_recorded_alike_in_every_mode_and_simulated(sample_ref: str, tmp_path: Path) -> None:
    """The issue's case: eager rows had files_read 0 (only lazy's FUSE servers saw the reads), and the
    simulation then failed on the FUSE events' relative paths and wrote nothing."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [SOCI_LAB, "compare", "--sim", "--in-sample", "--json", "--out", str(out), sample_ref, "--",
         "/bin/sh", "-c", "cat /app/config/app.json /app/docs/* > /dev/null; head -c 300000 /opt/data/model.bin"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv")
    real = summary[summary["source"] == "real"].set_index("strategy")
    assert set(real.index) == {"lazy", "parallel", "sequential"}
    assert (real["files_read"] >= 10).all() and (real["bytes_read"] > 300_000).all(), real
    # one recorder for every mode: the same files and bytes, hence the same fraction of the image
    assert real["files_read"].nunique() == 1 and real["bytes_read"].nunique() == 1, real
    assert real["fraction_read"].round(9).nunique() == 1 and real["fraction_read"].iloc[0] > 0
    assert set(summary["source"]) == {"real", "sim"}
    sim = summary[summary["source"] == "sim"].set_index("strategy")
    assert (sim["files_read"] == real["files_read"].iloc[0]).all(), sim
    assert json.loads(proc.stdout)["report"] == str(out / "report.html")


def test_a_failing_simulation_keeps_the_real_report_and_names_the_step(
    sample_ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calibration is made to fail (a fake failure: the real one cannot be provoked on demand)."""
    import soci_lab.sim as sim
    from soci_lab.compare import compare

    def broken_fit(*_a: object, **_k: object) -> None:
        raise ValueError("path must be absolute\nsecond line")

    monkeypatch.setattr(sim, "fit", broken_fit)
    out = tmp_path / "out"
    with pytest.raises(SimulationError) as info:
        compare(sample_ref, ("sequential",), sim=True, cmd=["/bin/cat", "/app/config/app.json"], out=out,
                calibration="in-sample")
    message = str(info.value)
    assert "\n" not in message
    assert "calibrating the simulator" in message and "ValueError: path must be absolute" in message
    assert str(out) in message
    summary = pd.read_csv(out / "summary.csv")
    assert list(zip(summary["strategy"], summary["source"], strict=True)) == [("sequential", "real")]
    assert (out / "report.html").is_file() and (out / "events.csv").is_file()
    assert "simulation failed while calibrating" in (out / "notes.txt").read_text()
