"""Platforms (``linux/amd64``, ``linux/arm64/v8``) and how an index entry is matched against one."""

from __future__ import annotations

import platform as _platform
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


#: one part of ``os/arch[/variant]`` as text (a name, not a path, at most 64 characters)
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Platform:
    """An OCI platform object."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(_PART.fullmatch(p) for p in parts):
            raise InvalidInput(f"not a platform: {text[:100]!r} (expected os/arch[/variant], e.g. linux/amd64)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        arch = _ARCH.get(machine, machine)
        return cls("linux", arch, "v8" if arch == "arm64" else None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Platform:
        if not isinstance(d, dict) or not isinstance(d.get("os"), str) or not isinstance(d.get("architecture"), str):
            raise InvalidInput(f"malformed platform object: {str(d)[:200]}")
        return cls(d["os"], d["architecture"], d.get("variant"), d.get("os.version"),
                   tuple(d.get("os.features") or ()))

    def to_dict(self) -> dict[str, Any]:
        """In image-spec's ``Platform`` field order: architecture, os, os.version, os.features, variant."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, candidate: Platform) -> bool:
        """Whether an index entry for ``candidate`` can run where ``self`` is wanted.

        OS and architecture must be equal; a variant is compared only when both name one (arm64 images often
        omit ``v8``).
        """
        if (self.os, self.architecture) != (candidate.os, candidate.architecture):
            return False
        return not (self.variant and candidate.variant and self.variant != candidate.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
