"""Authentication against real servers: the embedded registry's token auth and distribution's htpasswd Basic."""

from __future__ import annotations

import base64
import json

import anyio
import pytest
from conftest import PASSWORD, USER
from remote_helpers import push_image, random_bytes, unique_repo

from soci_lab.errors import AuthenticationError
from soci_lab.events import EventRecorder
from soci_lab.remote import RegistryClient

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path, monkeypatch):
    """Keep the user's own ~/.docker/config.json and REGISTRY_AUTH_FILE out of these tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


async def test_token_flow_push_pull_and_token_reuse(token_registry):
    events = EventRecorder()
    async with RegistryClient(token_registry.url, creds=(USER, PASSWORD), events=events) as rc:
        repo = unique_repo()
        issued_before = token_registry.tokens_issued
        img = await push_image(rc, repo, layer_sizes=(50_000, 60_000))
        assert (await rc.get_manifest(repo, "v1")).digest == img.manifest.digest
        # concurrent pulls of several blobs share one token (pull,push for the repo is already cached)
        async with anyio.create_task_group() as tg:
            for desc, _ in img.layers * 4:
                tg.start_soon(rc.get_blob, repo, desc)
        issued = token_registry.tokens_issued - issued_before
        assert 1 <= issued <= 3, f"{issued} tokens for one repository"
        assert rc.transport.auth.token_requests == issued
    text = repr(events.events)
    assert PASSWORD not in text and "Bearer" not in text and base64.b64encode(PASSWORD.encode()).decode() not in text


async def test_token_auth_without_or_with_wrong_credentials(token_registry):
    async with RegistryClient(token_registry.url) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.get_manifest(unique_repo(), "v1")
    assert "no credentials" in str(exc.value) and "\n" not in str(exc.value)
    async with RegistryClient(token_registry.url, creds=(USER, "wrong-password")) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.get_manifest(unique_repo(), "v1")
    assert "wrong-password" not in str(exc.value) and "refused" in str(exc.value)


async def test_credentials_from_the_auth_file(token_registry, tmp_path, monkeypatch):
    auth_file = tmp_path / "auth.json"
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {token_registry.host_port: {"auth": auth}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    async with RegistryClient(token_registry.url) as rc:
        repo = unique_repo()
        desc = await rc.push_blob(repo, b"from the auth file")
        assert await rc.get_blob(repo, desc) == b"from the auth file"


async def test_basic_auth_on_distribution(basic_distribution):
    async with RegistryClient(basic_distribution, creds=f"{USER}:{PASSWORD}") as rc:
        await rc.ping()
        repo = unique_repo()
        img = await push_image(rc, repo, layer_sizes=(80_000,), chunk_size=30_000)
        assert (await rc.get_manifest(repo, "v1")).data == img.manifest_bytes
        assert await rc.read_blob_range(repo, img.layers[0][0].digest, 5, 9) == img.layers[0][1][5:10]
    async with RegistryClient(basic_distribution) as rc:
        with pytest.raises(AuthenticationError, match="requires Basic authentication"):
            await rc.ping()
    async with RegistryClient(basic_distribution, creds=(USER, "nope-nope")) as rc:
        with pytest.raises(AuthenticationError) as exc:
            await rc.push_blob(unique_repo(), random_bytes(10))
    assert "nope-nope" not in str(exc.value)


async def test_concurrent_challenges_share_one_token_request(token_registry):
    async with RegistryClient(token_registry.url, creds=(USER, PASSWORD)) as setup:
        repo = unique_repo()
        img = await push_image(setup, repo, layer_sizes=(1000, 2000, 3000))
    async with RegistryClient(token_registry.url, creds=(USER, PASSWORD)) as rc:
        before = token_registry.tokens_issued
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                for desc, _data in img.layers:
                    tg.start_soon(rc.head_blob, repo, desc.digest)
        assert rc.transport.auth.token_requests == 1
        assert token_registry.tokens_issued - before == 1
