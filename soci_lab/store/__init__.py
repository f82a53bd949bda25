"""The Hermes-compatible external artifact store, server side: build, keep in SQLite, serve.

Hermes (hermes.md) is a Kubernetes-native derivative of soci-snapshotter whose controller builds SOCI
v1 indexes for unmodified images and serves them to node daemons over HTTP. This package is that
controller without Kubernetes:

- :mod:`.server` — :class:`ArtifactStore`: the four GET endpoints of hermes.md §2.2 with Hermes's JSON
  shapes and status codes, plus ``POST /v1/builds`` (Hermes builds only from its watchers; here one asks);
  ``soci-lab store serve --db FILE``.
- :mod:`.db` — :class:`StoreDB`: the three SQLite tables, every blob verified before it is stored.
- :mod:`.queue` — :class:`BuildQueue`: bounded (a full queue is reported: 429 / :class:`BuildQueueFull`),
  in-flight builds de-duplicated, statuses ``Queued`` → ``Building`` → ``Ready`` / ``Failed``.
- :mod:`.builder` — one build: pull and verify with :mod:`soci_lab.remote`, zTOCs with
  :mod:`soci_lab.ztoc`, a v1 index stamped ``Hermes Builder v0.1``, a profile applied.
- :mod:`.profiles` — ``startup-local-v1`` (Hermes's path heuristics + image config) and ``trace-v1``
  (a recorded access trace), each giving prefetch artifacts with priorities; :mod:`.view` is the merged
  file view of an image they use.
- :mod:`.client` — :class:`StoreClient` / :func:`request_build` (``soci-lab store build REF``).

The node side (``FetchHermesArtifacts``) is :mod:`soci_lab.artifacts.hermes`.

Example::

    with ArtifactStore(db=tmp / "hermes.db", settings=BuildSettings(span_size=1 << 20)) as store:
        state = request_build(store.url, "127.0.0.1:5000/app:v1", wait=True)
        state["status"], state["imageDigestRef"], state["indexDigest"]
"""

from .builder import HERMES_BUILD_TOOL_IDENTIFIER, BuildOutcome, BuildRequest, BuildSettings
from .client import StoreClient, arequest_build, request_build
from .db import BUILDING, FAILED, READY, StoreDB
from .profiles import (
    STARTUP_LOCAL_V1,
    TRACE_V1,
    NoProfile,
    Profile,
    StartupLocalProfile,
    TraceProfile,
    make_profile,
)
from .queue import QUEUED, BuildQueue, BuildTask
from .server import DEFAULT_PLATFORM, DEFAULT_PORT, ArtifactStore, StoreApp
from .view import FileRef, ImageView

__all__ = [
    "BUILDING",
    "DEFAULT_PLATFORM",
    "DEFAULT_PORT",
    "FAILED",
    "HERMES_BUILD_TOOL_IDENTIFIER",
    "QUEUED",
    "READY",
    "STARTUP_LOCAL_V1",
    "TRACE_V1",
    "ArtifactStore",
    "BuildOutcome",
    "BuildQueue",
    "BuildRequest",
    "BuildSettings",
    "BuildTask",
    "FileRef",
    "ImageView",
    "NoProfile",
    "Profile",
    "StartupLocalProfile",
    "StoreApp",
    "StoreClient",
    "StoreDB",
    "TraceProfile",
    "arequest_build",
    "make_profile",
    "request_build",
]
