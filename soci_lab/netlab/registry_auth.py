"""Optional authentication for the embedded registry: distribution's token flow, or plain Basic.

``RegistryAuth(users={"alice": "secret"})`` turns it on. With ``scheme="bearer"`` (the default) a request
without a valid token gets ``401`` and ``WWW-Authenticate: Bearer realm="<url>/token",service=...,
scope="repository:<name>:<actions>"``; the token endpoint (``GET /token`` with Basic credentials, or
``POST /token`` with an OAuth2 password grant) answers ``{"token", "access_token", "expires_in",
"issued_at"}``. Tokens are random strings kept in memory with the access they grant and an expiry
(``token_ttl``), so tests can exercise expiry and refresh. With ``scheme="basic"`` every request must
carry Basic credentials and the challenge is ``Basic realm=...``. Anonymous users may pull when
``anonymous_pull`` is set. ``GET /v2/_catalog`` takes a token granted ``registry:catalog:*``, which only a
user with valid credentials gets (with ``basic``: valid credentials), as distribution's token auth.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

SERVICE = "soci-lab-registry"


@dataclass(frozen=True)
class RegistryAuth:
    """Who may use the embedded registry, and how they prove it."""

    users: Mapping[str, str] = field(default_factory=dict)
    scheme: Literal["bearer", "basic"] = "bearer"
    token_ttl: float = 300.0
    anonymous_pull: bool = False
    service: str = SERVICE

    def __post_init__(self) -> None:
        if self.scheme not in ("bearer", "basic"):
            raise ValueError(f"auth scheme must be 'bearer' or 'basic', not {self.scheme!r}")


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from a ``Basic`` Authorization header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


#: the access-table key of the catalog (``registry:catalog:*``), which no repository name can equal
CATALOG = "registry:catalog"


def parse_scope(scope: str) -> tuple[str, set[str]] | None:
    """``repository:NAME:pull,push`` → (NAME, {pull, push}); ``registry:catalog:*`` → (:data:`CATALOG`,
    {*}); None for other resource types."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if kind == "registry" and name == "catalog":
        return CATALOG, {a for a in actions.split(",") if a}
    if kind != "repository" or not name:
        return None
    return name, {a for a in actions.split(",") if a}


@dataclass
class _Grant:
    access: dict[str, set[str]]
    expires: float


class TokenAuthority:
    """Checks requests against a ``RegistryAuth``, issues tokens and builds challenges."""

    def __init__(self, auth: RegistryAuth) -> None:
        self.auth = auth
        self._tokens: dict[str, _Grant] = {}
        self.tokens_issued = 0

    def _valid_user(self, creds: tuple[str, str] | None) -> bool:
        if creds is None:
            return False
        expected = self.auth.users.get(creds[0])
        return expected is not None and secrets.compare_digest(expected, creds[1])

    def allowed(self, authorization: str | None, repo: str | None, actions: set[str]) -> bool:
        """Whether a request carrying ``authorization`` may do ``actions`` on ``repo`` (None: the ping)."""
        if self.auth.scheme == "basic":
            if self._valid_user(parse_basic(authorization)):
                return True
            return self.auth.anonymous_pull and actions <= {"pull"} and repo != CATALOG
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        grant = self._tokens.get(authorization[7:].strip())
        if grant is None or grant.expires < time.monotonic():
            return False
        if repo is None:
            return True
        if repo == CATALOG:
            return "*" in grant.access.get(CATALOG, set())
        granted = grant.access.get(repo, set()) | grant.access.get("*", set())
        return actions <= granted or "*" in granted

    def challenge(self, base_url: str, repo: str | None, actions: set[str]) -> str:
        """The ``WWW-Authenticate`` value for a refused request."""
        if self.auth.scheme == "basic":
            return f'Basic realm="{self.auth.service}"'
        value = f'Bearer realm="{base_url}/token",service="{self.auth.service}"'
        if repo == CATALOG:
            value += ',scope="registry:catalog:*"'
        elif repo is not None:
            value += f',scope="repository:{repo}:{",".join(sorted(actions))}"'
        return value

    def issue(self, creds: tuple[str, str] | None, scopes: list[str]) -> dict[str, object] | None:
        """A token granting what ``creds`` may have of ``scopes``; None when the credentials are wrong."""
        authenticated = self._valid_user(creds)
        if creds is not None and not authenticated:
            return None
        access: dict[str, set[str]] = {}
        for scope in scopes:
            for one in scope.split(" "):
                parsed = parse_scope(one)
                if parsed is None:
                    continue
                name, wanted = parsed
                if authenticated:
                    ok = wanted
                elif name == CATALOG:
                    ok = set()  # listing every repository takes a user, never an anonymous token
                elif self.auth.anonymous_pull:
                    ok = wanted & {"pull"}
                else:
                    ok = set()
                access.setdefault(name, set()).update(ok)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = _Grant(access, time.monotonic() + self.auth.token_ttl)
        self.tokens_issued += 1
        now = time.monotonic()
        for old in [t for t, g in self._tokens.items() if g.expires < now]:
            del self._tokens[old]
        return {
            "token": token,
            "access_token": token,
            "expires_in": int(self.auth.token_ttl) if self.auth.token_ttl >= 1 else self.auth.token_ttl,
            "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
