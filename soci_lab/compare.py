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
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .errors import InvalidInput, SociLabError
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

    def _repr_html_(self) -> str:
        notes = "".join(f"<li>{n}</li>" for n in self.notes + [f"{m}: {why}" for m, why in self.skipped.items()])
        table = self.summary.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        return table + (f"<ul>{notes}</ul>" if notes else "")


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
            run = lab.pull(ref, mode, config=config, trace=trace, cmd=cmd, readiness=readiness, insecure=insecure)
        elif mode == "lazy":
            if cmd is not None:
                raise SociLabError(f"cannot run a command without mounting ({why}); give a trace instead")
            run = lab.lazy_read(ref, trace=trace, config=config, insecure=insecure)
        else:
            result.skipped[mode] = f"eager pulls mount the rootfs, and {why}"
            continue
        result.runs.append(run)
    real = list(result.runs)
    if sim and real:
        _say(progress, "simulating the same pulls (calibrated from the real runs)")
        result.calibration, sim_runs = _simulate(ref, [r.strategy for r in real], real, trace, config, insecure)
        result.runs.extend(sim_runs)
        # every parameter the real runs could not identify (the simulation used the fallback instead)
        result.notes += [f"calibration: {k}: {w}" for k, w in getattr(result.calibration, "warnings", {}).items()]
    if out is not None:
        from .analysis import write_report

        _say(progress, f"writing the report into {out}")
        result.report = write_report(result.runs, out, title=title or f"soci_lab: {ref}")
        if result.notes or result.skipped:
            (Path(out) / "notes.txt").write_text(
                "\n".join(result.notes + [f"{m} skipped: {w}" for m, w in result.skipped.items()]) + "\n"
            )
    return result


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
    """Simulate each real run's mode on the same image and accesses, calibrated from the real events."""
    from .sim import LazyParams, SimParams, fit, simulate
    from .sim.workload import read_trace

    image = image_model(ref, insecure=insecure)
    cfg = config if isinstance(config, Config) else Config.from_toml(config) if config else Config()
    with tempfile.TemporaryDirectory(prefix="soci-lab-compare-") as tmp:
        if trace is None:  # the command's accesses, as the first real run recorded them, at their times
            from .workload import save_trace, trace_from_events

            accesses = read_trace(save_trace(trace_from_events(real[0].events), Path(tmp) / "trace.csv"))
        else:  # the real runs replayed the trace back to back (lab.pull's speed=None): so does the model
            accesses = [replace(a, t=0.0) for a in read_trace(trace)]
    calibration = fit([r.events for r in real])
    # soci_lab.snapshot prepares every layer of an image at once (containerd would prepare them in order)
    params = calibration.params(SimParams(lazy=LazyParams(concurrent_mounts=True)))
    # a lazy run without FUSE (lab.lazy_read) has no kernel page cache or readahead: simulate that path
    reader = any(r.provenance.get("lazy_path") == "reader" for r in real)
    runs = []
    for strategy in strategies:
        mode = _strategy_mode(strategy)
        p = replace(params, lazy=replace(params.lazy, kernel_ra_pages=0)) if reader and mode == "lazy" else params
        s = simulate(image, mode, workload=accesses, config=cfg, params=replace(p), run_id=f"sim-{mode}")
        runs.append(Run.from_sim(s, image_bytes=image.uncompressed_size))
    return calibration, runs


def image_model(ref: str, *, insecure: bool = False, span_size: int = 4 << 20, min_layer_size: int = 10 << 20) -> Any:
    """The simulator's model of ``ref``: copied into a scratch OCI layout, SOCI index and zTOCs included."""
    from .cli.sim import load_image
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

