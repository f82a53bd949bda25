"""``lab.run_container``: a real container (containerd 1.6 + runc, private, started for the run) returns the
same Run as ``lab.pull``: the pull's ``ready``, the container's ``workload`` with its first output, and the
snapshotter daemon's and layer servers' events on the run's clock."""

from __future__ import annotations

import pytest
from ctdtools import CatImage, needs_containerd

from soci_lab import lab
from soci_lab.events import detail, frame_detail_problems
from soci_lab.run import Run

pytestmark = [needs_containerd, pytest.mark.root, pytest.mark.slow]


def test_lazy_container_run_is_a_run_with_the_daemons_events_on_its_clock(lazy_image: CatImage):
    run = lab.run_container(lazy_image.ref, "lazy", cmd=["/bin/cat", "/data/hello.txt"])
    assert isinstance(run, Run) and run.strategy == "lazy" and run.source == "real"
    s = run.summary
    assert 0 < s["ready_s"] < s["first_output_s"] <= s["workload_done_s"]
    assert run.provenance["exit_code"] == 0
    assert run.provenance["output_tail"].encode() == lazy_image.data[-2000:]
    ev = run.events
    assert set(ev["run_id"]) == {run.run_id} and set(ev["strategy"]) == {"lazy"}
    work = ev[ev["kind"] == "workload"].iloc[0]
    assert detail(ev[ev["kind"] == "workload"], "first_output_s").iloc[0] == pytest.approx(s["first_output_s"])
    # the daemon mounted both layers lazily, before the pull was over
    remote = ev[(ev["kind"] == "mount") & (detail(ev, "op") == "remote")]
    assert list(detail(remote, "how")) == ["lazy", "lazy"]
    assert (remote["t_start"] >= 0).all() and (remote["t_end"] <= s["ready_s"] + 0.01).all()
    # the layer servers fetched their spans while the container read: after `ctr run`, on the same clock
    spans = ev[(ev["kind"] == "span_fetch") & (detail(ev, "reason") == "read")]
    assert len(spans) and spans["layer"].nunique() == 2
    assert (spans["t_start"] >= work["t_start"] - 0.05).all()
    assert spans["t_start"].min() <= work["t_end"]
    assert s["bytes_fetched"] > 0
    # the daemon's, the layer servers' and the container's events all keep to the declared details
    assert frame_detail_problems(ev) == []


def test_containerd_mode_runs_on_containerds_own_snapshotter(cat_image: CatImage):
    run = lab.run_container(cat_image.ref, "containerd", cmd=["/bin/cat", "/data/hello.txt"])
    assert run.strategy == "containerd" and run.provenance["exit_code"] == 0
    assert run.provenance["output_tail"].encode() == cat_image.data[-2000:]
    assert set(run.events["kind"]) == {"ready", "workload"}  # containerd's pull is not instrumented
    assert 0 < run.summary["ready_s"] < run.summary["first_output_s"] <= run.summary["workload_done_s"]
