"""Compare pull strategies on one image, for real and simulated, and write the report.

This is what ``soci-lab compare`` and ``soci-lab demo`` run, and what a notebook calls to put lazy loading
next to parallel-eager and sequential pulls::

    from soci_lab.compare import compare
    result = compare("127.0.0.1:5000/app:v1", modes=("lazy", "parallel"), sim=True, trace="startup.csv",
                     out="report/")
    result.summary            # one row per (strategy, source), the columns of cli.md's summary.csv

Each mode is pulled for real (:func:`soci_lab.lab.pull`: mount, replay the trace or run the command,
unmount). Where this machine cannot mount (no root, no ``/dev/fuse``, no overlayfs), the lazy mode reads
through the library's reader instead (:func:`soci_lab.lab.lazy_read`) and the eager modes are skipped; the
result says so. With ``sim=True`` the same pulls are simulated on the same image (its zTOCs) and the same
accesses, so the report overlays the two. The simulator's parameters come from this host's **host
profile** (``soci-lab calibrate``, :mod:`soci_lab.sim.profile`: fitted on the calibration suite's own
images, never on ``ref``) and the network the pulls went through (``network``: ``loopback``, ``100Mbit+20ms``;
by default loopback for a registry on this host, else the real runs' own HTTP fit, said so in the notes).
Where no profile exists yet, a quick calibration (``soci-lab calibrate --quick``, a few minutes) runs first
and is saved where ``soci-lab calibrate`` would put it: the user asked for a simulation, and a missing file
should not cost them the real pulls they waited for; every later ``compare --sim`` reuses it. With
``calibration="in-sample"`` the simulator is fitted on the real runs it is compared with (as before the
host profile existed); the notes, the report and each simulated run's provenance say "in-sample".

The real runs' ``summary.csv`` and ``events.csv`` are written before the simulation starts (and when a
later mode's pull fails, for the modes that ran); a simulation that fails raises one
:class:`~soci_lab.errors.SimulationError` line naming the step (modelling the image, taking the command's
accesses, calibrating, simulating a mode), after the real runs' full report is written.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .errors import InvalidInput, SimulationError, SociLabError
from .run import Run

MODES = ("lazy", "parallel", "sequential")


@dataclass
class Comparison:
    """The runs of one comparison (real and simulated), what was skipped and why, and the report."""

    runs: list[Run]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: Path | None = None
    calibration: Any = None
    #: where the simulated runs' parameters came from: "host profile PATH", "in-sample", or None (no --sim)
    calibration_source: str | None = None

    @property
    def summary(self) -> pd.DataFrame:
        from .analysis import summary_frame

        return summary_frame(self.runs)

    @property
    def findings(self) -> list[str]:
        """Who won, by how much and why, in sentences computed from the runs (the report's findings)."""
        from .analysis.report_findings import findings

        return findings(self.runs)

    def text(self) -> str:
        """The summary with units, the findings and the notes, as a terminal shows them."""
        from .analysis.report_findings import display_summary

        extra = ("network",) if "network" in self.summary.columns else ()
        lines = [display_summary(self.summary, extra=extra).to_string(index=False), ""]
        lines += self.findings
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"skipped {m}: {why}" for m, why in self.skipped.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        from .analysis.report_findings import display_summary

        extra = ("network",) if "network" in self.summary.columns else ()
        notes = "".join(
            f"<li>{html.escape(n)}</li>" for n in self.notes + [f"{m}: {why}" for m, why in self.skipped.items()]
        )
        said = "".join(f"<p>{html.escape(s)}</p>" for s in self.findings)
        table = display_summary(self.summary, extra=extra).to_html(index=False)
        return table + said + (f"<ul>{notes}</ul>" if notes else "")


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def compare(
    ref: str,
    modes: Sequence[str] = MODES,
    *,
    sim: bool = False,
    trace: str | Path | None = None,
    cmd: Sequence[str] | None = None,
    readiness: str = "exit",
    out: str | Path | None = None,
    config: Config | str | Path | None = None,
    insecure: bool = False,
    title: str | None = None,
    progress: Callable[[str], None] | None = None,
    calibration: str | Path | None = None,
    network: str | None = None,
) -> Comparison:
    """Pull ``ref`` in each of ``modes`` (and simulate them with ``sim``); write the report into ``out``.

    ``calibration``: None, the host profile at its default place (made by a quick calibration first when
    there is none); a path, that host profile; ``"in-sample"``, a fit of the real runs themselves.
    ``network``: the network the pulls go through, as named (module docstring)."""
    from . import lab

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InvalidInput(f"modes must be among {', '.join(MODES)}, not {', '.join(bad) or 'nothing'}")
    if trace is not None and cmd is not None:
        raise InvalidInput("give a trace or a command, not both")
    result = Comparison(runs=[])
    profile = None
    if sim and calibration != IN_SAMPLE:
        profile = _host_profile(calibration, result, progress)
    mountable, why = lab.can_mount()
    if not mountable:
        result.notes.append(f"this machine cannot mount ({why}): lazy reads go through the library's reader")
    from tqdm.auto import tqdm

    for mode in tqdm(modes, desc="real pulls", unit="mode", disable=None, leave=False):
        _say(progress, f"pulling {ref} in {mode} mode (real)")
        if mountable:
            try:
                run = lab.pull(ref, mode, config=config, trace=trace, cmd=cmd, readiness=readiness, insecure=insecure)
            except BaseException:
                if out is not None and result.runs:  # the modes that ran stay on disk
                    _write_data(result.runs, out)
                raise
        elif mode == "lazy":
            if cmd is not None:
                raise SociLabError(f"cannot run a command without mounting ({why}); give a trace instead")
            run = lab.lazy_read(ref, trace=trace, config=config, insecure=insecure)
        else:
            result.skipped[mode] = f"eager pulls mount the rootfs, and {why}"
            continue
        result.runs.append(run)
    real = list(result.runs)
    title = title or f"soci_lab: {ref}"
    if out is not None and real:  # the real runs' data is on disk before the simulation can fail
        _write_data(result.runs, out)
    if sim and real:
        how = "in-sample: calibrated from these real runs" if profile is None else "from the host profile"
        _say(progress, f"simulating the same pulls ({how})")
        try:
            result.calibration, sim_runs = _simulate(ref, [r.strategy for r in real], real, trace, config, insecure,
                                                     profile=profile, network=network, notes=result.notes)
        except _SimStepFailed as exc:
            result.notes.append(f"simulation failed while {exc}")
            kept = ""
            if out is not None:
                _write(result, out, title, progress)
                kept = f"; the real runs' report is in {out}"
            raise SimulationError(f"simulation failed while {exc}{kept}") from exc.__cause__
        result.runs.extend(sim_runs)
        result.calibration_source = sim_runs[0].provenance["calibration"] if sim_runs else None
        if profile is None:
            result.notes.append("in-sample: the simulator was fitted on the real runs it is compared with, so "
                                "their agreement says little about images it was not fitted on")  # fmt: skip
        # every parameter the fit could not identify (the simulation used the fallback instead)
        label = "in-sample calibration" if profile is None else "host profile"
        result.notes += [f"{label}: {k}: {w}" for k, w in getattr(result.calibration, "warnings", {}).items()]
    if out is not None and result.runs:
        _write(result, out, title, progress)
    return result


def _write_data(runs: list[Run], out: str | Path) -> None:
    """summary.csv and events.csv of ``runs`` (cheap: no figures), as the full report writes them."""
    from .analysis import summary_frame
    from .analysis._frames import all_events
    from .events import write_events

    Path(out).mkdir(parents=True, exist_ok=True)
    summary_frame(runs).to_csv(Path(out) / "summary.csv", index=False)
    write_events(all_events(runs), Path(out) / "events.csv")


def _write(result: Comparison, out: str | Path, title: str, progress: Callable[[str], None] | None) -> None:
    from .analysis import write_report

    _say(progress, f"writing the report into {out}")
    result.report = write_report(result.runs, out, title=title, notes=_all_notes(result))
    _write_notes(result, out)


def _all_notes(result: Comparison) -> list[str]:
    return result.notes + [f"{m} skipped: {w}" for m, w in result.skipped.items()]


def _write_notes(result: Comparison, out: str | Path) -> None:
    notes = _all_notes(result)
    path = Path(out) / "notes.txt"
    if notes:
        path.write_text("\n".join(notes) + "\n")
    elif path.exists():
        path.unlink()


class _SimStepFailed(Exception):
    """Which step of the simulation failed (its message completes "simulation failed while …")."""


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Name the simulation step that raised: one line for the user, the cause kept for ``--debug``."""
    try:
        yield
    except Exception as exc:  # any failure of a step becomes one line naming the step
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise _SimStepFailed(f"{what}: {type(exc).__name__}{': ' + detail if detail else ''}") from exc


def _strategy_mode(strategy: str) -> str:
    return strategy.split("+", 1)[0]


#: ``compare(calibration=IN_SAMPLE)``: fit the simulator on the real runs it is compared with
IN_SAMPLE = "in-sample"


def _host_profile(calibration: str | Path | None, result: Comparison, progress: Callable[[str], None] | None) -> Any:
    """The host profile ``compare`` simulates with (module docstring): the file named, else the default one,
    else a quick calibration made now and saved there. None where none can be made (this machine cannot
    mount): the simulation is then in-sample, and the notes say why."""
    from .sim.profile import HostProfile, default_path

    if calibration is not None:
        result.notes.append(f"simulated from the host profile {calibration}")
        return HostProfile.load(calibration)
    path = default_path()
    if path.exists():
        result.notes.append(f"simulated from the host profile {path} (made {_made(path)})")
        return HostProfile.load(path)
    from .calsuite import calibrate

    _say(progress, f"no host profile at {path}: running a quick calibration of this host first (soci-lab "
                   "calibrate --quick, a few minutes; saved for every later compare --sim)")  # fmt: skip
    try:
        profile = calibrate(quick=True, progress=progress)
    except SociLabError as exc:
        result.notes.append(f"no host profile, and none can be made here ({exc}): the simulation is in-sample "
                            "(fitted on the real runs it is compared with)")  # fmt: skip
        return None
    profile.save(path)
    result.notes.append(f"no host profile was found: a quick calibration ({profile.suite.get('seconds')} s) made "
                        f"{path}; `soci-lab calibrate` makes the full one")  # fmt: skip
    return profile


def _made(path: Path) -> str:
    import json

    try:
        return str(json.loads(path.read_text()).get("machine", {}).get("created", "at an unknown time"))
    except (OSError, ValueError, AttributeError):
        return "at an unknown time"


def _network_of(ref: str, network: str | None, real: list[Run], notes: list[str]) -> Any:
    """The named network the pulls went through: ``network`` if given; loopback for a registry on this host
    (or an ``oci:`` layout); else None (the real runs' own HTTP fit stands for the network, noted)."""
    from .sim.profile import NamedNetwork

    if network is not None:
        return NamedNetwork.parse(network)
    host = ref.split("/", 1)[0].rsplit(":", 1)[0]
    if ref.startswith("oci:") or host in ("localhost", "[::1]") or host.startswith("127."):
        return NamedNetwork("loopback")
    notes.append(f"the network to {host} was not named (--network): its bandwidth and latency are fitted from "
                 "these real runs' requests (the host's costs still come from the host profile)")  # fmt: skip
    return None


def _simulate(
    ref: str,
    strategies: list[str],
    real: list[Run],
    trace: str | Path | None,
    config: Config | str | Path | None,
    insecure: bool,
    *,
    profile: Any = None,
    network: str | None = None,
    notes: list[str] | None = None,
) -> tuple[Any, list[Run]]:
    """Simulate each real run's mode on the same image and accesses, with the host profile's parameters and
    the named network (``profile`` None: calibrated in-sample from the real events).

    A failure is raised as :class:`_SimStepFailed` naming the step (modelling the image, taking the
    accesses, calibrating, simulating a mode)."""
    from .sim import LazyParams, SimParams, fit, simulate
    from .sim.workload import read_trace

    with _step(f"modelling the image {ref} (its layers and zTOCs)"):
        image = image_model(ref, insecure=insecure)
    cfg = config if isinstance(config, Config) else Config.from_toml(config) if config else Config()
    with tempfile.TemporaryDirectory(prefix="soci-lab-compare-") as tmp:
        if trace is None:  # the command's accesses, as the first real run recorded them, at their times
            from .workload import save_trace, trace_from_events

            with _step(f"taking the command's file accesses from the {real[0].strategy} run's events"):
                accesses = read_trace(save_trace(trace_from_events(real[0].events), Path(tmp) / "trace.csv"))
        else:  # the real runs replayed the trace back to back (lab.pull's speed=None): so does the model
            with _step(f"reading the trace {trace}"):
                accesses = [replace(a, t=0.0) for a in read_trace(trace)]
    # soci_lab.snapshot prepares every layer of an image at once (containerd would prepare them in order)
    base = SimParams(lazy=LazyParams(concurrent_mounts=True))
    if profile is None:
        with _step("calibrating the simulator from the real runs' events (in-sample)"):
            calibration = fit([r.events for r in real])
            params = calibration.params(base)
        source = IN_SAMPLE
    else:
        with _step("taking the simulator's parameters from the host profile"):
            named = _network_of(ref, network, real, notes if notes is not None else [])
            if named is None:
                params = replace(profile.params("loopback", base), network=fit([r.events for r in real]).params(
                    SimParams()).network)  # fmt: skip
            else:
                params = profile.params(named, base)
            calibration = profile
            params = _with_service_state(params, real)
        source = "host profile"
    # a lazy run without FUSE (lab.lazy_read) has no kernel page cache or readahead: simulate that path
    reader = any(r.provenance.get("lazy_path") == "reader" for r in real)
    runs = []
    for strategy in strategies:
        mode = _strategy_mode(strategy)
        p = replace(params, lazy=replace(params.lazy, kernel_ra_pages=0)) if reader and mode == "lazy" else params
        with _step(f"simulating the {mode} pull"):
            s = simulate(image, mode, workload=accesses, config=cfg, params=replace(p), run_id=f"sim-{mode}")
            run = Run.from_sim(s, image_bytes=image.uncompressed_size)
            run.provenance["calibration"] = source
            runs.append(run)
    return calibration, runs


def _with_service_state(params: Any, real: list[Run]) -> Any:
    """``params`` with ``host.service_running`` as the real runs found the per-host service: the profile's
    host was calibrated with whatever state the suite left, but whether *these* pulls' first layer server
    was a warm fork or a cold start is in their own ``mount`` events (:func:`soci_lab.sim.fit_costs.fit_startup`:
    the share of runs whose first server was warm; running when at least half were). Unchanged where the
    runs say nothing (eager runs, no ``spawn`` detail)."""
    from .sim.fit_costs import fit_startup

    frames = [r.events.assign(_run=f"{i}") for i, r in enumerate(real) if r.events is not None and len(r.events)]
    if not frames:
        return params
    found = fit_startup(pd.concat(frames, ignore_index=True), run_col="_run").get("service_running")
    if found is None:
        return params
    return replace(params, host=replace(params.host, service_running=found.value >= 0.5))


def image_model(ref: str, *, insecure: bool = False, span_size: int = 4 << 20, min_layer_size: int = 10 << 20) -> Any:
    """The simulator's model of ``ref``: copied into a scratch OCI layout, SOCI index and zTOCs included."""
    from .imagemodel import load_image
    from .images import copy_image

    if ref.startswith("oci:"):
        return load_image(ref, span_size=span_size, min_layer_size=min_layer_size)
    with tempfile.TemporaryDirectory(prefix="soci-lab-model-") as tmp:
        copy_image(ref, f"oci:{tmp}/layout:image", insecure=insecure)
        return load_image(f"oci:{tmp}/layout:image", span_size=span_size, min_layer_size=min_layer_size)


def stderr_progress(text: str) -> None:
    """Progress lines for the CLI: on stderr, only when it is a terminal (cli.md)."""
    if sys.stderr.isatty():
        print(f"soci-lab: {text}", file=sys.stderr, flush=True)

