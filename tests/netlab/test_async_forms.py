"""The servers' async context-manager forms work under asyncio and under trio (they run their own loop
in a thread, so the caller's loop never serves requests)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from soci_lab.netlab import EmbeddedRegistry, ShapingProxy


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_with_under_each_backend(backend, tmp_path):
    async def main() -> tuple[int, int]:
        async with (
            EmbeddedRegistry(root=tmp_path) as reg,
            ShapingProxy(reg.url, latency="10ms") as proxy,
            httpx.AsyncClient() as c,
        ):
            direct = await c.get(f"{reg.url}/v2/")
            proxied = await c.get(f"{proxy.url}/v2/")
        assert not reg.running and not proxy.running
        return direct.status_code, proxied.status_code

    assert anyio.run(main, backend=backend) == (200, 200)


def test_start_stop_are_idempotent_and_ports_are_free(tmp_path):
    reg = EmbeddedRegistry(root=tmp_path).start()
    other = EmbeddedRegistry(root=tmp_path).start()
    try:
        assert reg.url != other.url
        assert httpx.get(f"{other.url}/v2/").status_code == 200
    finally:
        reg.stop()
        reg.stop()
        other.stop()
    assert not other.running


def test_temporary_root_is_removed():
    with EmbeddedRegistry() as reg:
        root = reg.root
        assert root.is_dir()
    assert not root.exists()
