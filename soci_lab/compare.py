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
result says so. With ``sim=True`` the simulator is calibrated from the real runs' own events and the same
pulls are simulated on the same image (its zTOCs) and the same accesses, so the report overlays the two.

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
) -> Comparison:
    """Pull ``ref`` in each of ``modes`` (and simulate them with ``sim``); write the report into ``out``."""
    from . import lab

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InvalidInput(f"modes must be among {', '.join(MODES)}, not {', '.join(bad) or 'nothing'}")
    if trace is not None and cmd is not None:
        raise InvalidInput("give a trace or a command, not both")
    result = Comparison(runs=[])
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
        _say(progress, "simulating the same pulls (calibrated from the real runs)")
        try:
            result.calibration, sim_runs = _simulate(ref, [r.strategy for r in real], real, trace, config, insecure)
        except _SimStepFailed as exc:
            result.notes.append(f"simulation failed while {exc}")
            kept = ""
            if out is not None:
                _write(result, out, title, progress)
                kept = f"; the real runs' report is in {out}"
            raise SimulationError(f"simulation failed while {exc}{kept}") from exc.__cause__
        result.runs.extend(sim_runs)
        # every parameter the real runs could not identify (the simulation used the fallback instead)
        result.notes += [f"calibration: {k}: {w}" for k, w in getattr(result.calibration, "warnings", {}).items()]
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


def _simulate(
    ref: str,
    strategies: list[str],
    real: list[Run],
    trace: str | Path | None,
    config: Config | str | Path | None,
    insecure: bool,
) -> tuple[Any, list[Run]]:
    """Simulate each real run's mode on the same image and accesses, calibrated from the real events.

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
    with _step("calibrating the simulator from the real runs' events"):
        calibration = fit([r.events for r in real])
        # soci_lab.snapshot prepares every layer of an image at once (containerd would prepare them in order)
        params = calibration.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
    # a lazy run without FUSE (lab.lazy_read) has no kernel page cache or readahead: simulate that path
    reader = any(r.provenance.get("lazy_path") == "reader" for r in real)
    runs = []
    for strategy in strategies:
        mode = _strategy_mode(strategy)
        p = replace(params, lazy=replace(params.lazy, kernel_ra_pages=0)) if reader and mode == "lazy" else params
        with _step(f"simulating the {mode} pull"):
            s = simulate(image, mode, workload=accesses, config=cfg, params=replace(p), run_id=f"sim-{mode}")
            runs.append(Run.from_sim(s, image_bytes=image.uncompressed_size))
    return calibration, runs


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

