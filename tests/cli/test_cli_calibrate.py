"""``soci-lab calibrate`` and the host profile on the command line (issue 17, point 1): usage errors, a bad
profile file in one line, and for real (root): the quick suite saves a profile that ``simulate --profile``
and ``compare --sim`` predict from, the latter labelled by where its parameters came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import soci_lab


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["calibrate", "--networks", "100"], "needs a unit (examples: 100Mbit"),
        (["calibrate", "--networks", "100Mbit+20"], "needs a unit (examples: 20ms"),
        (["calibrate", "--repeat", "0"], "--repeat"),
        (["compare", "127.0.0.1:1/x:y", "--out", "d", "--in-sample"], "give --sim too"),
        (["compare", "127.0.0.1:1/x:y", "--out", "d", "--sim", "--in-sample", "--profile", __file__],
         "not allowed with argument"),
        (["simulate", "--image", "synthetic:1,size=4MiB,layers=1", "--mode", "lazy", "--network", "1Gbit"],
         "give --profile too"),
    ],
    ids=["rate-unit", "rtt-unit", "repeat-0", "in-sample-without-sim", "profile-and-in-sample", "network-no-profile"],
)
def test_usage_errors_exit_2(argv: list[str], says: str) -> None:
    proc = soci_lab(*argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and says in proc.stderr, proc.stderr


def test_a_bad_profile_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "profile.json"
    bad.write_text('{"format": "soci_lab.host-profile/9"}')
    proc = soci_lab("simulate", "--image", "synthetic:1,size=4MiB,layers=1", "--mode", "lazy", "--profile", str(bad))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "run soci-lab calibrate again" in lines[0]


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("profile") / "sub" / "host.json"
    proc = soci_lab("calibrate", "--quick", "--out", str(out), "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.root
def test_calibrate_quick_saves_a_profile(quick_profile: dict) -> None:
    made = quick_profile
    data = json.loads(Path(made["profile"]).read_text())
    assert data["format"] == made["format"] == "soci_lab.host-profile/1"
    assert made["suite"]["networks"] == ["loopback", "200Mbit+10ms"] and made["suite"]["runs"] == 18
    assert all(i["name"].startswith("cal-") and i["digest"].startswith("sha256:") for i in made["suite"]["images"])
    assert {i["compression"] for i in made["suite"]["images"]} == {"gzip", "zstd"}
    params = made["parameters"]
    for entry in params.values():
        assert set(entry) == {"value", "uncertainty", "samples", "warning"}
        # never a silent zero or a value without its reason: unidentified ones say why
        assert entry["value"] is not None or entry["warning"] is not None or entry["samples"] in (None, 0)
    for name in ("start_s", "mount_s", "overlay_mount_s", "decompress_rate.gzip", "link.overhead_s"):
        assert params[name]["value"] is not None and params[name]["value"] > 0, name
        assert params[name]["samples"] >= 1, name
    assert params["link.efficiency"]["value"] == pytest.approx(1.0, abs=0.5)


@pytest.mark.slow
@pytest.mark.root
def test_simulate_and_compare_predict_from_the_profile(quick_profile: dict, sample_ref: str, tmp_path: Path) -> None:
    image = ["--image", "synthetic:3,size=8MiB,layers=2,min_layer=1MiB", "--mode", "parallel", "--json"]
    slow = json.loads(soci_lab("simulate", *image, "--profile", quick_profile["profile"], "--network",
                               "20Mbit+50ms").stdout)  # fmt: skip
    fast = json.loads(soci_lab("simulate", *image, "--profile", quick_profile["profile"]).stdout)
    assert slow["ready_s"] > fast["ready_s"] + 8 * (1 << 20) / 2.5e6 * 0.8  # the named 20 Mbit, not the suite's
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,op,path,offset,size\n0.0,read,/app/run.sh,0,4096\n")
    rows = {}
    for how in ([], ["--in-sample"]):
        out = tmp_path / f"out{len(how)}"
        proc = soci_lab("compare", sample_ref, "--out", str(out), "--modes", "lazy", "--sim", "--trace", str(trace),
                        "--json", *(how or ["--profile", quick_profile["profile"]]), timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[tuple(how)] = result = json.loads(proc.stdout)
        assert {r["source"] for r in result["summary"]} == {"real", "sim"}
    assert rows[()]["calibration"] == "host profile"
    assert any("simulated from the host profile" in n for n in rows[()]["notes"])
    assert rows[("--in-sample",)]["calibration"] == "in-sample"
    assert any(n.startswith("in-sample:") for n in rows[("--in-sample",)]["notes"])
