"""The one place a lazy layer is built (upstream's ``Resolver.Resolve``): its zTOC, blob fetcher, span caches,
span manager, inode tree and verified reader, as a :class:`LazyLayer`.

Both ways of serving a layer use it: the FUSE serving process (:mod:`.server`, which puts a
:class:`~soci_lab.lazy.fusefs.LayerFS` in front of the reader) and ``lab``'s in-process reader
(:func:`soci_lab.lab.lazy_read`, no FUSE). So they honour the same :class:`~.spec.ServeOptions` — the config's
fetch timeout and span verification retries, the caches (memory, or directories under ``cache_dir``),
readahead, the policy's file verification — and check the gzip header the same way
(:meth:`LazyLayer.check_header`, retried like a span).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MountError, SociLabError
from ..events import EventRecorder
from ..ztoc import Ztoc
from .cache import DirectoryCache, MemoryCache, SpanCache, TieredCache
from .fetcher import FileRangeFetcher, RegistryRangeFetcher
from .prefetch import LazyPolicy, lazy_policy
from .reader import LayerReader, LayerTree
from .span import RangeFetcher
from .span_manager import SpanManager
from .spec import LazyLayerSpec, ServeOptions

if TYPE_CHECKING:
    from ..remote.client import RegistryClient

#: a bad gzip header (bytes no digest covers) is fetched again at least this many times, as upstream does
HEADER_ATTEMPTS = 3


@dataclass
class LazyLayer:
    """One lazy layer, built and ready to read (not yet checked: see :meth:`check_header`)."""

    digest: str
    ztoc: Ztoc
    spans: SpanManager
    tree: LayerTree
    reader: LayerReader
    policy: LazyPolicy
    #: the compressed blob's size (the spec's, else the zTOC's)
    blob_size: int
    #: the registry client made for this layer (by :func:`open_layer`), closed by :meth:`aclose`; None when
    #: the caller passed its own fetcher (whose client it owns)
    client: RegistryClient | None = None

    async def check_header(self) -> None:
        """Check the gzip header bytes ``[0, start of span 0)`` against the zTOC, as upstream does when it
        creates the span manager. No digest covers these bytes, so a bad answer is fetched again, like a span
        (at least :data:`HEADER_ATTEMPTS` times); the last failure is raised."""
        end = self.ztoc.compressed_range(0)[0]
        if end <= 0:
            return
        attempts = max(HEADER_ATTEMPTS, self.spans.attempts)
        for attempt in range(attempts):
            try:
                self.ztoc.zinfo.verify_header(await self.spans.fetcher.fetch(0, end - 1))
                return
            except SociLabError:
                if attempt + 1 >= attempts:
                    raise

    async def aclose(self) -> None:
        """Close the registry client this layer made (if any)."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()


def _caches(options: ServeOptions) -> tuple[SpanCache, SpanCache]:
    """(compressed, uncompressed) span caches: in memory, or directories under ``options.cache_dir`` with a hot
    in-memory tier of uncompressed spans in front."""
    if not options.cache_dir:
        return MemoryCache(options.compressed_cache_bytes), MemoryCache(options.uncompressed_cache_bytes)
    root = Path(options.cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    compressed = DirectoryCache(tempfile.mkdtemp(prefix="c-", dir=root), options.compressed_cache_bytes)
    uncompressed = TieredCache(
        DirectoryCache(tempfile.mkdtemp(prefix="u-", dir=root), options.uncompressed_cache_bytes),
        options.hot_cache_bytes,
    )
    return compressed, uncompressed


def build_layer(
    digest: str,
    ztoc: Ztoc,
    fetcher: RangeFetcher,
    options: ServeOptions,
    events: EventRecorder,
    *,
    blob_size: int = 0,
    span_events: EventRecorder | None = None,
    client: RegistryClient | None = None,
) -> LazyLayer:
    """Build the layer ``digest`` described by ``ztoc`` whose compressed bytes ``fetcher`` reads, served as
    ``options`` say. ``span_events``: where the span manager records (default ``events``; ``lab`` passes a
    null recorder for a layer read from a local copy, whose bytes were counted once as a download)."""
    cfg = options.config
    policy = options.policy or lazy_policy(cfg)
    compressed, uncompressed = _caches(options)
    timeout = cfg.blob.fetching_timeout_sec
    spans = SpanManager(
        ztoc,
        fetcher,
        compressed_cache=compressed,
        uncompressed_cache=uncompressed,
        max_span_verification_retries=cfg.blob.max_span_verification_retries,
        fetch_timeout=float(timeout) if timeout > 0 else None,
        events=span_events if span_events is not None else events,
        layer=digest,
    )
    tree = LayerTree(list(ztoc.toc))
    reader = LayerReader(
        tree,
        spans,
        verify=policy.verify_files,
        readahead_spans=options.readahead_spans,
        max_readahead_spans=options.max_readahead_spans,
        events=events,
        layer=digest,
    )
    return LazyLayer(
        digest=digest,
        ztoc=ztoc,
        spans=spans,
        tree=tree,
        reader=reader,
        policy=policy,
        blob_size=blob_size or ztoc.compressed_archive_size,
        client=client,
    )


def open_layer(spec: LazyLayerSpec, options: ServeOptions, events: EventRecorder) -> LazyLayer:
    """Build the layer of ``spec`` (what a serving process does): its zTOC (the spec's parsed one, else parsed
    here) and its blob — the local file, or the registry with ranged GETs through a client made here (closed
    by :meth:`LazyLayer.aclose`)."""
    cfg = options.config
    ztoc = spec.parsed_ztoc if spec.parsed_ztoc is not None else Ztoc.from_bytes(spec.ztoc)
    fetcher: RangeFetcher
    client = None
    if spec.blob_path:
        fetcher = FileRangeFetcher(spec.blob_path)
    elif spec.registry and spec.repository:
        from ..remote.client import RegistryClient

        client = RegistryClient(spec.registry, creds=spec.creds, insecure=spec.insecure, config=cfg.http, events=events)
        url = client.blob_url(spec.repository, spec.digest)
        fetcher = RegistryRangeFetcher(client, url)
    else:
        raise MountError(f"layer {spec.digest}: no blob source (need blob_path or registry + repository)")
    return build_layer(spec.digest, ztoc, fetcher, options, events, blob_size=spec.blob_size, client=client)
