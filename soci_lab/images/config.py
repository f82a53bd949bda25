"""The image config and manifest of a built image, with no time of "now" in them.

``created`` (of the image and of every history entry) is ``SOURCE_DATE_EPOCH`` when that is set (the
reproducible-builds convention), else the Unix epoch. A history entry's ``created_by`` names the layer's
directory by its base name only, so the same trees built from another place give the same digests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidInput
from ..oci import Descriptor, Digest, ImageConfig, Manifest, Platform, canonical_json
from ..oci import mediatypes as mt


def created_time(epoch: int | None = None) -> str:
    """RFC 3339 UTC time for ``epoch`` seconds, else ``SOURCE_DATE_EPOCH``, else 1970-01-01T00:00:00Z."""
    if epoch is None:
        env = os.environ.get("SOURCE_DATE_EPOCH")
        if env:
            try:
                epoch = int(env)
            except ValueError:
                raise InvalidInput(f"SOURCE_DATE_EPOCH must be an integer, not {env!r}") from None
        else:
            epoch = 0
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RuntimeConfig:
    """The runtime part of an image config; empty fields are left out of the document."""

    cmd: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    env: Sequence[str] = ()
    working_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.env:
            for item in self.env:
                if "=" not in item:
                    raise InvalidInput(f"environment entry {item!r} is not NAME=VALUE")
            out["Env"] = list(self.env)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        return out


def image_config(
    diff_ids: Sequence[str],
    created_by: Sequence[str],
    *,
    platform: Platform | None = None,
    runtime: RuntimeConfig | None = None,
    created: str | None = None,
) -> ImageConfig:
    """An OCI image config: platform (the host's by default), rootfs.diff_ids, one history entry per layer."""
    if len(diff_ids) != len(created_by):
        raise ValueError("one created_by per layer")
    plat = platform or Platform.host()
    when = created or created_time()
    doc: dict[str, Any] = {
        "created": when,
        "architecture": plat.architecture,
        "os": plat.os,
        "config": (runtime or RuntimeConfig()).to_dict(),
        "rootfs": {"type": "layers", "diff_ids": [str(Digest(d)) for d in diff_ids]},
        "history": [{"created": when, "created_by": by} for by in created_by],
    }
    if plat.variant:
        doc["variant"] = plat.variant
    return ImageConfig.from_bytes(canonical_json(doc))


def image_manifest(config: ImageConfig, layers: Sequence[Descriptor]) -> Manifest:
    """The OCI image manifest for ``config`` (stored as canonical JSON) and ``layers`` in order."""
    data = config.to_bytes()
    cdesc = Descriptor(mt.OCI_CONFIG, Digest.from_bytes(data), len(data))
    return Manifest(media_type=mt.OCI_MANIFEST, config=cdesc, layers=tuple(layers))
