"""What a lazy layer is served from and how: :class:`LazyLayerSpec` (the layer: digest, zTOC, blob source, how far
the zTOC is trusted) and :class:`ServeOptions` (fetching, caching, readahead, prefetch, background fetch).

Both are picklable: the parent (:mod:`.mount`) hands them to the serving process (:mod:`.server`) in a spec
file. :func:`soci_lab.lazy.layer.build_layer` reads them, in the serving process and in ``lab``'s in-process
reader alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from .prefetch import LazyPolicy

if TYPE_CHECKING:
    from ..ztoc import Ztoc


@dataclass
class LazyLayerSpec:
    """Everything a serving process needs to know about one layer (picklable).

    ``ztoc`` is the serialized zTOC. The blob comes from ``blob_path`` (a local file) or from ``registry`` +
    ``repository`` (an OCI registry host or URL; the blob is fetched by ``digest`` with ranged GETs).

    ``ztoc_origin`` says how far the zTOC can be trusted before it is checked against the layer
    (:mod:`soci_lab.lazy.layercheck`, :func:`~soci_lab.lazy.layercheck.ztoc_origin`): ``"unpinned"`` (the
    default: a v1 referrer anyone who can push to the repository can add, or unknown) and ``"store"`` (the
    configured artifact store's answer) — the whole layer is checked before anything is served; ``"pinned"``
    (named by the manifest being mounted: its v2 annotation, or an index digest the user gave) — served at once,
    each entry's header checked before it is shown, the whole layer checked once every span has been fetched,
    and EIO from then on if that fails; ``"local"`` (built here from the very file served) — nothing to check.
    """

    digest: str
    ztoc: bytes
    blob_size: int = 0
    blob_path: str | None = None
    registry: str | None = None
    repository: str | None = None
    insecure: bool = False
    #: the registry credentials (the same as the eager path's; never shown by repr). They reach the serving
    #: process inside the spec file, which :meth:`LayerMount.start` writes 0600 and deletes once it is read
    creds: Any = None
    ztoc_origin: str = "unpinned"
    #: ``ztoc`` already parsed and validated by whoever made the spec (the mount's discovery has it): the
    #: serving process then uses it as it is, instead of parsing the FlatBuffer a second time. It travels in
    #: the same spec file as ``ztoc``, so it is trusted exactly as far
    parsed_ztoc: Ztoc | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_layer_file(
        cls, path: str | Path, *, digest: str | None = None, span_size: int = 1 << 22, media_type: str | None = None
    ) -> LazyLayerSpec:
        """Index a local layer file (builds its zTOC) and serve it from that file."""
        import hashlib

        from ..ztoc import build_ztoc

        path = Path(path)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = "sha256:" + h.hexdigest()
        z = build_ztoc(path, media_type=media_type, span_size=span_size)
        return cls(
            digest=digest, ztoc=bytes(z.to_bytes()), blob_size=path.stat().st_size, blob_path=str(path),
            ztoc_origin="local", parsed_ztoc=z,
        )


@dataclass
class ServeOptions:
    """How the serving process fetches, caches and serves (defaults: upstream's)."""

    config: Config = field(default_factory=Config)
    policy: LazyPolicy | None = None
    prefetch_ranges: list[tuple[int, int, int]] = field(default_factory=list)
    cache_dir: str | None = None  # None: memory caches; else directory caches under it
    compressed_cache_bytes: int = 0  # 0: unbounded
    uncompressed_cache_bytes: int = 0
    #: with ``cache_dir``: an in-memory tier of hot uncompressed spans in front of the directory (a span read
    #: back from disk is re-hashed before it is served: ~8 ms per 4 MiB span, so a sequential scan larger
    #: than this tier reads at ~500 MB/s in process, ~200 MB/s through FUSE, instead of ~600 MB/s)
    hot_cache_bytes: int = 256 << 20
    readahead_spans: int = 1
    max_readahead_spans: int = 4
    fetch_period: float | None = None  # background fetch period override (seconds)
    #: lazy layers served at once (one process each): each process's background fetcher uses
    #: ``layer_count × fetch_period_msec`` so that, together, they start at most one span per period
    layer_count: int = 1
    background: bool | None = None  # override the policy's background fetch
    events_path: str | None = None
    run_id: str | None = None
    #: mount without ``nosuid,nodev`` (default: setuid bits and device nodes of the layer have no effect)
    allow_setuid_and_devices: bool = False
    #: when the layer is checked against its zTOC (:mod:`.layercheck`): ``"auto"`` by the spec's
    #: ``ztoc_origin``; ``"before_serving"`` always before the mount serves; ``"background"`` only once every
    #: span has been fetched (upstream serves at once and never checks: not safe with an unpinned zTOC);
    #: None: the config's ``lazy_layer_check``
    layer_check: str | None = None
