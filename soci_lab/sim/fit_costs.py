"""Fits of the start-up and latency costs the model charges (issue 17, point 3): pure functions from an events
frame (real runs' events, details as columns) to values, each with its sample count and standard error.
:mod:`soci_lab.sim.calibrate` calls them and owns what happens to a value the data cannot identify.

- :func:`fit_startup`: a lazy layer server's start-up, cold and warm. Each layer's ``mount`` event (``how``
  ``lazy``) says in its ``spawn`` detail how its server was started — ``service-warm`` (forked by a
  per-host service that was running), ``service-cold`` (the first fork of a service the pull had to start),
  ``zygote-warm``/``zygote-cold`` (the private forker), ``exec`` (a fresh interpreter). A server's start-up
  is the time from its layer's mount being asked (or the previous server starting: they are forked one at
  a time) to the server's own ``mount`` event starting (calibrate's rule). Cold ones give ``mount_first_s``,
  warm ones ``mount_s``; ``service_running`` is the share of runs without a cold start.
- :func:`fit_latency`: the request latency as a distribution: from ``http_request`` events with small
  bodies (under ``small_bytes``: their duration is latency, not transfer), the quantiles of
  ``duration - bytes / bandwidth`` and a lognormal (median, log-space sigma) — ``NetworkParams.rtt`` with
  ``rtt_sigma``, or ``rtt_quantiles``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..events import detail

if TYPE_CHECKING:
    import pandas as pd

#: spawn kinds that are a cold start (the server waited for a forker, or an interpreter, to start)
COLD_SPAWNS = frozenset({"service-cold", "zygote-cold", "exec"})
#: spawn kinds that are a warm fork
WARM_SPAWNS = frozenset({"service-warm", "zygote-warm"})


@dataclass(frozen=True, slots=True)
class Estimate:
    """A fitted value, the samples it comes from and its standard error (NaN from fewer than two)."""

    value: float
    n: int
    se: float


def _median(values: list[float], seed: int = 0) -> Estimate:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return Estimate(float(v[0]), len(v), math.nan)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(v, size=(200, len(v)), replace=True), axis=1)
    return Estimate(float(np.median(v)), len(v), float(np.std(boots, ddof=1)))


def startup_samples(frame: pd.DataFrame, *, run_col: str = "run_id") -> dict[str, list[float]]:
    """Per kind of spawn, the start-up of every lazy layer server of ``frame`` (see the module docstring);
    ``run_col`` names the column that tells runs apart (calibrate keys runs of several frames apart)."""
    out: dict[str, list[float]] = {}
    if frame.empty:
        return out
    mount = frame[frame["kind"] == "mount"]
    how = detail(mount, "how").astype(object)
    what = detail(mount, "what").astype(object)
    spawn = detail(mount, "spawn").astype(object)
    outer = mount[(how == "lazy").fillna(False).astype(bool)]
    inner_mask = how.isna() & mount["layer"].notna() & (what != "overlay").fillna(True).astype(bool)
    inner = mount[inner_mask.astype(bool)]
    spawn_of = spawn[outer.index]
    for run, out_run in outer.groupby(run_col):
        asked = dict(zip(out_run["layer"], out_run["t_start"], strict=True))
        kinds = dict(zip(out_run["layer"], spawn_of[out_run.index], strict=True))
        inn = inner[(inner[run_col] == run) & inner["layer"].isin(list(asked))].sort_values("t_start")
        prev = -math.inf
        for layer, t0 in zip(inn["layer"], inn["t_start"], strict=True):
            kind = kinds.get(layer)
            latency = float(t0 - max(asked[layer], prev))
            prev = float(t0)
            if isinstance(kind, str) and kind:
                out.setdefault(kind, []).append(latency)
    return out


def fit_startup(frame: pd.DataFrame, *, run_col: str = "run_id") -> dict[str, Estimate]:
    """``mount_first_s`` (cold starts), ``mount_s`` (warm forks) and ``service_running`` (share of runs whose
    first server was warm; its se the binomial one) where ``frame``'s mount events say how servers started.
    A parameter without samples is left out."""
    samples = startup_samples(frame, run_col=run_col)
    cold = [x for k, v in samples.items() if k in COLD_SPAWNS for x in v]
    warm = [x for k, v in samples.items() if k in WARM_SPAWNS for x in v]
    out: dict[str, Estimate] = {}
    if cold:
        out["mount_first_s"] = _median(cold)
    if warm:
        out["mount_s"] = _median(warm)
    firsts = _first_spawns(frame, run_col)
    if firsts:
        p = sum(k in WARM_SPAWNS for k in firsts) / len(firsts)
        se = math.sqrt(p * (1 - p) / len(firsts)) if len(firsts) > 1 else math.nan
        out["service_running"] = Estimate(p, len(firsts), se)
    return out


def _first_spawns(frame: pd.DataFrame, run_col: str = "run_id") -> list[str]:
    """Per run, how its first lazy layer server started: the run's cold start if it had one (layers are
    prepared at once, so the order of their mount events does not tell which server was forked first; a
    cold start can only be the first), else a warm kind."""
    mount = frame[frame["kind"] == "mount"]
    if mount.empty:
        return []
    spawn = detail(mount, "spawn").astype(object)
    how = detail(mount, "how").astype(object)
    lazy = mount[(how == "lazy").fillna(False).astype(bool) & spawn.notna()]
    out = []
    for _run, rows in lazy.groupby(run_col):
        kinds = [str(k) for k in spawn[rows.index]]
        cold = [k for k in kinds if k in COLD_SPAWNS]
        out.append(cold[0] if cold else kinds[0])
    return out


def fit_latency(
    frame: pd.DataFrame, *, bandwidth: float | None = None, small_bytes: int = 64 * 1024, quantiles: int = 11
) -> dict[str, Estimate | tuple[float, ...]]:
    """The request latency of ``frame``'s small ``http_request`` events as a distribution: ``rtt`` (the
    median, bootstrap se), ``rtt_sigma`` (log-space standard deviation of a lognormal, its se from the
    normal approximation) and ``rtt_quantiles`` (``quantiles`` evenly spaced ones, 0 to 1). ``bandwidth``
    (bytes/s) takes each body's transfer out; None: the durations as they are. Fewer than two requests:
    an empty dict."""
    http = frame[(frame["kind"] == "http_request") & frame["ok"].astype(bool)]
    small = http[http["bytes"].fillna(0) < small_bytes]
    dur = (small["t_end"] - small["t_start"]).to_numpy(dtype=float)
    if bandwidth:
        dur = dur - small["bytes"].fillna(0).to_numpy(dtype=float) / bandwidth
    dur = dur[dur > 0]
    if len(dur) < 2:
        return {}
    logs = np.log(dur)
    sigma = float(np.std(logs, ddof=1))
    qs = tuple(float(x) for x in np.quantile(dur, np.linspace(0, 1, quantiles)))
    return {
        "rtt": _median(dur.tolist()),
        "rtt_sigma": Estimate(sigma, len(dur), sigma / math.sqrt(2 * (len(dur) - 1))),
        "rtt_quantiles": qs,
    }


__all__ = ["COLD_SPAWNS", "WARM_SPAWNS", "Estimate", "fit_latency", "fit_startup", "startup_samples"]
