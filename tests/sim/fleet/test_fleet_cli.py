"""``soci-lab fleet``: one JSON object with the fleet's percentiles and per-pool rows, files on request, one
clear line and exit code 1 on bad input."""

from __future__ import annotations

import json

import pandas as pd

from soci_lab.cli import main


def test_fleet_prints_one_json_object_and_writes_groups_and_events(tmp_path, capsys) -> None:
    groups, events = tmp_path / "groups.csv", tmp_path / "events.csv"
    rc = main(["fleet", "--image", "synthetic:2,size=12MiB,layers=2,min_layer=1MiB", "--mode", "lazy",
               "--hosts", "40", "--egress", "400Mbit", "--arrivals", "waves", "--wave-size", "10",
               "--wave-interval", "50ms", "--warm-fraction", "0.25", "--read-fraction", "0.05", "--sample", "2",
               "--groups-out", str(groups), "--events", str(events), "--json"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hosts"] == 40 and out["mode"] == "lazy" and out["source"] == "sim" and out["exit_code"] == 0
    assert out["ready_p50_s"] <= out["ready_p90_s"] <= out["ready_p99_s"]
    assert [p["hosts"] for p in out["by_pool"]] == [30, 10]
    g = pd.read_csv(groups)
    assert g.members.sum() == 40 and set(g.arrival_s.round(3)) == {0.0, 0.05, 0.1, 0.15}
    ev = pd.read_csv(events)
    assert set(ev.host) == {0, 1} and (ev.t_end >= ev.t_start).all()


def test_fleet_refuses_bad_input_in_one_line(capsys) -> None:
    for argv, msg in (
        (["--hosts", "0"], "--hosts must be at least 1"),
        (["--hosts", "2", "--warm-layers", "x"], "--warm-layers: not a list"),
        (["--hosts", "2", "--warm-layers", "9"], "--warm-layers [9] are not layers"),
        (["--hosts", "2", "--egress", "fast"], "fast"),
    ):
        rc = main(["fleet", "--image", "synthetic:2,size=4MiB,layers=2", "--mode", "parallel", *argv])
        err = capsys.readouterr().err
        assert rc == 1 and msg in err and err.count("\n") == 1, err
