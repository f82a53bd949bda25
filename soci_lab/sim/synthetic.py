"""Seeded synthetic images, shaped by the published statistics of landscape.md §5.

Defaults and where they come from:

- compressed → uncompressed ratio per layer drawn from [2.48, 3.45] (the four measured images of §5);
- size concentration: one layer holds ``largest_share`` of the bytes (25 % kube-cross, 40 % EMR), the
  others are log-normally spread, so most layers are small ("most layers are small", Zhao et al.) and
  several fall under SOCI's 10 MiB ``min_layer_size`` and get no zTOC;
- 4 MiB spans (SOCI default); gzip checkpoints land at the first deflate block boundary *past* the span
  size, so each span overshoots it by up to one deflate block (modelled as up to 64 KiB);
- file sizes log-normal (median 8 KiB, σ 2.0: many small files, a heavy tail), laid out as a tar
  stream: a 512-byte header before each file, data padded to 512, two zero blocks at the end;
- zTOC size: a 32 KiB window per gzip checkpoint (≈ 0.78 % of the data at 4 MiB spans) plus ~120 bytes per
  TOC entry.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, so a spec names an image.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..errors import SimulationError
from ..units import parse_size
from .image import FileModel, ImageModel, LayerModel, SpanModel

MIB = 1024 * 1024
DEFLATE_OVERSHOOT = 64 * 1024
TOC_ENTRY_BYTES = 120


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of a synthetic image; equal specs give equal images."""

    seed: int = 0
    compressed_size: int = 600 * MIB
    layers: int = 14
    largest_share: float = 0.3
    ratio_min: float = 2.48
    ratio_max: float = 3.45
    median_file_size: int = 8 * 1024
    file_size_sigma: float = 2.0
    files_per_dir: int = 24
    span_size: int = 4 * MIB
    min_layer_size: int = 10 * MIB
    compression: str = "gzip"

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """``synthetic:SEED[,key=value…]`` → a spec, e.g. ``synthetic:7,size=2GiB,layers=25``.

        Keys: ``size`` (compressed), ``layers``, ``span`` (span size), ``largest`` (share), ``median``
        (median file size), ``sigma``, ``min_layer`` and ``compression``.
        """
        m = re.fullmatch(r"synthetic:(\d+)((?:,[a-z_]+=[^,]+)*)", text.strip())
        if not m:
            raise SimulationError(f"not a synthetic image spec: {text!r} (example: synthetic:7,size=2GiB,layers=25)")
        spec = cls(seed=int(m.group(1)))
        keys: dict[str, tuple[str, Callable[[str], Any]]] = {
            "size": ("compressed_size", parse_size),
            "layers": ("layers", int),
            "span": ("span_size", parse_size),
            "largest": ("largest_share", float),
            "median": ("median_file_size", parse_size),
            "sigma": ("file_size_sigma", float),
            "min_layer": ("min_layer_size", parse_size),
            "compression": ("compression", str),
        }
        for item in filter(None, m.group(2).split(",")):
            key, value = item.split("=", 1)
            if key not in keys:
                raise SimulationError(f"unknown synthetic image key {key!r}; known: {', '.join(keys)}")
            name, conv = keys[key]
            try:
                spec = replace(spec, **{name: conv(value)})
            except ValueError as exc:
                raise SimulationError(f"synthetic image key {key}: {exc}") from None
        return spec


