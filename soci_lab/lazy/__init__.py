"""Lazy loading: span manager, span caches, fetchers, background fetcher, prefetch, verified reader, the
pyfuse3 filesystem of one layer and its serving process (soci-formats.md §4, hermes.md §3).

Modules (each says what and why in its docstring):

* :mod:`.span` — span states, upstream's transitions plus soci_lab's *eviction* transitions, and the
  ``SpanGeometry`` / ``RangeFetcher`` Protocols (a :class:`soci_lab.ztoc.Ztoc` is a ``SpanGeometry``);
* :mod:`.span_manager` — single-flight, digest-verified, cached span fetching; ``get_contents(start, end)``;
* :mod:`.cache` — bounded LRU span caches in memory or in a directory (self-verifying on read);
* :mod:`.fetcher` — range fetchers: bytes, local file, registry (redirect resolution, 401/403 refresh, 400
  single-range fallback, 200 slicing; HTTP retries live in :mod:`soci_lab.remote`);
* :mod:`.background` — the rate-limited background fetcher with its bounded queue and silence period;
* :mod:`.prefetch` — prefetch of span ranges and the per-index policy (Hermes annotations);
* :mod:`.reader` — the layer's inode tree from its TOC and verified, span-mapped file reads (readahead);
* :mod:`.layercheck` — the whole layer checked against its zTOC (layer digest, checkpoints, every TOC entry);
* :mod:`.fusefs` — the read-only pyfuse3 operations;
* :mod:`.spec` — what a layer is served from and how (``LazyLayerSpec``, ``ServeOptions``);
* :mod:`.layer` — the one builder of a lazy layer (``build_layer``/``open_layer`` → ``LazyLayer``), used by
  the serving process and by ``lab``'s in-process reader alike;
* :mod:`.mount` — one layer served by its own process (forked from :mod:`.zygote`), ``mount_layer``: the
  parent's side; :mod:`.server` — what runs in that process (build, prefetch, mount, serve);
* :mod:`.testing` — pure-Python geometries for tests; :mod:`.ztoc_geometry` — zinfo adapter + indexer.

Mounting a lazy layer (what the snapshot Filesystem does per indexed layer)::

    from soci_lab.lazy.mount import LazyLayerSpec, LayerMount, ServeOptions, mount_layer
    from soci_lab.lazy.prefetch import lazy_policy

    spec = LazyLayerSpec(digest=layer_digest, ztoc=ztoc_bytes, blob_size=size,
                         registry="127.0.0.1:5000", repository="app")     # or blob_path="layer.tar.gz"
    opts = ServeOptions(config=cfg, policy=lazy_policy(cfg, index.annotations, prefetch_desc_annotations),
                        prefetch_ranges=[(s.start_span, s.end_span, s.priority) for s in artifact.spans],
                        cache_dir=state_dir / "cache", events_path=state_dir / "events.jsonl")
    m = LayerMount(spec, mountpoint, opts).start(timeout=30)    # returns when mounted (prefetch done)
    ...                                                          # overlayfs lowerdir=...:mountpoint:...
    m.state(); m.unmount(); m.events()                           # unmount: SIGTERM→SIGKILL→fusermount3 -u -z

or ``with mount_layer(spec, mountpoint, opts) as m: ...``. Call :func:`soci_lab.lazy.zygote.warm` early
(daemon start) so the first mount does not pay the zygote's start-up.
"""

from __future__ import annotations

from .cache import DirectoryCache, MemoryCache, SpanCache, make_cache
from .fetcher import BytesRangeFetcher, FileRangeFetcher, RegistryRangeFetcher
from .span import EVICTION_TRANSITIONS, FETCH_TRANSITIONS, RangeFetcher, Span, SpanGeometry, SpanState
from .span_manager import SpanManager, verification_attempts

__all__ = [
    "EVICTION_TRANSITIONS",
    "FETCH_TRANSITIONS",
    "BytesRangeFetcher",
    "DirectoryCache",
    "FileRangeFetcher",
    "MemoryCache",
    "RangeFetcher",
    "RegistryRangeFetcher",
    "Span",
    "SpanCache",
    "SpanGeometry",
    "SpanManager",
    "SpanState",
    "make_cache",
    "verification_attempts",
]
