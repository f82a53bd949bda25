"""Where credentials may go (issue 20, finding 5): a registry names its token realm, and Basic credentials
go there only over TLS or to a loopback address, unless ``insecure``.

The registry here is the ``misbehaving`` server (a real HTTP server on loopback): it answers ``/v2/`` with a
Bearer challenge whose realm is a URL the test chooses — what a hostile or misconfigured registry can do —
and serves the realm itself on ``/token``. The realm's host is a made-up *name*
(``tokens.soci-lab.example``) that :class:`NameToLoopback` resolves to 127.0.0.1 inside the client's httpx
transport (a stand-in for DNS, which cannot be pointed at loopback here): to soci_lab it is a non-loopback
host, and yet every connection of these tests goes to loopback, never to a real network.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from aiohttp import web
from conftest import PASSWORD, USER

from soci_lab.errors import AuthenticationError, RegistryError
from soci_lab.oci.reference import is_loopback_host
from soci_lab.remote import RegistryClient
from soci_lab.remote.auth import secret_may_go_to

pytestmark = [pytest.mark.anyio]

FAKE_NAME = "tokens.soci-lab.example"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


class NameToLoopback(httpx.AsyncBaseTransport):
    """httpx's real transport, with :data:`FAKE_NAME` resolved to 127.0.0.1 (the ``Host`` header keeps the
    name); any other non-loopback host fails the test instead of being contacted."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == FAKE_NAME:
            request.url = request.url.copy_with(host="127.0.0.1")
        elif not is_loopback_host(request.url.host):
            raise AssertionError(f"the test tried to reach {request.url.host}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _registry_with_realm(misbehaving, realm: str) -> None:  # type: ignore[no-untyped-def]
    async def h(request: web.Request) -> web.Response:
        if request.path == "/token":
            return web.json_response({"token": "tok-123", "expires_in": 300})
        if request.headers.get("Authorization") == "Bearer tok-123":
            return web.Response(status=200, text="{}", content_type="application/json")
        challenge = f'Bearer realm="{realm}",service="svc"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text="{}")

    misbehaving.handler = h


def _token_requests(misbehaving) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    return [headers for _m, path, headers in misbehaving.seen if path.startswith("/token")]


async def test_basic_credentials_are_not_sent_to_a_cleartext_realm_on_a_non_loopback_name(misbehaving) -> None:  # type: ignore[no-untyped-def]
    port = misbehaving.url.rsplit(":", 1)[1]
    _registry_with_realm(misbehaving, f"http://{FAKE_NAME}:{port}/token")
    async with RegistryClient(misbehaving.url, creds=(USER, PASSWORD), http_transport=NameToLoopback()) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.ping()
    msg = str(exc.value)
    assert "\n" not in msg and "refusing to send the credentials" in msg and FAKE_NAME in msg and "--insecure" in msg
    assert PASSWORD not in msg
    assert _token_requests(misbehaving) == [], "the realm was contacted"


async def test_insecure_allows_it_and_anonymous_token_requests_carry_no_secret(misbehaving) -> None:  # type: ignore[no-untyped-def]
    port = misbehaving.url.rsplit(":", 1)[1]
    _registry_with_realm(misbehaving, f"http://{FAKE_NAME}:{port}/token")
    async with RegistryClient(
        misbehaving.url, creds=(USER, PASSWORD), insecure=True, http_transport=NameToLoopback()
    ) as rc:
        await rc.ping()
    (seen,) = _token_requests(misbehaving)
    assert seen.get("Authorization") == BASIC  # the user said --insecure: the realm gets them
    misbehaving.seen.clear()
    async with RegistryClient(misbehaving.url, insecure=True, http_transport=NameToLoopback()) as rc:  # no creds
        await rc.ping()
    (seen,) = _token_requests(misbehaving)
    assert "Authorization" not in seen
    misbehaving.seen.clear()
    # without --insecure even an anonymous token request does not go in clear text to a non-loopback realm:
    # the token it would bring back travels in the open (remote/cleartext.py refuses it in one line)
    async with RegistryClient(misbehaving.url, http_transport=NameToLoopback()) as rc:
        with pytest.raises(RegistryError) as refused:
            await rc.ping()
    assert "\n" not in str(refused.value) and FAKE_NAME in str(refused.value) and "--insecure" in str(refused.value)
    assert _token_requests(misbehaving) == []


async def test_a_loopback_realm_gets_the_credentials(misbehaving) -> None:  # type: ignore[no-untyped-def]
    _registry_with_realm(misbehaving, f"{misbehaving.url}/token")
    async with RegistryClient(misbehaving.url, creds=(USER, PASSWORD)) as rc:
        await rc.ping()
    (seen,) = _token_requests(misbehaving)
    assert seen.get("Authorization") == BASIC


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/token", "file:///etc/passwd", "/token", "http://"])
async def test_a_realm_that_is_not_an_http_url_is_refused_in_one_line(misbehaving, realm: str) -> None:  # type: ignore[no-untyped-def]
    _registry_with_realm(misbehaving, realm)
    async with RegistryClient(misbehaving.url, creds=(USER, PASSWORD)) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.ping()
    assert "\n" not in str(exc.value) and "token realm" in str(exc.value)
    assert _token_requests(misbehaving) == []


@pytest.mark.parametrize(
    ("url", "insecure", "allowed"),
    [
        ("https://registry.example/token", False, True),
        ("http://127.0.0.1:5000/token", False, True),
        ("http://127.9.9.9/token", False, True),
        ("http://[::1]:80/token", False, True),
        ("http://localhost/token", False, True),
        ("http://registry.example/token", False, False),
        ("http://vm/token", False, False),  # a name, even one /etc/hosts maps to 127.0.0.1
        ("http://10.0.0.1/token", False, False),
        ("http://registry.example/token", True, True),
        ("ftp://127.0.0.1/token", True, False),
        ("not a url", True, False),
        ("", False, False),
    ],
)
def test_secret_may_go_to(url: str, insecure: bool, allowed: bool) -> None:
    assert secret_may_go_to(url, insecure=insecure) is allowed
