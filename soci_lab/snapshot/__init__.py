"""The snapshotter side: the Filesystem (upstream ``NewFilesystem``), pull modes, the per-layer decision
(lazy / local / parallel / sequential), overlayfs assembly of the rootfs, and the mount lifecycle.

What other rooms and users call::

    fs = Filesystem(state_dir, config=Config.from_toml("config.toml"), events=EventRecorder(strategy="lazy"))
    mounted = await fs.mount("127.0.0.1:5000/app:v1", "/mnt/app", mode="lazy")   # ready when it returns
    ...                                                    # read files under /mnt/app
    events = mounted.unmount()                             # everything down, FUSE servers' events merged

:func:`unmount_recorded` takes down a mount made by another process (``soci-lab umount``), also when its
serving process was killed. The notebook face (``pull``, ``mounted``, ``lazy_read``) is :mod:`soci_lab.lab`.

The seed's names (soci-snapshotter's ``fs`` and ``snapshot`` packages) and where they live here:

=====================================  ====================================================================
seed                                   soci_lab
=====================================  ====================================================================
``NewFilesystem``                      :class:`Filesystem` (``state_dir`` = upstream's root)
``WithGetSources``                     ``Filesystem(get_sources=…)`` (REF → sources tried in order)
``WithMaxConcurrency``                 ``Filesystem(max_concurrency=…)`` (layers prepared at once)
``WithMetadataStore``                  ``Filesystem(metadata_store=…)`` (recorded; metadata is in memory)
``WithOverlayOpaqueType``              ``Filesystem(overlay_opaque_type=…)`` (FUSE layers' opaque xattrs)
``WithPullModes``                      ``Filesystem(pull_modes=…)``
``WithResolveHandler``                 ``Filesystem(resolve_handlers={name: handler})``
``Prepare`` (decision flow)            :func:`decide` (pure) + :meth:`Filesystem.mount`
``Mount`` / ``MountLocal``             a ``lazy`` layer (FUSE, :mod:`soci_lab.lazy.mount`) / a ``local`` one
``MountParallel`` + ``rebase``         :class:`soci_lab.unpack.ParallelPuller` (``how == "parallel"``)
``CleanImage``                         :meth:`Filesystem.clean_image`
``ErrNoIndex`` / ``ErrNoZtoc``         :class:`~soci_lab.errors.NoIndex` / :class:`~soci_lab.errors.NoZtoc`
``ErrAllLazyPullModesDisabled``        :class:`~soci_lab.errors.AllLazyPullModesDisabled`
=====================================  ====================================================================

Modules: :mod:`.modes` (the modes), :mod:`.decide` (the pure decision), :mod:`.filesystem` (the
Filesystem), :mod:`.mounted` (a mounted image, its unmount and events), :mod:`.overlay` (overlayfs and
unmounting), :mod:`.state` (state directory layout and the mount record), :mod:`.teardown` (unmount from
the record).
"""

from .decide import ImagePlan, LayerPlan, decide
from .filesystem import Filesystem, ResolvedImage
from .modes import HOWS, MODES, eager_fallback_mode, resolve_mode
from .mounted import LayerState, MountedImage, bytes_per_layer, first_error, merge_child_events
from .overlay import is_mounted, mount_overlay, mounts_under, umount, umount_tree
from .state import MountRecord, StateDir, default_state_dir, find_state_dir
from .teardown import Totals, unmount_recorded

__all__ = [
    "HOWS",
    "MODES",
    "Filesystem",
    "ImagePlan",
    "LayerPlan",
    "LayerState",
    "MountRecord",
    "MountedImage",
    "ResolvedImage",
    "StateDir",
    "Totals",
    "bytes_per_layer",
    "decide",
    "default_state_dir",
    "eager_fallback_mode",
    "find_state_dir",
    "first_error",
    "is_mounted",
    "merge_child_events",
    "mount_overlay",
    "mounts_under",
    "resolve_mode",
    "umount",
    "umount_tree",
    "unmount_recorded",
]
