"""soci_lab.sim — simpy models of the pull strategies, emitting the same events as real runs.

The pieces, each in a module named for what it holds:

- ``image``: :class:`ImageModel` (layers, span tables, file table) with JSON save/load;
- ``synthetic``: seeded images shaped by published statistics (:func:`generate`, :class:`SyntheticSpec`);
- ``network``: a processor-sharing :class:`Link` and HTTP over it (:class:`NetworkParams`);
- ``host``: cores, decompression, tar apply, disk, FUSE (:class:`HostParams`);
- ``workload``: access traces, "read everything", synthetic start-up traces;
- ``eager`` / ``lazy``: the sequential, parallel and lazy strategies; ``schedule``: the parallel puller's
  unpack grant order (the real ``UnpackQueue``'s policy, layers applied while they download);
  ``pagecache``: the kernel between a reader and a FUSE server (page cache, Linux readahead) that the lazy
  strategy reads through;
- ``run``: :func:`simulate` → :class:`SimRun`; ``sweep``: grids of runs on any Executor;
- ``calibrate``: fit host and network parameters from a run's events (:func:`fit`, :class:`Calibration`);
- ``ztoc_adapter``: :func:`from_ztocs`, the image model of a real image's zTOCs.

Per the house rules this package imports only ``events``, ``config``, ``units``, ``errors`` and (for
real images) the pure parts of ``ztoc``.
"""

from .calibrate import Calibration, fit
from .host import HostParams
from .image import FileModel, ImageModel, LayerModel, SpanModel
from .network import Link, NetworkParams
from .run import MODES, SUMMARY_KEYS, SimRun, simulate
from .synthetic import SyntheticSpec, generate
from .workload import Access, read_everything, read_trace, synthetic_trace, write_trace
from .world import LazyParams, SimParams, WorkloadParams
from .ztoc_adapter import LayerSource, from_ztocs

__all__ = [
    "MODES",
    "SUMMARY_KEYS",
    "Access",
    "Calibration",
    "FileModel",
    "HostParams",
    "ImageModel",
    "LayerModel",
    "LayerSource",
    "LazyParams",
    "Link",
    "NetworkParams",
    "SimParams",
    "SimRun",
    "SpanModel",
    "SyntheticSpec",
    "WorkloadParams",
    "fit",
    "from_ztocs",
    "generate",
    "read_everything",
    "read_trace",
    "simulate",
    "synthetic_trace",
    "write_trace",
]
