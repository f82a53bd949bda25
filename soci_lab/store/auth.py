"""Who may ask the store to build, and with which registry access.

A build makes the store read an image with **its own** registry access and then serve what it built (file
list, checkpoint windows) to anyone through the Hermes read endpoints, which have no authentication
(Hermes daemons send none). So the build endpoint decides how a build may reach the registry:

* **trusted** — the request carries the store's build token (``Authorization: Bearer <token>``, the token
  from ``store serve --build-token-file FILE``), or came through the store's local unix socket
  (``--build-socket PATH``, mode 0600: only its owner — and root — can connect). A trusted build uses the
  store's credentials (``--creds``, else the docker/podman auth files) and may read ``oci:`` layouts on the
  store's host.
* **anonymous** — any other request. Its build reaches the registry with no credentials at all, so it can
  only index images anyone can pull anyway; ``oci:`` references are refused (403). With
  ``allow_anonymous=False`` (``--no-anonymous-builds``) such requests are refused with 401.

A wrong token is refused with 401 (never downgraded to an anonymous build). The read endpoints stay open,
as in Hermes: an artifact built by a trusted request is readable by whoever can reach the store.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..errors import InvalidInput

TRUSTED, ANONYMOUS = "trusted", "anonymous"
#: the realm of the store's ``WWW-Authenticate`` challenge
REALM = "soci-lab-store"


class BuildRefused(Exception):
    """A build request the store will not take: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_or_create_token(path: str | os.PathLike[str]) -> str:
    """The build token kept in ``path``; a new random one is written there (mode 0600) when it is missing.

    An existing file must be readable only by its owner (no group/other bits) and hold a token of at least
    16 characters; anything else is :class:`InvalidInput`, so a world-readable token is never used.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = p.stat().st_mode
        if mode & 0o077:
            raise InvalidInput(f"build token file {p} is readable by others (mode {mode & 0o777:o}); "
                               "chmod 600 it") from None
        token = p.read_text().strip()
        if len(token) < 16 or any(c.isspace() for c in token):
            raise InvalidInput(f"build token file {p} must hold one token of at least 16 characters") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (a client's ``--token-file``), stripped; :class:`InvalidInput` when unreadable."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read the store token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise InvalidInput(f"the store token file {path} is empty")
    return token


def via_unix_socket(request: web.Request) -> bool:
    """Whether ``request`` arrived over a unix socket (the store's local build socket)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


@dataclass(frozen=True)
class BuildAuth:
    """The build endpoint's policy: the token (None: no token accepted) and whether untrusted requests may
    still build anonymously."""

    token: str | None = None
    allow_anonymous: bool = True

    def classify(self, request: web.Request) -> str:
        """:data:`TRUSTED` or :data:`ANONYMOUS`; raises :class:`BuildRefused` (401) for a wrong token, or for
        no token when anonymous builds are off."""
        if via_unix_socket(request):
            return TRUSTED
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            value = value.strip()
            if (scheme.lower() != "bearer" or self.token is None or not value
                    or not secrets.compare_digest(value.encode(), self.token.encode())):
                raise BuildRefused(401, "invalid build token")
            return TRUSTED
        if not self.allow_anonymous:
            raise BuildRefused(401, "this store builds only for requests with its build token "
                                    "(Authorization: Bearer) or through its local socket")
        return ANONYMOUS

    def trusted(self, request: web.Request) -> bool:
        """Whether ``request`` is trusted (wrong or missing tokens are simply not)."""
        try:
            return self.classify(request) == TRUSTED
        except BuildRefused:
            return False


__all__ = [
    "ANONYMOUS",
    "REALM",
    "TRUSTED",
    "BuildAuth",
    "BuildRefused",
    "load_or_create_token",
    "read_token",
    "via_unix_socket",
]
