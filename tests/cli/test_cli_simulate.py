"""``simulate --image REF`` from a registry (issue 16, point 7): the image model read from the registry is
the one read from an OCI layout holding the same image, with its SOCI index or without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import soci_lab

KEYS = ("ready_s", "workload_done_s", "bytes_fetched", "requests", "bytes_written", "fraction_read",
        "files_read", "bytes_read", "spans_total", "layers")


def _sim(image: str, mode: str, *extra: str) -> dict:
    proc = soci_lab("simulate", "--image", image, "--mode", mode, "--read-fraction", "0.3", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return {k: doc[k] for k in KEYS}


@pytest.mark.parametrize("mode", ["lazy", "sequential"])
def test_a_registry_image_with_a_soci_index(sample_ref: str, tmp_path: Path, mode: str) -> None:
    layout = tmp_path / "layout"
    copied = soci_lab("image", "copy", sample_ref, f"oci:{layout}:v1")
    assert copied.returncode == 0, copied.stderr
    from_registry = _sim(sample_ref, mode)
    assert from_registry == _sim(f"oci:{layout}:v1", mode)
    if mode == "lazy":
        assert from_registry["spans_total"] > 0  # the index's zTOCs were read
        saved = tmp_path / "model.json"
        assert soci_lab("simulate", "--image", sample_ref, "--mode", "lazy", "--save-image", str(saved)).returncode == 0
        model = json.loads(saved.read_text())
        assert sample_ref.split("/")[-1] in json.dumps(model)[:2000]  # named after the REF


def test_a_registry_image_without_an_index(embedded_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from soci_lab.images import build_sample_image

    ref = embedded_registry.ref("cli/plain", "v1")
    build_sample_image(ref, tmp_path / "trees", scale=0.05)
    layout = tmp_path / "layout"
    assert soci_lab("image", "copy", ref, f"oci:{layout}:v1").returncode == 0
    args = ("--span-size", "512KiB", "--min-layer-size", "256KiB")
    from_registry = _sim(ref, "lazy", *args)
    assert from_registry == _sim(f"oci:{layout}:v1", "lazy", *args)
    assert from_registry["spans_total"] > 0  # zTOCs built here, at --span-size


def test_a_missing_image_is_one_line(embedded_registry) -> None:  # type: ignore[no-untyped-def]
    proc = soci_lab("simulate", "--image", embedded_registry.ref("cli/none", "v1"), "--mode", "lazy")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
