"""Where SOCI indexes come from: making them for an image (``index create``), finding them again (explicit
digest, v2 annotation, v1 referrers, the Hermes store hook), fetching them and their zTOCs into the local
content store, verified, and mapping each image layer to its zTOC.

For the Filesystem and the lazy mount (one call per image)::

    arts = await fetch_soci_artifacts(registry_client, ref, image_manifest_desc, config=cfg,
                                      explicit_index_digest=label_or_None, local_store=OCILayout(state / "content"),
                                      events=recorder)
    for layer in manifest.layers:
        try:
            z = arts.ztoc_for(layer.digest)          # a parsed, validated Ztoc (span geometry, TOC)
        except NoZtoc:
            ...                                      # "sparse index": unpack this layer locally
    arts.prefetch_for(layer.digest)                  # PrefetchArtifact or None
    # AllLazyPullModesDisabled / NoIndex: no lazy loading for this image (defer to parallel/sequential)

Making indexes (``soci create``/``soci push``/``soci convert``)::

    result = create_soci_index("127.0.0.1:5000/app:v1", version="v2", span_size=1 << 20,
                               min_layer_size=1 << 20, prefetch_trace="trace.csv")
    result.digest                                    # the SOCI index digest
    index_info("127.0.0.1:5000/app:v1").to_json()    # per layer: sizes, span size/count, zTOC

The seed's names (soci-snapshotter's ``fs`` package) and where they live here:

=================================  =======================================================================
seed                               soci_lab
=================================  =======================================================================
``FetchSociArtifacts``             :func:`fetch_soci_artifacts` (``artifacts/fetch.py``)
``findSociIndexDesc``              :func:`find_soci_index_desc` (``artifacts/discovery.py``)
``populateImageLayerToSociMapping`` :meth:`SociArtifacts.ztoc_for` / ``SociArtifacts.ztoc_descriptors``
``FetchHermesArtifacts``           the ``hermes=`` hook of :func:`fetch_soci_artifacts`; default
                                   ``soci_lab.artifacts.hermes.fetch_hermes_artifacts`` (:class:`HermesFetcher`)
``SelectFirstPolicy``              :func:`soci_lab.remote.select_first_policy` (``policy=`` argument)
``IndexSelectionPolicy``           :class:`soci_lab.remote.IndexSelectionPolicy`
``OCIArtifactClient``              :class:`soci_lab.remote.OCIArtifactClient` (wraps any :class:`ArtifactSource`)
``ErrNoIndex``, ``ErrNoZtoc``      :class:`soci_lab.errors.NoIndex`, :class:`soci_lab.errors.NoZtoc`
``ErrAllLazyPullModesDisabled``    :class:`soci_lab.errors.AllLazyPullModesDisabled`
``soci create`` + ``soci push``    :func:`create_soci_index` with ``version="v1"``
``soci convert``                   :func:`create_soci_index` with ``version="v2"`` (:mod:`.convert`)
``soci index info``                :func:`index_info`
=================================  =======================================================================
"""

from .convert import image_entries, is_soci_index_entry, platform_of, soci_enabled_index
from .create import CreateResult, acreate_soci_index, create_soci_index, resolve_ref
from .discovery import IndexLocation, find_soci_index_desc
from .fetch import HermesFetcher, SociArtifacts, fetch_soci_artifacts, parse_soci_artifacts, store_index
from .info import IndexInfo, LayerInfo, aindex_info, index_info
from .prefetch import load_trace_accesses, prefetch_accesses, trace_accesses
from .sources import ArtifactSource, LayoutSource, RegistrySource, layout_referrers, open_source

__all__ = [
    "ArtifactSource",
    "CreateResult",
    "HermesFetcher",
    "IndexInfo",
    "IndexLocation",
    "LayerInfo",
    "LayoutSource",
    "RegistrySource",
    "SociArtifacts",
    "acreate_soci_index",
    "aindex_info",
    "create_soci_index",
    "fetch_soci_artifacts",
    "find_soci_index_desc",
    "image_entries",
    "index_info",
    "is_soci_index_entry",
    "layout_referrers",
    "load_trace_accesses",
    "open_source",
    "parse_soci_artifacts",
    "platform_of",
    "prefetch_accesses",
    "resolve_ref",
    "soci_enabled_index",
    "store_index",
    "trace_accesses",
]
