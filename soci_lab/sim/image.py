"""The simulator's picture of an image: layers, span tables and the file table.

These are plain dataclasses on purpose: the simulator needs only geometry (where each span starts and
ends, in compressed and uncompressed bytes; where each file lies in its layer's tar stream), not the
zTOC's bytes. A model comes from a real image's SOCI index (:func:`soci_lab.sim.ztoc_adapter.from_ztocs`,
once ``soci_lab.ztoc`` exposes span geometry), from the seeded generator in :mod:`soci_lab.sim.synthetic`,
or from a JSON file written by :meth:`ImageModel.save`.

Span geometry follows soci-formats.md §2.3–2.4: span ``i`` covers uncompressed bytes
``[u_start, u_end)`` of the layer's tar stream and compressed bytes ``[c_start, c_end)`` of the blob; a
layer without spans has no zTOC (smaller than ``min_layer_size``, or a compression SOCI cannot index)
and is fetched and unpacked locally in lazy mode.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SimulationError

FORMAT = "soci_lab.sim.image/1"
COMPRESSIONS = ("gzip", "zstd", "none")


@dataclass(frozen=True, slots=True)
class SpanModel:
    """One span: its id and its byte ranges in the compressed blob and the uncompressed tar stream."""

    id: int
    c_start: int
    c_end: int
    u_start: int
    u_end: int

    @property
    def c_size(self) -> int:
        return self.c_end - self.c_start

    @property
    def u_size(self) -> int:
        return self.u_end - self.u_start


@dataclass(frozen=True, slots=True)
class FileModel:
    """One TOC entry: path (absolute in the rootfs), layer index, offset of its data in the layer's tar
    stream, size of its data, type (``reg``, ``dir``, ``symlink``, ``hardlink``, ``whiteout``) and
    ``header``: bytes of its tar header just before ``offset`` (the first read of a file verifies them;
    0 when unknown)."""

    path: str
    layer: int
    offset: int
    size: int
    type: str = "reg"
    header: int = 0


@dataclass
class LayerModel:
    """One layer blob. ``spans`` is empty when the layer has no zTOC."""

    digest: str
    compression: str
    compressed_size: int
    uncompressed_size: int
    spans: list[SpanModel] = field(default_factory=list)
    span_size: int = 0
    ztoc_size: int = 0
    _u_starts: list[int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise SimulationError(f"layer {self.digest}: compression must be one of {COMPRESSIONS}")

    @property
    def indexed(self) -> bool:
        """True when the layer has a zTOC, so lazy mode serves it through FUSE."""
        return bool(self.spans)

    def span_id(self, u_offset: int) -> int:
        """The span holding uncompressed offset ``u_offset`` (largest ``i`` with ``u_start(i) <= off``)."""
        starts = self._u_starts
        if starts is None:
            starts = self._u_starts = [s.u_start for s in self.spans]
        i = bisect_right(starts, u_offset) - 1
        return max(0, min(i, len(starts) - 1))


@dataclass
class ImageModel:
    """An image as the simulator sees it.

    ``files`` is the union of every layer's TOC (``FileModel.layer`` says which); ``prefetch_spans`` maps
    a layer index to inclusive span ranges of a prefetch artifact (soci-formats.md §3.2).
    """

    name: str
    layers: list[LayerModel]
    files: list[FileModel] = field(default_factory=list)
    manifest_size: int = 2_000
    config_size: int = 8_000
    index_size: int = 2_000
    prefetch_spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: size of the image index REF resolves to first (a SOCI v2 "SOCI-enabled" index); 0: REF names the manifest
    image_index_size: int = 0
    _view: dict[str, FileModel] | None = field(default=None, repr=False, compare=False)
    _stats: list[tuple[int, int, int]] | None = field(default=None, repr=False, compare=False)

    # --- derived ------------------------------------------------------------------------------------

    @property
    def compressed_size(self) -> int:
        return sum(layer.compressed_size for layer in self.layers)

    @property
    def uncompressed_size(self) -> int:
        return sum(layer.uncompressed_size for layer in self.layers)

    def view(self) -> dict[str, FileModel]:
        """The merged rootfs: path → the entry of the top-most layer holding it (whiteouts hide)."""
        if self._view is None:
            merged: dict[str, FileModel] = {}
            for f in self.files:  # files are in layer order, so later layers overwrite earlier ones
                if f.type == "whiteout":
                    merged.pop(f.path, None)
                else:
                    merged[f.path] = f
            self._view = merged
        return self._view

    def lookup(self, path: str) -> FileModel | None:
        """The visible entry at ``path`` in the merged rootfs, or None."""
        return self.view().get(path)

    def layer_stats(self, li: int) -> tuple[int, int, int]:
        """Of layer ``li``'s TOC: entries (what tar apply creates), regular files, and their content bytes."""
        if self._stats is None:
            stats = [[0, 0, 0] for _ in self.layers]
            for f in self.files:
                st = stats[f.layer]
                st[0] += 1
                if f.type == "reg":
                    st[1] += 1
                    st[2] += f.size
            self._stats = [(a, b, c) for a, b, c in stats]
        return self._stats[li]

    def readable_bytes(self) -> int:
        """Bytes of regular-file data visible in the merged rootfs (the denominator of ``fraction_read``)."""
        return sum(f.size for f in self.view().values() if f.type == "reg")

    def respan(self, span_size: int) -> ImageModel:
        """The same image indexed at another span size (what ``soci create --span-size`` would give).

        New boundaries sit at multiples of ``span_size`` in uncompressed bytes; compressed offsets are
        interpolated linearly inside the current spans, so a layer's compressibility profile is kept.
        Layers without a zTOC stay without one; ``none`` layers get exact fixed chunks.
        """
        if span_size <= 0:
            raise SimulationError(f"span size must be positive, not {span_size}")
        layers = [_respan_layer(layer, span_size) for layer in self.layers]
        prefetch = {
            li: [_map_range(self.layers[li], layers[li], a, b) for a, b in ranges]
            for li, ranges in self.prefetch_spans.items()
        }
        return ImageModel(
            name=self.name,
            layers=layers,
            files=self.files,
            manifest_size=self.manifest_size,
            config_size=self.config_size,
            index_size=self.index_size,
            prefetch_spans=prefetch,
            meta={**self.meta, "span_size": span_size},
            image_index_size=self.image_index_size,
        )

    # --- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; spans and files as compact lists."""
        return {
            "format": FORMAT,
            "name": self.name,
            "manifest_size": self.manifest_size,
            "config_size": self.config_size,
            "index_size": self.index_size,
            "image_index_size": self.image_index_size,
            "meta": self.meta,
            "prefetch_spans": {str(k): [list(r) for r in v] for k, v in self.prefetch_spans.items()},
            "layers": [
                {
                    "digest": layer.digest,
                    "compression": layer.compression,
                    "compressed_size": layer.compressed_size,
                    "uncompressed_size": layer.uncompressed_size,
                    "span_size": layer.span_size,
                    "ztoc_size": layer.ztoc_size,
                    "spans": [[s.c_start, s.c_end, s.u_start, s.u_end] for s in layer.spans],
                }
                for layer in self.layers
            ],
            "files": [
                [f.path, f.layer, f.offset, f.size, f.type, *([f.header] if f.header else [])] for f in self.files
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageModel:
        """Inverse of :meth:`to_dict`; refuses documents of another format."""
        if data.get("format") != FORMAT:
            raise SimulationError(f"not a soci_lab image model (format {data.get('format')!r}, expected {FORMAT})")
        try:
            layers = [
                LayerModel(
                    digest=d["digest"],
                    compression=d["compression"],
                    compressed_size=int(d["compressed_size"]),
                    uncompressed_size=int(d["uncompressed_size"]),
                    span_size=int(d.get("span_size", 0)),
                    ztoc_size=int(d.get("ztoc_size", 0)),
                    spans=[SpanModel(i, *map(int, s)) for i, s in enumerate(d.get("spans", []))],
                )
                for d in data["layers"]
            ]
            files = [
                FileModel(p, int(li), int(off), int(size), t, *map(int, rest))
                for p, li, off, size, t, *rest in data.get("files", [])
            ]
            prefetch = {int(k): [(int(a), int(b)) for a, b in v] for k, v in data.get("prefetch_spans", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SimulationError(f"malformed image model: {exc}") from None
        model = cls(
            name=data.get("name", "image"),
            layers=layers,
            files=files,
            manifest_size=int(data.get("manifest_size", 2_000)),
            config_size=int(data.get("config_size", 8_000)),
            index_size=int(data.get("index_size", 2_000)),
            prefetch_spans=prefetch,
            meta=dict(data.get("meta", {})),
            image_index_size=int(data.get("image_index_size", 0)),
        )
        model.validate()
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ImageModel:
        """Read a model written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise SimulationError(f"{path}: not JSON ({exc})") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check the geometry: spans tile each layer in order, files lie inside their layer."""
        for li, layer in enumerate(self.layers):
            prev_u = 0
            for s in layer.spans:
                if s.u_start != prev_u or s.u_end <= s.u_start or s.c_end <= s.c_start:
                    raise SimulationError(f"layer {li}: span {s.id} does not tile the layer ({s})")
                if s.c_end > layer.compressed_size:
                    raise SimulationError(f"layer {li}: span {s.id} ends past the blob")
                prev_u = s.u_end
            if layer.spans and prev_u != layer.uncompressed_size:
                raise SimulationError(f"layer {li}: spans end at {prev_u}, layer is {layer.uncompressed_size}")
        n = len(self.layers)
        for f in self.files:
            if not 0 <= f.layer < n or f.offset + f.size > self.layers[f.layer].uncompressed_size:
                raise SimulationError(f"file {f.path} lies outside layer {f.layer}")


def _respan_layer(layer: LayerModel, span_size: int) -> LayerModel:
    if not layer.spans:
        return LayerModel(layer.digest, layer.compression, layer.compressed_size, layer.uncompressed_size)
    u_total = layer.uncompressed_size
    bounds = [*list(range(0, u_total, span_size)), u_total]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 0:
        bounds.pop()
    # piecewise-linear map uncompressed → compressed offset through the old span table
    old = layer.spans

    def c_at(u: int) -> int:
        if u >= u_total:
            return layer.compressed_size
        s = old[layer.span_id(u)]
        frac = (u - s.u_start) / s.u_size
        return int(s.c_start + frac * s.c_size)

    c_bounds = [old[0].c_start] + [c_at(u) for u in bounds[1:-1]] + [layer.compressed_size]
    for i in range(1, len(c_bounds)):  # keep compressed spans non-empty
        if c_bounds[i] <= c_bounds[i - 1]:
            c_bounds[i] = c_bounds[i - 1] + 1
    c_bounds[-1] = max(c_bounds[-1], layer.compressed_size)
    spans = [SpanModel(i, c_bounds[i], c_bounds[i + 1], bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    ztoc = layer.ztoc_size
    if layer.spans:  # the zinfo part scales with the span count (32 KiB window per checkpoint for gzip)
        per_span = 32 * 1024 if layer.compression == "gzip" else 0
        ztoc = max(0, layer.ztoc_size - per_span * len(layer.spans)) + per_span * len(spans)
    return LayerModel(
        layer.digest,
        layer.compression,
        layer.compressed_size,
        layer.uncompressed_size,
        spans=spans,
        span_size=span_size,
        ztoc_size=ztoc,
    )


def _map_range(old: LayerModel, new: LayerModel, a: int, b: int) -> tuple[int, int]:
    if not old.spans or not new.spans:
        return (a, b)
    a = max(0, min(a, len(old.spans) - 1))
    b = max(a, min(b, len(old.spans) - 1))
    return (new.span_id(old.spans[a].u_start), new.span_id(old.spans[b].u_end - 1))
