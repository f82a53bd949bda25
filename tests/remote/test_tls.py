"""HTTPS against a real registry (distribution with a certificate from a test CA): verified, never bypassed."""

from __future__ import annotations

import ssl

import pytest
from conftest import FAST
from remote_helpers import random_bytes, unique_repo

from soci_lab.errors import RegistryUnreachable
from soci_lab.oci import OCILayout
from soci_lab.remote import RegistryClient

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]


async def test_tls_round_trip_with_a_private_ca(tls_distribution, tmp_path):
    ctx = ssl.create_default_context(cafile=str(tls_distribution.ca_file))
    async with RegistryClient(tls_distribution.url, ssl_context=ctx) as rc:
        assert rc.base_url.startswith("https://")
        await rc.ping()
        repo = unique_repo()
        data = random_bytes(600_000, seed=31)
        desc = await rc.push_blob(repo, data, chunk_size=200_000)
        layout = OCILayout(tmp_path / "l")
        await rc.fetch_blob(repo, desc, layout=layout)
        assert layout.read_blob(desc.digest) == data
        assert await rc.read_blob_range(repo, desc.digest, 1234, 456_789) == data[1234:456_790]


async def test_untrusted_certificate_fails_at_once(tls_distribution):
    async with RegistryClient(tls_distribution.url, config=FAST) as rc:
        with pytest.raises(RegistryUnreachable, match="TLS certificate not trusted") as exc:
            await rc.ping()
        assert rc.requests == 1, "a certificate that fails verification is not retried"
    assert "\n" not in str(exc.value)
