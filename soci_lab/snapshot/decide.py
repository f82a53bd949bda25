"""The per-image, per-layer decision of the snapshotter (upstream ``snapshot.go`` ``Prepare``), kept pure.

:func:`decide` takes the mode, the configuration, the image's layers and the outcome of SOCI discovery (the
fetched artifacts, or the exception discovery raised) and says, per layer, how it will be mounted:

* mode ``parallel`` / ``sequential``: every layer that way (no discovery at all);
* mode ``lazy``:

  - artifacts found: a layer with a zTOC → ``lazy``; one without (``NoZtoc``, "sparse index") → ``local``;
  - ``NoIndex`` → the whole image eager: ``parallel`` when ``parallel_pull_unpack.enable`` or
    ``experimental_parallel_pull_as_fallback``, else ``sequential`` (upstream defers to the runtime);
  - any other discovery failure (``AllLazyPullModesDisabled``, a registry error, a damaged index) → every
    layer ``local``, as upstream counts a FUSE mount failure and makes a local snapshot;
  - with ``fallback=False`` those two failures are raised instead (a lab run that must be lazy).

A lazy layer whose FUSE mount then fails goes ``local`` too; that happens at mount time
(:mod:`.filesystem`), which records the reason in the layer's plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import NoIndex
from .modes import eager_fallback_mode

if TYPE_CHECKING:
    from ..artifacts import SociArtifacts
    from ..unpack import LayerSpec


@dataclass
class LayerPlan:
    """How one layer will be (or was) mounted, and why."""

    index: int
    layer: LayerSpec
    how: str
    reason: str | None = None

    @property
    def digest(self) -> str:
        return self.layer.digest


@dataclass
class ImagePlan:
    """The decision for a whole image: per-layer plans, the artifacts found, and the image-level reason."""

    mode: str
    layers: list[LayerPlan]
    artifacts: SociArtifacts | None = None
    reason: str | None = None  # e.g. "NoIndex: …" when a lazy image went eager
    hows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.count()

    def count(self) -> dict[str, int]:
        self.hows = {}
        for p in self.layers:
            self.hows[p.how] = self.hows.get(p.how, 0) + 1
        return self.hows

    @property
    def eager(self) -> str | None:
        """``parallel``/``sequential`` when the whole image is pulled eagerly, else None."""
        kinds = {p.how for p in self.layers}
        if len(kinds) == 1 and kinds & {"parallel", "sequential"}:
            return next(iter(kinds))
        return None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc) or '-').splitlines()[0]}"


def decide(
    mode: str,
    config: Config,
    layers: Sequence[LayerSpec],
    discovery: SociArtifacts | BaseException | None,
    *,
    fallback: bool = True,
) -> ImagePlan:
    """The plan for ``layers`` (see the module docstring). ``discovery`` is unused for eager modes."""
    if mode in ("parallel", "sequential"):
        return ImagePlan(mode, [LayerPlan(i, spec, mode) for i, spec in enumerate(layers)])
    if mode != "lazy":
        raise ValueError(f"unknown mode {mode!r}")
    if isinstance(discovery, BaseException):
        if not fallback:
            raise discovery
        reason = _one_line(discovery)
        how = eager_fallback_mode(config) if isinstance(discovery, NoIndex) else "local"
        return ImagePlan(mode, [LayerPlan(i, s, how, reason) for i, s in enumerate(layers)], reason=reason)
    if discovery is None:
        raise ValueError("lazy mode needs the outcome of discovery")
    plans = []
    for i, spec in enumerate(layers):
        if discovery.has_ztoc(spec.digest):
            plans.append(LayerPlan(i, spec, "lazy"))
        else:
            plans.append(LayerPlan(i, spec, "local", f"NoZtoc: SOCI index {discovery.digest} has no zTOC for it"))
    return ImagePlan(mode, plans, artifacts=discovery)


__all__ = ["ImagePlan", "LayerPlan", "decide"]
