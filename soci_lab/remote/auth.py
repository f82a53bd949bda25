"""Registry authentication: challenges, credentials, the token flow and its cache.

Implements the distribution token spec: a ``401`` carries ``WWW-Authenticate: Bearer realm=…,service=…,
scope=…``; the client GETs ``realm?service=…&scope=…`` (with Basic credentials when it has some, anonymously
otherwise), receives ``{"token"|"access_token", "expires_in", "issued_at"}`` and retries with
``Authorization: Bearer <token>``. Tokens are cached per (realm, service, scopes) until shortly before they
expire; concurrent requests needing the same token share one token request. ``Basic`` challenges are
answered with the credentials directly.

Credentials come from ``creds=(user, password)`` or from ``REGISTRY_AUTH_FILE`` / ``$DOCKER_CONFIG/config.json``
/ ``~/.docker/config.json`` (``auths.<host>.auth``). Credential helpers are not run; when one is configured
for a host the user is told so in the error. Nothing here ever puts a password, a token or an
``Authorization`` header into an exception, a log record or an event.

Secrets go only where they cannot be read on the way: a token realm named by the registry gets Basic
credentials only over TLS (``https``) or on a loopback address (``localhost`` or a loopback IP literal —
a *name* that happens to resolve to loopback does not count: resolution can be steered), unless the user
said ``insecure``; anything else is refused with one line before a byte is sent (:func:`secret_may_go_to`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from ..errors import AuthenticationError, InvalidInput
from ..oci.reference import is_loopback_host

log = logging.getLogger(__name__)

# --- challenges -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a scheme (lowercased) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope")
        return tuple(scope.split(" ")) if scope else ()


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges (RFC 7235: several may share one header).

    Quoted strings may contain commas and escaped quotes (``scope="repository:a:pull,push"``).
    Unparseable parts are skipped rather than guessed.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    while i < n:
        skip(" \t,")
        start = i
        while i < n and header[i] not in " \t,=":
            i += 1
        token = header[start:i]
        if not token:
            i += 1
            continue
        skip(" \t")
        if i < n and header[i] == "=" and current is not None:
            # a parameter of the current challenge (a token68 '=' padding is not supported: not used by registries)
            i += 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                value_chars: list[str] = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value_chars.append(header[i])
                    i += 1
                i += 1  # closing quote
                value = "".join(value_chars)
            else:
                vstart = i
                while i < n and header[i] not in " \t,":
                    i += 1
                value = header[vstart:i]
            current.params[token.lower()] = value
        else:
            current = Challenge(token.lower(), {})
            challenges.append(current)
    return challenges


# --- credentials ----------------------------------------------------------------------------------


class Credentials:
    """A user name and password (or token) for one registry; never shown by ``repr`` or ``str``."""

    __slots__ = ("_password", "_username")

    def __init__(self, username: str, password: str) -> None:
        if not isinstance(username, str) or not isinstance(password, str):
            raise InvalidInput("credentials must be a (user, password) pair of strings")
        self._username = username
        self._password = password

    @classmethod
    def coerce(cls, creds: Credentials | tuple[str, str] | str | None) -> Credentials | None:
        """Accept ``Credentials``, a ``(user, password)`` pair or ``"user:password"``."""
        if creds is None or isinstance(creds, Credentials):
            return creds
        if isinstance(creds, str):
            user, sep, password = creds.partition(":")
            if not sep or not user:
                raise InvalidInput("credentials must look like USER:PASSWORD")
            return cls(user, password)
        if isinstance(creds, tuple) and len(creds) == 2:
            return cls(creds[0], creds[1])
        raise InvalidInput("credentials must be a (user, password) pair")

    @property
    def username(self) -> str:
        return self._username

    def basic_header(self) -> str:
        raw = f"{self._username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"

    __str__ = __repr__


_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def _auth_file_candidates() -> list[Path]:
    paths: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    paths.append(Path.home() / ".docker" / "config.json")
    return paths


def _normalise_host_key(key: str) -> str:
    key = key.strip()
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0].lower()


@dataclass(frozen=True)
class CredentialLookup:
    """What the auth files say about one host: credentials, or a note on why there are none."""

    credentials: Credentials | None
    note: str | None = None  # e.g. "a credential helper (ecr-login) is configured for it, and helpers are not run"


def load_credentials(host: str, files: list[Path] | None = None) -> CredentialLookup:
    """Look ``host`` up in the auth files (``auths.<host>.auth``, or ``username``/``password``).

    The first file that exists and has an entry for the host wins. A malformed file or entry is skipped
    with a log line that names the file but never its contents.
    """
    host = host.lower()
    wanted = {host, *(_DOCKER_HUB_KEYS if host in _DOCKER_HUB_KEYS else ())}
    note = None
    for path in files if files is not None else _auth_file_candidates():
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            log.warning("ignoring unreadable registry auth file %s", path)
            continue
        if not isinstance(doc, dict):
            continue
        auths = doc.get("auths") or {}
        for key, entry in auths.items() if isinstance(auths, dict) else ():
            if _normalise_host_key(key) not in wanted or not isinstance(entry, dict):
                continue
            creds = _entry_credentials(entry)
            if creds is not None:
                return CredentialLookup(creds)
            if entry.get("identitytoken"):
                note = f"{path} holds an identity token for {host}, which soci_lab does not use"
            else:
                log.warning("ignoring a malformed auth entry for %s in %s", host, path)
        helpers = doc.get("credHelpers") or {}
        helper = None
        if isinstance(helpers, dict):
            helper = next((v for k, v in helpers.items() if _normalise_host_key(k) in wanted), None)
        helper = helper or doc.get("credsStore")
        if helper and note is None:
            note = (
                f"{path} names the credential helper {helper!r} for {host}; credential helpers are not run, "
                "give the credentials explicitly (creds= / --creds USER:PASS)"
            )
            log.info("%s", note)
    return CredentialLookup(None, note)


def _entry_credentials(entry: dict[str, object]) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password) if sep and user else None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


# --- where secrets may go -------------------------------------------------------------------------


def secret_may_go_to(url: str | httpx.URL, *, insecure: bool = False) -> bool:
    """Whether credentials or tokens may be sent to ``url``: ``https``, or plain ``http`` to a loopback
    host (``localhost``, ``127.0.0.0/8``, ``::1`` — literally), or any ``http`` when ``insecure``."""
    try:
        u = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    if u.scheme == "https":
        return True
    if u.scheme != "http" or not u.host:
        return False
    return insecure or is_loopback_host(u.host)


# --- the authenticator ----------------------------------------------------------------------------

#: Sends a GET to the token endpoint with the given headers (through the retrying transport, no auth).
TokenFetcher = Callable[[str, dict[str, str], list[tuple[str, str]]], Awaitable[httpx.Response]]

_EXPIRY_SLACK = 0.9  # refresh tokens after 90% of their life
_DEFAULT_TOKEN_LIFE = 60.0  # the token spec's default expires_in


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Answers a registry's challenges for one host, and keeps what it learned for later requests.

    ``authorize(scopes)`` gives the ``Authorization`` header to send before any challenge (the cached
    token for those scopes, or Basic credentials once the registry asked for Basic); ``challenge(...)``
    handles a 401 and says whether the request should be sent again.
    """

    def __init__(
        self,
        host: str,
        creds: Credentials | None,
        fetch: TokenFetcher,
        note: str | None = None,
        *,
        insecure: bool = False,
    ) -> None:
        self.host = host
        self.creds = creds
        self.note = note
        #: whether the user allowed plain HTTP to non-loopback hosts (then a cleartext realm gets credentials)
        self.insecure = insecure
        self._fetch = fetch
        self._scheme: str | None = None  # "basic" or "bearer" once the registry told us
        self._realm: str | None = None
        self._service: str | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], anyio.Lock] = {}
        self.token_requests = 0

    def _key(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        return (self._realm or "", self._service or "", *sorted(set(scopes)))

    async def authorize(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header value to send for a request needing ``scopes``, if known yet."""
        if self._scheme == "basic":
            return self.creds.basic_header() if self.creds else None
        if self._scheme == "bearer":
            token = await self._token(scopes, force=False)
            return f"Bearer {token}" if token else None
        return None

    async def challenge(self, response: httpx.Response, scopes: tuple[str, ...], sent: str | None) -> None:
        """Learn from a 401; raise :class:`AuthenticationError` when sending again cannot help.

        ``sent`` is the Authorization value the refused request carried (``None`` if it had none).
        """
        what = f"{response.request.method} {_path(response.request.url)}"
        header = response.headers.get("WWW-Authenticate")
        if not header:
            raise AuthenticationError(
                f"{self.host} answered 401 to {what} without a WWW-Authenticate challenge; cannot authenticate",
                status=401,
            )
        challenges = parse_www_authenticate(header)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            first_time = self._scheme != "bearer" or (bearer.realm, bearer.service) != (self._realm, self._service)
            self._scheme, self._realm, self._service = "bearer", bearer.realm, bearer.service
            wanted = tuple(sorted(set(scopes) | set(bearer.scopes)))
            if not first_time and sent is not None and sent.startswith("Bearer "):
                # we sent a token and it was refused: expired, revoked or too narrow
                sent_value = sent.removeprefix("Bearer ")
                stale = [k for k, t in self._tokens.items() if t.value == sent_value]
                if not stale and self._key(wanted) in self._tokens:
                    return  # another request already refreshed it; send again with the new one
                for k in stale:
                    self._tokens.pop(k, None)
                if bearer.params.get("error") == "insufficient_scope" and self._key(wanted) in stale:
                    raise AuthenticationError(
                        f"{self.host} refused access to {what}: insufficient scope {' '.join(bearer.scopes)}"
                        f"{self.cred_hint()}",
                        status=401,
                    )
            token = await self._token(wanted, force=False)
            if token is None:
                raise AuthenticationError(f"{self.host} gave no token for {what}{self.cred_hint()}", status=401)
            self._remember_scopes(scopes, wanted)
            return
        if basic is not None:
            if self.creds is None:
                raise AuthenticationError(f"{self.host} requires Basic authentication for {what}{self.cred_hint()}",
                                          status=401)
            if self._scheme == "basic" and sent is not None:
                raise AuthenticationError(f"{self.host} refused the credentials for {what}", status=401)
            self._scheme = "basic"
            return
        schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise AuthenticationError(f"{self.host} asked for an unsupported authentication scheme ({schemes}) for {what}",
                                  status=401)

    def _remember_scopes(self, asked: tuple[str, ...], granted_key: tuple[str, ...]) -> None:
        """Make the token fetched for the challenge's scopes also answer later requests for ``asked``."""
        key_asked = self._key(asked)
        key_granted = self._key(granted_key)
        if key_asked != key_granted and key_granted in self._tokens:
            self._tokens[key_asked] = self._tokens[key_granted]

    def cred_hint(self) -> str:
        if self.creds is not None:
            return ""
        return f" (no credentials for {self.host}: {self.note})" if self.note else (
            f" (no credentials for {self.host}; give creds=(user, password) or --creds USER:PASS, or log in)"
        )

    def invalidate(self) -> None:
        """Forget every cached token (e.g. after the registry's signing key changed)."""
        self._tokens.clear()

    async def _token(self, scopes: tuple[str, ...], force: bool) -> str | None:
        key = self._key(scopes)
        cached = self._tokens.get(key)
        if cached is not None and not force and cached.expires_at > time.monotonic():
            return cached.value
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:  # concurrent challenges for one scope share one token request
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at > time.monotonic():
                return cached.value
            token = await self._request_token(scopes)
            self._tokens[key] = token
            return token.value

    async def _request_token(self, scopes: tuple[str, ...]) -> _Token:
        assert self._realm is not None
        realm = httpx.URL(self._realm) if _parses(self._realm) else None
        if realm is None or realm.scheme not in ("http", "https") or not realm.host:
            raise AuthenticationError(f"{self.host} named a token realm that is not an http(s) URL; not following it")
        if self.creds is not None and not secret_may_go_to(realm, insecure=self.insecure):
            raise AuthenticationError(
                f"refusing to send the credentials for {self.host} in clear text to the token realm "
                f"{realm.scheme}://{realm.netloc.decode()} (neither TLS nor loopback; --insecure allows it)"
            )
        params: list[tuple[str, str]] = []
        if self._service:
            params.append(("service", self._service))
        params += [("scope", s) for s in sorted(set(scopes))]
        headers = {"Authorization": self.creds.basic_header()} if self.creds else {}
        if self.creds:
            params.append(("account", self.creds.username))
        self.token_requests += 1
        try:
            response = await self._fetch(self._realm, headers, params)
        except AuthenticationError:
            raise
        if response.status_code in (401, 403):
            refused = "refused the credentials" if self.creds else "refused an anonymous token"
            raise AuthenticationError(
                f"token server of {self.host} {refused} (HTTP {response.status_code}){self.cred_hint()}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise AuthenticationError(
                f"token server of {self.host} answered HTTP {response.status_code}", status=response.status_code
            )
        try:
            doc = response.json()
            value = doc.get("token") or doc.get("access_token")
            life = float(doc.get("expires_in") or _DEFAULT_TOKEN_LIFE)
        except (ValueError, AttributeError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
            value, life = None, 0.0
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"token server of {self.host} answered without a token")
        return _Token(value, time.monotonic() + max(life, 1.0) * _EXPIRY_SLACK)


def _path(url: httpx.URL) -> str:
    return url.path


def _parses(url: str) -> bool:
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return True
