"""``DistributionRegistry``: the library's way to start Debian's docker-registry beside the embedded one."""

from __future__ import annotations

import shutil

import httpx
import pytest
from netlab_helpers import push_blob

from soci_lab.netlab import DistributionRegistry


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry is not installed")
def test_distribution_registry_starts_serves_and_stops(tmp_path):
    with DistributionRegistry(tmp_path / "d") as dist:
        assert httpx.get(f"{dist.url}/v2/").headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        with httpx.Client(base_url=dist.url) as c:
            digest = push_blob(c, "helper/test", b"payload")
            assert c.get(f"/v2/helper/test/blobs/{digest}").content == b"payload"
        url = dist.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/", timeout=2)
