import httpx


def test_distribution_fixture_serves_v2(distribution_registry):
    r = httpx.get(f"{distribution_registry.url}/v2/")
    assert r.status_code == 200
    assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
