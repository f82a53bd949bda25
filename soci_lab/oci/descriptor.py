"""Content descriptors: what a manifest, index or referrers list says about one blob."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidManifest
from .digest import Digest
from .gojson import go_map
from .platform import Platform


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (``mediaType``, ``digest``, ``size`` and the optional fields)."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    platform: Platform | None = None
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()
    data: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", Digest(self.digest))
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise InvalidManifest(f"descriptor {self.digest} has an invalid size {self.size!r}")

    @classmethod
    def from_dict(cls, d: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(d, dict):
            raise InvalidManifest(f"{where} must be a JSON object")
        for key, typ in (("mediaType", str), ("digest", str), ("size", int)):
            if key not in d:
                raise InvalidManifest(f"{where} is missing {key!r}")
            if not isinstance(d[key], typ) or isinstance(d[key], bool):
                raise InvalidManifest(f"{where} has a {key!r} of the wrong type")
        annotations = d.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InvalidManifest(f"{where} has malformed annotations")
        try:
            platform = Platform.from_dict(d["platform"]) if d.get("platform") else None
        except Exception as exc:
            raise InvalidManifest(f"{where}: {exc}") from None
        return cls(
            media_type=d["mediaType"],
            digest=Digest(d["digest"]),
            size=d["size"],
            annotations=dict(annotations),
            platform=platform,
            artifact_type=d.get("artifactType"),
            urls=tuple(d.get("urls") or ()),
            data=d.get("data"),
        )

    def to_dict(self) -> dict[str, Any]:
        """In image-spec v1.1's ``Descriptor`` field order (mediaType, digest, size, urls, annotations with
        sorted keys, data, platform, artifactType), empty optional fields left out as Go's omitempty does."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = go_map(self.annotations)
        if self.data:
            out["data"] = self.data
        if self.platform:
            out["platform"] = self.platform.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def with_annotations(self, **annotations: str) -> Descriptor:
        return replace(self, annotations={**self.annotations, **annotations})

    def __hash__(self) -> int:
        return hash((self.media_type, self.digest, self.size))
