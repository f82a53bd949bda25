"""Recipes, cache keys, the machine's mirror, and the published numbers CSV — no build needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from soci_lab.datasets import RECIPES, get_recipe, published_numbers
from soci_lab.datasets.build import dataset_key
from soci_lab.datasets.debian import debian_mirror
from soci_lab.errors import DatasetError
from soci_lab.workload import Readiness


def test_recipes_are_complete() -> None:
    assert {"minbase", "python-pandas", "nodejs", "postgresql"} <= set(RECIPES)
    for r in RECIPES.values():
        Readiness.parse(r.readiness)  # valid rule
        assert r.cmd and r.cmd[0].startswith("/")
        assert r.layer_names[0] == "base" and len(r.layer_names) >= 2
        assert r.layer_names[-1] == "application"
        for step in r.steps:
            assert step.created_by
            assert all(p.startswith("/") for p in step.files)
    assert get_recipe("python-pandas").steps[-1].packages == ("python3-pandas",)
    assert "nodejs" in get_recipe("nodejs").steps[0].packages
    assert get_recipe("postgresql").user == "postgres"
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; known: minbase"):
        get_recipe("nope")


def test_cache_key_follows_recipe_and_suite_state() -> None:
    r = get_recipe("minbase")
    state = {"date": "Sat, 11 Jul 2026 10:16:37 UTC", "packages_sha256": "ab" * 32}
    k = dataset_key(r, "bookworm", "amd64", state)
    assert k == dataset_key(r, "bookworm", "amd64", dict(state))
    assert k != dataset_key(r, "bookworm", "amd64", {**state, "date": "later"})
    assert k != dataset_key(r, "trixie", "amd64", state)
    assert k != dataset_key(r, "bookworm", "arm64", state)
    changed = dataclasses.replace(r, cmd=("/bin/true",))
    assert k != dataset_key(changed, "bookworm", "amd64", state)
    assert k != dataset_key(get_recipe("nodejs"), "bookworm", "amd64", state)


def test_mirror_from_one_line_and_deb822_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCI_LAB_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "etc/apt/sources.list.d"
    apt.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb [arch=amd64] http://one-line.invalid/debian-security bookworm-security main\n"
    )
    (apt / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb822.invalid/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    root = str(tmp_path) + "/"
    assert debian_mirror("bookworm", root) == "http://deb822.invalid/debian"
    (tmp_path / "etc/apt/sources.list").write_text("deb http://one-line.invalid/debian bookworm main contrib\n")
    assert debian_mirror("bookworm", root) == "http://one-line.invalid/debian"
    with pytest.raises(DatasetError, match="SOCI_LAB_DEBIAN_MIRROR"):
        debian_mirror("sid", root)
    monkeypatch.setenv("SOCI_LAB_DEBIAN_MIRROR", "http://env.invalid/debian/")
    assert debian_mirror("sid", root) == "http://env.invalid/debian"


def test_published_numbers_have_sources() -> None:
    frame = published_numbers()
    assert list(frame.columns) == ["system", "metric", "workload", "value", "unit", "tag", "source"]
    assert len(frame) >= 100
    assert frame["source"].notna().all() and (frame["source"].str.len() > 5).all()
    assert set(frame["tag"]) <= {"V", "S", "R"}
    assert not frame.duplicated(["system", "metric", "workload"]).any()
    slacker = frame[(frame.system == "Slacker") & (frame.metric == "fraction_of_pulled_data_read")]
    assert slacker["value"].tolist() == [6.4]
    nydus = frame[(frame.system == "Nydus") & (frame.metric.str.startswith("fraction_read"))]
    assert sorted(nydus["value"]) == [6.0, 8.2]
