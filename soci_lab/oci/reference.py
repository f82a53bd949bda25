"""Image references: ``HOST[:PORT]/REPO[:TAG|@DIGEST]`` for a registry, ``oci:PATH[:TAG|@DIGEST]`` for a layout.

Grammar as the distribution reference package has it (repository path components of lowercase letters,
digits and separators; tags of up to 128 word characters). A reference without a registry host means
Docker Hub, as everywhere else. Loopback hosts are reached over plain HTTP; all others over TLS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InvalidDigest, InvalidReference
from .digest import Digest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HOST_RE = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                      r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?")

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class Reference:
    """A parsed reference. For a layout, ``layout_path`` is set and ``registry`` is empty."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None
    layout_path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not isinstance(text, str) or not text or len(text) > 4096 or text != text.strip():
            raise InvalidReference(f"invalid reference {str(text)[:100]!r}")
        if text.startswith("oci:"):
            return cls._parse_layout(text)
        rest, digest = text, None
        if "@" in rest:
            rest, _, dtext = rest.partition("@")
            digest = _digest(dtext, text)
        rest, tag = _split_tag(rest, text)
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, repository = first, remainder
            if not _HOST_RE.fullmatch(registry):
                raise InvalidReference(f"invalid registry host {registry!r} in reference {text!r}")
        else:
            registry, repository = DOCKER_HUB, rest
            if "/" not in repository:
                repository = f"library/{repository}"
        if not _REPO_RE.fullmatch(repository) or len(repository) > 255:
            raise InvalidReference(
                f"invalid repository {repository!r} in reference {text!r} (lowercase letters, digits, . _ - /)"
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    @classmethod
    def _parse_layout(cls, text: str) -> Reference:
        rest = text[4:]
        digest = None
        if "@" in rest:
            rest, _, dtext = rest.rpartition("@")
            digest = _digest(dtext, text)
        rest, tag = _split_tag(rest, text)
        if not rest:
            raise InvalidReference(f"layout reference {text!r} has no path")
        if tag is None and digest is None:
            tag = "latest"
        return cls("", "", tag, digest, Path(rest))

    @property
    def is_layout(self) -> bool:
        return self.layout_path is not None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def hostname(self) -> str:
        host = self.api_host
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    def is_loopback(self) -> bool:
        return is_loopback_host(self.hostname)

    def base_url(self, insecure: bool = False) -> str:
        """``http://host`` for loopback or ``insecure``, else ``https://host``."""
        scheme = "http" if insecure or self.is_loopback() else "https"
        return f"{scheme}://{self.api_host}"

    @property
    def reference(self) -> str:
        """What goes in ``/manifests/<reference>``: the digest when there is one, else the tag."""
        return str(self.digest) if self.digest else (self.tag or "latest")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=Digest(digest))

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        base = f"oci:{self.layout_path}" if self.is_layout else f"{self.registry}/{self.repository}"
        if self.tag:
            base += f":{self.tag}"
        if self.digest:
            base += f"@{self.digest}"
        return base


def _digest(dtext: str, text: str) -> Digest:
    """The digest after a reference's ``@``; a bad one is an :class:`InvalidReference` naming ``text``.

    Registry and layout references take their digest alike (only where the ``@`` is looked for differs).
    """
    try:
        return Digest(dtext)
    except InvalidDigest as exc:
        raise InvalidReference(f"invalid reference {text!r}: {exc}") from None


def _split_tag(rest: str, text: str) -> tuple[str, str | None]:
    """``rest`` without its ``:TAG`` and the tag (None when there is none), for registry and layout references.

    A colon counts as a tag separator only after the last ``/`` (so ``host:5000/repo`` has no tag); a tag
    that breaks the grammar is an :class:`InvalidReference` naming the whole reference ``text``.
    """
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon <= slash:
        return rest, None
    rest, tag = rest[:colon], rest[colon + 1 :]
    if not _TAG_RE.fullmatch(tag):
        raise InvalidReference(f"invalid tag {tag!r} in reference {text!r}")
    return rest, tag


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