def generate(spec: SyntheticSpec | None = None) -> ImageModel:
    """Build the image ``spec`` describes (deterministic in ``spec``)."""
    spec = spec or SyntheticSpec()
    if spec.layers < 1 or spec.compressed_size < spec.layers * 1024:
        raise SimulationError("a synthetic image needs at least one layer and 1 KiB per layer")
    if spec.compression not in ("gzip", "zstd", "none"):
        raise SimulationError(f"compression must be gzip, zstd or none, not {spec.compression!r}")
    rng = np.random.default_rng(spec.seed)
    sizes = _layer_sizes(rng, spec)
    layers: list[LayerModel] = []
    files: list[FileModel] = []
    for li, c_size in enumerate(sizes):
        ratio = 1.0 if spec.compression == "none" else float(rng.uniform(spec.ratio_min, spec.ratio_max))
        u_target = int(c_size * ratio)
        offsets, fsizes, u_size = _tar_layout(rng, spec, u_target)
        if spec.compression == "none":
            c_size = u_size
        digest = "sha256:" + hashlib.sha256(f"{spec}:{li}".encode()).hexdigest()
        layer = LayerModel(digest, spec.compression, int(c_size), int(u_size))
        if c_size >= spec.min_layer_size and spec.compression != "zstd":  # SOCI cannot index zstd (§2.5)
            layer.spans = _spans(rng, spec, int(c_size), int(u_size))
            layer.span_size = spec.span_size
            per_span = 32 * 1024 if spec.compression == "gzip" else 0
            layer.ztoc_size = per_span * len(layer.spans) + TOC_ENTRY_BYTES * (len(fsizes) + len(fsizes) // 24 + 1)
        layers.append(layer)
        n_dirs = (len(fsizes) + spec.files_per_dir - 1) // spec.files_per_dir
        dir_offsets = offsets[:: spec.files_per_dir] - 512
        for d in range(n_dirs):
            files.append(FileModel(f"/l{li:02d}/d{d:05d}", li, int(dir_offsets[d]), 0, "dir"))
            for k in range(d * spec.files_per_dir, min(len(fsizes), (d + 1) * spec.files_per_dir)):
                files.append(FileModel(f"/l{li:02d}/d{d:05d}/f{k:06d}", li, int(offsets[k]), int(fsizes[k])))
    model = ImageModel(name=f"synthetic:{spec.seed}", layers=layers, files=_sort_files(files), meta=asdict(spec))
    model.validate()
    return model


def _sort_files(files: list[FileModel]) -> list[FileModel]:
    """Directories first within a layer (their offset is their header's), then in stream order."""
    return sorted(files, key=lambda f: (f.layer, f.offset, f.type != "dir"))


def _layer_sizes(rng: np.random.Generator, spec: SyntheticSpec) -> list[int]:
    total = spec.compressed_size
    if spec.layers == 1:
        return [total]
    largest = int(total * spec.largest_share)
    rest = rng.lognormal(mean=0.0, sigma=1.6, size=spec.layers - 1)
    rest = np.minimum(rest / rest.sum() * (total - largest), largest)  # keep the big one the largest
    sizes = [max(1024, int(x)) for x in rest]
    pos = int(rng.integers(0, spec.layers))  # where the big layer sits in the stack
    sizes.insert(pos, largest)
    sizes[pos] += total - sum(sizes)  # exact total
    return sizes


def _tar_layout(rng: np.random.Generator, spec: SyntheticSpec, u_target: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets and sizes of file data in a tar stream of about ``u_target`` bytes, and the stream size."""
    mu = np.log(spec.median_file_size)
    mean = float(np.exp(mu + spec.file_size_sigma**2 / 2)) + 1024
    n = max(4, int(u_target / mean * 1.5) + 16)
    sizes = rng.lognormal(mu, spec.file_size_sigma, size=n).astype(np.int64)
    sizes = np.minimum(sizes, max(1, u_target // 2))  # no single file bigger than half the layer
    blocks = 512 + (sizes + 511) // 512 * 512  # header + padded data
    ends = np.cumsum(blocks)
    k = int(np.searchsorted(ends, max(u_target - 1024, int(blocks[0])))) + 1
    sizes, blocks = sizes[:k], blocks[:k]
    starts = np.concatenate(([0], np.cumsum(blocks)[:-1]))
    offsets = starts + 512
    u_size = int(blocks.sum()) + 1024
    return offsets, sizes, u_size


def _spans(rng: np.random.Generator, spec: SyntheticSpec, c_size: int, u_size: int) -> list[SpanModel]:
    if spec.compression == "none":
        step = spec.span_size
        bounds = [*list(range(0, u_size, step)), u_size]
        return [SpanModel(i, bounds[i], bounds[i + 1], bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    u_bounds = [0]
    while True:
        nxt = u_bounds[-1] + spec.span_size + int(rng.integers(1, DEFLATE_OVERSHOOT))
        if nxt >= u_size:
            break
        u_bounds.append(nxt)
    u_bounds.append(u_size)
    n = len(u_bounds) - 1
    # per-span compressibility varies around the layer's ratio
    weight = np.diff(np.array(u_bounds, dtype=np.float64)) * rng.lognormal(0.0, 0.35, size=n)
    header = 10
    c_avail = c_size - header
    c_bounds = header + np.concatenate(([0.0], np.cumsum(weight) / weight.sum() * c_avail)).astype(np.int64)
    c_bounds[-1] = c_size
    return [
        SpanModel(i, int(c_bounds[i]), int(max(c_bounds[i + 1], c_bounds[i] + 1)), u_bounds[i], u_bounds[i + 1])
        for i in range(n)
    ]
