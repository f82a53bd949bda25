"""The notebook face: ``lab.pull`` → Run in every mode, ``apull``/``mounted`` from inside a running event
loop (as in Jupyter), and the no-FUSE ``lazy_read`` path, which must fetch exactly the spans a FUSE mount
fetches for the same reads."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import pytest

from soci_lab import lab
from soci_lab.config import Config
from soci_lab.run import Run
from soci_lab.snapshot import mounts_under
from soci_lab.workload import Trace, TraceRow

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")

TRACE = Trace(
    [
        TraceRow(0.0, "open", "/data/one.bin", 0, 0),
        TraceRow(0.0, "read", "/data/one.bin", 0, 4096),
        TraceRow(0.01, "read", "/data/two.bin", 2 << 20, 4096),
        TraceRow(0.02, "read", "/etc/config", 0, 12),
    ]
)


def _quiet() -> Config:
    cfg = Config()
    cfg.background_fetch.disable = True
    return cfg


def _spans(run: Run) -> set[tuple[str, int]]:
    ev = run.events
    fetched = ev[(ev["kind"] == "span_fetch") & ev["ok"]]
    return {(str(layer), int(span)) for layer, span in zip(fetched["layer"], fetched["span"], strict=True)}


def test_pull_gives_a_run_in_every_mode(small_image, snapshot_roots) -> None:  # type: ignore[no-untyped-def]
    runs = {mode: lab.pull(small_image.ref, mode, trace=TRACE, config=_quiet(), insecure=True)
            for mode in ("lazy", "parallel", "sequential")}  # fmt: skip
    for mode, run in runs.items():
        assert isinstance(run, Run) and run.strategy == mode and run.source == "real"
        s = run.summary
        assert s["ready_s"] > 0 and math.isfinite(s["total_s"]) and s["requests"] > 0
        assert run.provenance["replay"]["failed"] == 0 and run.provenance["replay"]["ok"] == 4
        assert [lay["how"] for lay in run.provenance["layers"]] == (
            ["lazy", "local", "lazy"] if mode == "lazy" else [mode] * 3
        )
        assert (run.events["kind"] == "ready").sum() == 1
        print(f"{mode}: ready {s['ready_s']:.3f}s, {s['bytes_fetched']} B in {s['requests']} requests")
    # lazy reads 8 KiB of two 3 MiB files: the spans holding them (and their tar headers), not the image;
    # on an image this small (five 1 MiB spans in all) that is three spans, still less than everything
    assert len(_spans(runs["lazy"])) == 3
    assert runs["lazy"].summary["bytes_fetched"] < runs["parallel"].summary["bytes_fetched"]
    assert runs["parallel"].summary["bytes_fetched"] == runs["sequential"].summary["bytes_fetched"]
    # the workload read the same bytes in every mode: the FUSE servers' own reads are not counted again
    assert {run.summary["bytes_read"] for run in runs.values()} == {4096 + 4096 + 12}
    assert {run.summary["files_read"] for run in runs.values()} == {3}
    assert runs["lazy"].provenance["lazy_path"] == "fuse" and runs["lazy"].provenance["found_via"] == "v2"
    state = snapshot_roots["state"]
    assert not state.exists() or not any(state.iterdir())


def test_lazy_read_fetches_the_spans_a_fuse_mount_fetches(small_image) -> None:  # type: ignore[no-untyped-def]
    fuse = lab.pull(small_image.ref, "lazy", trace=TRACE, config=_quiet(), insecure=True)
    reader = lab.lazy_read(small_image.ref, TRACE, config=_quiet(), insecure=True)
    assert reader.provenance["lazy_path"] == "reader" and reader.provenance["read_failures"] == []
    assert sorted(_spans(reader)) == sorted(_spans(fuse)) != []
    for run in (fuse, reader):
        assert run.strategy == "lazy"
    span_bytes = [int(r.events[r.events["kind"] == "span_fetch"]["bytes"].sum()) for r in (fuse, reader)]
    assert span_bytes[0] == span_bytes[1]
    # the reader serves the same bytes a mount would
    paths = lab.lazy_read(small_image.ref, paths=["/etc/config", "/data/one.bin"], insecure=True)
    reads = paths.events[paths.events["kind"] == "file_read"]
    assert set(reads["path"]) == {"etc/config", "data/one.bin"}
    assert int(reads["bytes"].sum()) == 12 + (3 << 20)


def test_apull_and_mounted_work_inside_a_running_loop(small_image, mnt: Path) -> None:  # type: ignore[no-untyped-def]
    async def notebook_cell() -> tuple[Run, bytes]:
        run = await lab.apull(small_image.ref, "sequential", insecure=True)
        with lab.mounted(small_image.ref, mnt, mode="lazy", config=_quiet(), insecure=True) as m:
            data = (mnt / "etc/config").read_bytes()
            assert m.layers[0].mount is not None
        return run, data

    run, data = asyncio.run(notebook_cell())
    assert run.strategy == "sequential" and data == b"local layer\n"
    assert mounts_under(mnt) == []


def test_lazy_read_of_an_image_without_index_reads_local_copies(small_layout: Path) -> None:
    run = lab.lazy_read(f"oci:{small_layout}:v1", TRACE)
    assert run.provenance["fallback"].startswith("NoIndex") and run.provenance["read_failures"] == []
    mounts = run.events[run.events["kind"] == "mount"]
    assert list(mounts["how"]) == ["local"] * 3


def test_pull_without_mount_rights_uses_the_reader(small_image, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(lab, "can_mount", lambda: (False, "no /dev/fuse (pretend)"))
    run = lab.pull(small_image.ref, "lazy", trace=TRACE, config=_quiet(), insecure=True)
    assert run.provenance["lazy_path"] == "reader" and run.provenance["cannot_mount"] == "no /dev/fuse (pretend)"
    assert run.summary["bytes_read"] == 4096 + 4096 + 12 and len(_spans(run)) == 3
    from soci_lab.errors import MountError

    with pytest.raises(MountError, match="cannot mount"):
        lab.pull(small_image.ref, "parallel", insecure=True)
