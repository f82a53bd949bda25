"""A client builds a TLS context only when it speaks TLS (issue 18): loading the CA bundle costs 15–90 ms of
CPU, and every lazy layer server makes a client of its own, usually for a plain-HTTP registry on loopback.

A CA load is counted by wrapping ``ssl.SSLContext.load_verify_locations`` (what httpx's default context and
``ssl.create_default_context`` both call); the registries are real (distribution, plain and TLS)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
from conftest import FAST
from remote_helpers import random_bytes, unique_repo

from soci_lab.errors import RegistryUnreachable
from soci_lab.remote import RegistryClient, transport

pytestmark = pytest.mark.anyio


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every CA load in this test; the process's shared default context is made afresh."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kw: object) -> None:
        loads.append(args or kw)
        real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    monkeypatch.setattr(transport, "_default_tls", None)
    yield loads


async def test_plain_http_client_loads_no_ca(distribution_registry, ca_loads) -> None:
    async with RegistryClient(distribution_registry.url) as rc:
        repo = unique_repo()
        data = random_bytes(700_000, seed=5)  # large enough for the lean path too
        desc = await rc.push_blob(repo, data)
        assert await rc.read_blob_range(repo, desc.digest, 10, 600_000) == data[10:600_001]
        assert not rc.transport.http._transport.tls_built  # type: ignore[attr-defined]
    assert ca_loads == []


async def test_https_builds_the_default_context_once_per_process(tls_distribution, ca_loads) -> None:
    for _ in range(2):  # two clients, as two layers of one mount would make
        async with RegistryClient(tls_distribution.url, config=FAST) as rc:
            assert ca_loads == [] or len(ca_loads) == 1
            with pytest.raises(RegistryUnreachable, match="TLS certificate not trusted"):
                await rc.ping()  # verified against the default CAs: the test CA is not one of them
            assert rc.transport.http._transport.tls_built  # type: ignore[attr-defined]
    assert len(ca_loads) == 1
    assert transport.default_tls_context() is transport.default_tls_context()
    assert len(ca_loads) == 1


async def test_a_private_context_is_used_as_given(tls_distribution, ca_loads) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_distribution.ca_file))
    before = len(ca_loads)
    async with RegistryClient(tls_distribution.url, ssl_context=ctx) as rc:
        await rc.ping()
    assert len(ca_loads) == before, "the default context is not built when the caller gives one"


async def test_the_plain_pool_refuses_tls_rather_than_skip_verification(tls_distribution) -> None:
    """The context the plain-HTTP pool holds trusts nothing: were an https request ever routed there, its
    handshake would fail, never go through unverified."""
    ctx = transport._no_ca_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs() == []
