"""The three ways to get an image's rootfs, and how a layer ended up where it is.

Modes (``--mode``, ``pull(ref, mode)``):

* ``lazy`` — upstream's snapshotter flow (soci-formats.md §4.3): find the SOCI index; each indexed layer
  is a FUSE mount whose bytes come from the registry on demand; layers the index skipped (small ones) are
  downloaded, verified and unpacked locally (``MountLocal``); no index → the whole image eager.
* ``parallel`` — upstream's parallel pull/unpack mode (``MountParallel`` for every layer, §5).
* ``sequential`` — the containerd 1.6 baseline: ≤ 3 concurrent downloads, unpacked one at a time in order.
* ``None``/``"auto"`` (library only) — exactly what the configuration says: parallel when
  ``[pull_modes.parallel_pull_unpack] enable``, else lazy.

Per layer, ``how`` is one of :data:`HOWS`: ``lazy`` (FUSE), ``local`` (downloaded whole and unpacked
because it has no zTOC or its FUSE mount failed), ``parallel`` or ``sequential``.
"""

from __future__ import annotations

from ..config import Config
from ..errors import InvalidInput

MODES: tuple[str, ...] = ("lazy", "parallel", "sequential")
HOWS: tuple[str, ...] = ("lazy", "local", "parallel", "sequential")


def resolve_mode(mode: str | None, config: Config) -> str:
    """The concrete mode: ``mode`` itself, or for ``None``/``"auto"`` what the config implies."""
    if mode in (None, "", "auto"):
        return "parallel" if config.pull_modes.parallel_pull_unpack.enable else "lazy"
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def eager_fallback_mode(config: Config) -> str:
    """What a lazy pull of an image without SOCI index becomes: ``parallel`` when the parallel mode is
    enabled or allowed as a fallback (upstream), else ``sequential`` (deferred to the container runtime)."""
    ppu = config.pull_modes.parallel_pull_unpack
    return "parallel" if (ppu.enable or ppu.experimental_parallel_pull_as_fallback) else "sequential"


__all__ = ["HOWS", "MODES", "eager_fallback_mode", "resolve_mode"]
