"""No request goes over plain HTTP to a host that is not loopback unless the user said ``insecure``.

A client built for ``https://registry`` (or for a loopback registry) can still be sent elsewhere by the
registry: a redirect to ``http://storage.example/...`` would carry the request — its path, the signed query
of a storage URL, and the blob — in clear text over the network. :func:`check_cleartext` is applied to every
request the transport sends (redirects included, on both the httpx path and the fast path) and
refuses that with one line, as the first request to such a host already is.
"""

from __future__ import annotations

import httpx

from ..errors import RegistryError
from ..oci.reference import is_loopback_host
from .retry import redact_url


class CleartextRefused(RegistryError):
    """A request (usually a redirect) would have gone over plain HTTP to a non-loopback host."""


def check_cleartext(url: httpx.URL, insecure: bool, source: str | None = None) -> None:
    """Raise :class:`CleartextRefused` when ``url`` is plain HTTP to a non-loopback host and not ``insecure``."""
    if insecure or url.scheme != "http" or is_loopback_host(url.host):
        return
    via = f" (redirected from {redact_url(source)})" if source else ""
    raise CleartextRefused(f"refusing plain HTTP to {url.host}{via}: not a loopback host (use --insecure to allow)")


__all__ = ["CleartextRefused", "check_cleartext"]
