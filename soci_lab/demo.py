"""The main job on embedded defaults: ``soci-lab demo``.

Builds the sample image (content every Debian machine has offline: parts of the Python standard library,
zoneinfo, shared libraries, generated data; a whiteout and an opaque directory in its top layer), serves it
from the embedded registry on loopback, gives it a SOCI v2 index with upstream's defaults (4 MiB spans,
10 MiB minimum layer size — so the small layers are unpacked locally, a sparse index as in real life), and
compares lazy, parallel and sequential pulls for real and simulated on the sample application's start-up
reads. It writes ``report.html``, ``summary.csv``, ``events.csv`` and the plots into the output folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .compare import MODES, Comparison, compare

#: The sample application's start-up reads (what /app/run.sh reads), as (path, offset, size or None = all)
APP_READS: tuple[tuple[str, int, int | None], ...] = (
    ("/app/config/app.json", 0, None),
    ("/app/config/logging.json", 0, None),
    ("/app/docs/*", 0, None),
    ("/opt/data/model.bin", 0, 2 << 20),
)


def startup_trace(trees: list[Path], path: Path) -> Path:
    """The trace CSV of :data:`APP_READS` over the merged layer trees (upper layers win), one read each."""
    from .workload import Trace, TraceRow, save_trace

    def merged(rel: str) -> Path | None:
        for top in reversed(trees):
            candidate = top / rel.lstrip("/")
            if candidate.is_file():
                return candidate
        return None

    rows: list[TraceRow] = []
    t = 0.0
    for pattern, offset, size in APP_READS:
        if pattern.endswith("/*"):
            names = sorted({p.name for top in trees if (top / pattern[1:-2]).is_dir()
                            for p in (top / pattern[1:-2]).iterdir()})
            paths = [f"{pattern[:-2]}/{n}" for n in names if not n.startswith(".wh.")]
        else:
            paths = [pattern]
        for p in paths:
            f = merged(p)
            if f is None:
                continue
            length = f.stat().st_size - offset if size is None else min(size, f.stat().st_size - offset)
            rows.append(TraceRow(round(t, 6), "open", p, 0, 0))
            rows.append(TraceRow(round(t, 6), "read", p, offset, length))
            t += 0.0005
    return save_trace(Trace(rows), path)


def run_demo(
    out: str | Path = "demo-out",
    *,
    scale: float = 1.0,
    modes: tuple[str, ...] = MODES,
    sim: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Build, serve, index and compare the sample image; the report goes into ``out``."""
    from .artifacts import create_soci_index
    from .images import build_sample_image, sample_image_trees
    from .netlab import EmbeddedRegistry

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soci-lab-demo-"))
    try:
        with EmbeddedRegistry(root=work / "registry") as reg:
            ref = f"{reg.host_port}/sample:latest"
            if progress:
                progress(f"building the sample image into the embedded registry at {reg.url}")
            build_sample_image(ref, work / "trees", scale=scale)
            trees = sample_image_trees(work / "trees-view", scale=scale)
            trace = startup_trace(trees, out / "startup-trace.csv")
            if progress:
                progress("creating its SOCI v2 index (4 MiB spans, 10 MiB minimum layer size)")
            index = create_soci_index(ref, version="v2")
            comparison = compare(
                ref,
                modes,
                sim=sim,
                trace=trace,
                out=out,
                title="soci_lab demo: the sample image, lazy against parallel and sequential",
                progress=progress,
            )
            comparison.notes.insert(0, f"image {ref}, SOCI index {index.index_descriptor.digest}")
            (out / "notes.txt").write_text("\n".join(comparison.notes) + "\n")
            return comparison
    finally:
        shutil.rmtree(work, ignore_errors=True)
