"""``compare --sim`` from a host profile takes whether the per-host service was running from the real runs'
own ``mount`` events (issue 17, point 3: a pull whose first layer server is a warm fork of a running service
must not be charged the profile's cold start, ~1.8 s on a loaded host; one that started the service must).
Before, the profile's ``HostParams.service_running`` (False) stood for every compared pull."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from soci_lab.compare import _with_service_state
from soci_lab.events import EventRecorder
from soci_lab.sim import HostParams, SimParams


@dataclass
class _Run:  # what _with_service_state reads of a lab Run: its events
    events: pd.DataFrame


def _run(spawns: list[str], strategy: str = "lazy") -> _Run:
    rec = EventRecorder("r", source="real", strategy=strategy, clock=lambda: 0.0, origin=0.0)
    for li, kind in enumerate(spawns):
        rec.emit("mount", 0.0, 0.1 + li, layer=f"sha256:{li}", how="lazy", spawn=kind)
    return _Run(rec.to_frame())


def test_warm_first_servers_mean_the_service_was_running():
    params = SimParams(host=HostParams(service_running=False))
    warm = _with_service_state(params, [_run(["service-warm"] * 3), _run(["service-warm"] * 2)])
    assert warm.host.service_running is True


def test_a_cold_start_in_most_runs_means_it_was_not():
    params = SimParams(host=HostParams(service_running=True))
    cold = _with_service_state(params, [_run(["service-cold", "service-warm"]), _run(["exec"]),
                                        _run(["service-warm"])])  # fmt: skip
    assert cold.host.service_running is False


def test_runs_that_say_nothing_leave_the_profile_s_value():
    params = SimParams(host=HostParams(service_running=True))
    eager = _Run(EventRecorder("e", source="real", strategy="parallel", clock=lambda: 0.0, origin=0.0).to_frame())
    assert _with_service_state(params, [eager]) is params
