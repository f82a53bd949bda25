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

**Where an anonymous build may connect** (:meth:`BuildAuth.anonymous_target_refusal`). A build makes the
store connect to the registry the reference names, so an open build endpoint would let a remote caller probe
addresses only the store can reach (``127.0.0.1:PORT``, ``169.254.169.254``, ``10.…``). With
``anonymous_registries`` configured (``store serve --anonymous-registry HOST[:PORT]``) an anonymous build
may name only those registries. Without it, a store listening on a non-loopback address refuses anonymous
builds of registries whose address (the literal, or every address the name resolves to) is not a global
one — loopback, private, link-local, shared, reserved, unspecified, multicast — with 403 and one line. A
store listening only on loopback (the default) is reachable only from its own host, whose processes reach
those addresses themselves: there the rule adds nothing and is not applied. Not covered: a registry that
answers with a redirect or a token realm on such an address, and a name re-resolved differently between the
check and the connect.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
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


def is_loopback_host(host: str) -> bool:
    """Whether a listening address is loopback only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def non_global_address(text: str) -> bool:
    """Whether an IP address is not a public unicast one (loopback, private, link-local, shared, reserved,
    unspecified, multicast; an IPv4-mapped IPv6 address by its IPv4 part)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _split_host(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` / ``[v6]:port`` → (host, port)."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif registry.count(":") == 1:
        host, _, port = registry.partition(":")
    else:
        host, port = registry, ""
    return host, int(port) if port.isdigit() else None


Resolver = Callable[[str, int | None], Awaitable[Iterable[str]]]


async def _resolve(host: str, port: int | None) -> list[str]:
    import asyncio

    infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class BuildAuth:
    """The build endpoint's policy: the token (None: no token accepted), whether untrusted requests may
    still build anonymously, which registries an anonymous build may name (None: any with a global address,
    see the module docstring) and whether the store listens only on loopback (then any)."""

    token: str | None = None
    allow_anonymous: bool = True
    anonymous_registries: frozenset[str] | None = None
    local_only: bool = True

    async def anonymous_target_refusal(self, registry: str, connect_to: str | None = None,
                                       resolve: Resolver = _resolve) -> str | None:
        """None when an anonymous build may read ``registry`` (``host[:port]`` of the reference; the store
        connects to ``connect_to``, its API host, default the same), else the one-line reason it may not."""
        if self.anonymous_registries:
            if registry in self.anonymous_registries:
                return None
            return (f"an anonymous build may only read the registries this store is configured for "
                    f"({', '.join(sorted(self.anonymous_registries))}), not {registry}; send the build token or "
                    "use the local socket")
        if self.local_only:
            return None
        host, port = _split_host(connect_to or registry)
        try:
            addresses = [host] if _is_ip(host) else list(await resolve(host, port))
        except OSError as exc:
            return f"an anonymous build cannot resolve registry {registry}: {exc.strerror or exc}"
        bad = sorted({a for a in addresses if non_global_address(a)})
        if bad or not addresses:
            return (f"an anonymous build may not make the store connect to {registry} ({', '.join(bad) or 'no address'}"
                    ": not a public address); configure it with --anonymous-registry, or send the build token")
        return None

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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


__all__ = [
    "ANONYMOUS",
    "REALM",
    "TRUSTED",
    "BuildAuth",
    "BuildRefused",
    "is_loopback_host",
    "load_or_create_token",
    "non_global_address",
    "read_token",
    "via_unix_socket",
]
