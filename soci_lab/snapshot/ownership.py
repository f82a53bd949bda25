"""Which mounts are soci-lab's: the ones its record says it made, checked against ``/proc/self/mountinfo``.

Unmounting acts on nothing else. A mount of an image is its overlay at the mountpoint — recognised by its
type (``overlay``) and its source, a name unique to that mount (``soci-lab.<random>``) written into the
record *before* the overlay is mounted, plus its mount id once known — and each lazy layer's FUSE mount
at ``<state>/layers/<digest>/mnt`` (type ``fuse…``, source ``soci``, and its mount id once recorded).
Everything else found at or under the mountpoint or the state directory — a tmpfs someone mounted there,
a bind mount into the rootfs, a different overlay on the same path — is *foreign*: ``umount`` refuses
with one line naming it and touches nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .overlay import MountInfo, mountinfo_under
from .state import MountRecord, layer_dirname

#: the source name of every FUSE layer mount (pyfuse3's ``fsname``)
FUSE_SOURCE = "soci"


def new_overlay_source() -> str:
    """A name for one overlay mount that nobody else's mount has (``soci-lab.<16 hex>``)."""
    return f"soci-lab.{secrets.token_hex(8)}"


def is_ours(m: MountInfo, record: MountRecord) -> bool:
    """Whether ``m`` is a mount ``record`` says soci-lab made (see the module docstring)."""
    mountpoint = os.path.realpath(record.mountpoint)
    if m.target == mountpoint:
        return (
            m.fstype == "overlay"
            and record.overlay_source is not None
            and m.source == record.overlay_source
            and (record.overlay_id is None or m.mount_id == record.overlay_id)
        )
    layers = Path(os.path.realpath(record.state_dir)) / "layers"
    for lay in record.layers:
        if m.target == str(layers / layer_dirname(lay.digest) / "mnt"):
            return (
                m.fstype.split(".", 1)[0] == "fuse"
                and m.source == FUSE_SOURCE
                and (lay.mount_id is None or m.mount_id == lay.mount_id)
            )
    return False


def classify(record: MountRecord) -> tuple[list[MountInfo], list[MountInfo]]:
    """``(ours, foreign)``: the mounts at or under the record's mountpoint and state directory, in mount
    order (deepest last)."""
    seen: set[int] = set()
    ours: list[MountInfo] = []
    foreign: list[MountInfo] = []
    for base in (record.mountpoint, record.state_dir):
        for m in mountinfo_under(base):
            if m.mount_id in seen:
                continue
            seen.add(m.mount_id)
            (ours if is_ours(m, record) else foreign).append(m)
    return ours, foreign


def refusal(target: str | os.PathLike[str], foreign: list[MountInfo]) -> str:
    """The one line ``umount`` answers when something under ``target`` is not soci-lab's."""
    more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
    return (
        f"refusing to unmount {os.fspath(target)}: {foreign[0].describe()}{more} was not mounted by soci-lab; "
        "unmount it yourself first"
    )


__all__ = ["FUSE_SOURCE", "classify", "is_ours", "new_overlay_source", "refusal"]
