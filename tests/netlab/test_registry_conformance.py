"""The embedded registry against the distribution spec, with raw httpx.

Tests taking the ``registry`` fixture run against the embedded registry AND Debian's distribution, which
checks that the expectations written here are those of the real thing; the rest cover what distribution
2.8 lacks (referrers API) or does differently (multi-range), and the embedded registry's auth.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from netlab_helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    error_codes,
    manifest_doc,
    push_blob,
    push_image,
    random_bytes,
    sha256,
    with_digest,
)

from soci_lab.netlab import EmbeddedRegistry, RegistryAuth
from soci_lab.oci import OCILayout


def repo_name(prefix: str = "conf") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(registry):
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        yield c


def test_ping_has_api_version(client):
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_monolithic_push_then_get_and_head(client, registry):
    repo, data = repo_name(), random_bytes(300_000, 1)
    if registry.kind == "embedded":  # distribution 2.8 ignores ?digest= on POST (the spec allows it)
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
        assert r.status_code == 201
    d = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == d
    h = client.head(f"/v2/{repo}/blobs/{d}")
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers["Docker-Content-Digest"] == d
    assert h.content == b""


def test_chunked_push(client):
    repo, data = repo_name(), random_bytes(200_000, 2)
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    parts = [data[:70_000], data[70_000:150_000], data[150_000:]]
    offset = 0
    for part in parts[:2]:
        r = client.patch(
            location,
            content=part,
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(part) - 1}"},
        )
        assert r.status_code == 202, r.text
        offset += len(part)
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = r.headers["Location"]
    r = client.put(with_digest(location, sha256(data)), content=parts[2])
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_chunked_patch_out_of_order_is_416(client, registry):
    if registry.kind == "distribution":
        pytest.skip("distribution 2.8 ignores Content-Range on PATCH")
    repo = repo_name()
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    octets = {"Content-Type": "application/octet-stream"}
    r = client.patch(location, content=b"abcd", headers={"Content-Range": "0-3", **octets})
    assert r.status_code == 202
    r = client.patch(r.headers["Location"], content=b"efgh", headers={"Content-Range": "10-13", **octets})
    assert r.status_code == 416


def test_put_with_wrong_digest_is_refused_and_invisible(client):
    repo, data = repo_name(), b"the real bytes"
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    wrong = sha256(b"other bytes")
    r = client.put(with_digest(location, wrong), content=data)
    assert r.status_code == 400
    assert error_codes(r) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_cross_repository_mount(client):
    src, dst, data = repo_name(), repo_name(), random_bytes(50_000, 3)
    d = push_blob(client, src, data)
    r = client.post(f"/v2/{dst}/blobs/uploads/", params={"mount": d, "from": src})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert client.get(f"/v2/{dst}/blobs/{d}").content == data
    # an unknown blob cannot be mounted: the registry starts an ordinary upload instead
    r = client.post(f"/v2/{dst}/blobs/uploads/", params={"mount": sha256(b"nope"), "from": src})
    assert r.status_code == 202


def test_manifest_by_tag_and_digest(client):
    repo = repo_name()
    digest, body = push_image(client, repo, "v1", [random_bytes(1000, 4)])
    for ref in ("v1", digest):
        r = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        h = client.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert h.status_code == 200
        assert h.headers["Docker-Content-Digest"] == digest
        assert int(h.headers["Content-Length"]) == len(body)


def test_manifest_put_by_wrong_digest_is_refused(client):
    repo = repo_name()
    config, layer = b"{}", b"layer"
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    body = json.dumps(manifest_doc(config, [layer])).encode()
    wrong = sha256(body + b" ")
    r = client.put(f"/v2/{repo}/manifests/{wrong}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert error_codes(r) == ["DIGEST_INVALID"]
    assert client.get(f"/v2/{repo}/manifests/{wrong}", headers={"Accept": OCI_MANIFEST}).status_code == 404
    r = client.put(f"/v2/{repo}/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201


def test_manifest_with_unknown_blob_is_refused(client):
    repo = repo_name()
    push_blob(client, repo, b"{}")
    body = json.dumps(manifest_doc(b"{}", [b"never pushed"])).encode()
    r = client.put(f"/v2/{repo}/manifests/t", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]


def test_invalid_manifest_is_refused(client):
    repo = repo_name()
    push_blob(client, repo, b"{}")
    r = client.put(f"/v2/{repo}/manifests/t", content=b"{not json", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert error_codes(r) == ["MANIFEST_INVALID"]


def test_ranged_gets(client, registry):
    repo, data = repo_name(), random_bytes(10_000, 5)
    d = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{d}"
    r = client.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert r.headers.get("Accept-Ranges") == "bytes" or registry.kind == "distribution"
    r = client.get(url, headers={"Range": "bytes=9000-"})
    assert (r.status_code, r.content) == (206, data[9000:])
    r = client.get(url, headers={"Range": "bytes=-10"})
    assert (r.status_code, r.content) == (206, data[-10:])
    r = client.get(url, headers={"Range": "bytes=9990-20000"})  # end clipped to the size
    assert (r.status_code, r.content) == (206, data[9990:])
    # distribution's 416 announces the blob's Content-Length but sends a short error text: read headers only
    with client.stream("GET", url, headers={"Range": f"bytes={len(data)}-{len(data) + 10}"}) as r:
        assert r.status_code == 416
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_tags_list_and_pagination(client, registry):
    repo = repo_name()
    for tag in ("c", "a", "b"):
        push_image(client, repo, tag, [tag.encode() * 10])
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.json()["name"] == repo
    assert sorted(r.json()["tags"]) == ["a", "b", "c"]
    if registry.kind == "distribution":
        return  # distribution 2.8 lists tags unsorted, so its pages differ
    assert r.json()["tags"] == ["a", "b", "c"]
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert 'rel="next"' in r.headers["Link"]
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c"]


def test_error_codes(client, registry):
    repo = repo_name()
    push_image(client, repo, "v1", [b"x"])
    r = client.get(f"/v2/{repo}/manifests/nope", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404
    assert error_codes(r) == ["MANIFEST_UNKNOWN"]
    r = client.get(f"/v2/{repo}/blobs/{sha256(b'absent')}")
    assert r.status_code == 404
    if registry.kind == "embedded":  # distribution answers HEAD/GET 404s of blobs with an empty body
        assert error_codes(r) == ["BLOB_UNKNOWN"]
    r = client.get(f"/v2/{repo_name('nobody')}/tags/list")
    assert r.status_code == 404
    assert error_codes(r) == ["NAME_UNKNOWN"]
    r = client.get("/v2/Bad_Name/tags/list")
    assert r.status_code in (400, 404)
    if registry.kind == "embedded":
        assert error_codes(r) == ["NAME_INVALID"]


def test_delete_manifest_by_digest(client, registry):
    repo = repo_name()
    digest, _ = push_image(client, repo, "gone", [b"y"])
    r = client.delete(f"/v2/{repo}/manifests/{digest}")
    assert r.status_code == 202
    assert client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).status_code == 404


# --- embedded only ------------------------------------------------------------------------------------


@pytest.fixture
def eclient(embedded_registry):
    with httpx.Client(base_url=embedded_registry.url, timeout=30) as c:
        yield c


def test_multiple_ranges_are_refused(eclient):
    repo = repo_name()
    d = push_blob(eclient, repo, random_bytes(1000, 6))
    r = eclient.get(f"/v2/{repo}/blobs/{d}", headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 416
    assert error_codes(r) == ["RANGE_INVALID"]


def test_referrers_api(eclient):
    repo = repo_name()
    subject_digest, subject_body = push_image(eclient, repo, "app", [b"app layer"])
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)}
    push_blob(eclient, repo, b"{}")
    # one referrer with an explicit artifactType, one whose config media type stands in for it
    sig = {**manifest_doc(b"{}", [b"app layer"]), "artifactType": "application/vnd.example.sig", "subject": subject}
    sig["config"]["mediaType"] = "application/vnd.oci.empty.v1+json"
    sig["annotations"] = {"org.example.kind": "signature"}
    sbom = {**manifest_doc(b"{}", [b"app layer"]), "subject": subject}
    sbom["config"]["mediaType"] = "application/vnd.example.sbom"
    digests = {}
    for name, doc in (("sig", sig), ("sbom", sbom)):
        body = json.dumps(doc).encode()
        r = eclient.put(f"/v2/{repo}/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject_digest
        digests[name] = sha256(body)
    r = eclient.get(f"/v2/{repo}/referrers/{subject_digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    index = r.json()
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    by_type = {m["artifactType"]: m for m in index["manifests"]}
    assert set(by_type) == {"application/vnd.example.sig", "application/vnd.example.sbom"}
    assert by_type["application/vnd.example.sig"]["digest"] == digests["sig"]
    assert by_type["application/vnd.example.sig"]["annotations"] == {"org.example.kind": "signature"}
    r = eclient.get(f"/v2/{repo}/referrers/{subject_digest}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [digests["sbom"]]
    r = eclient.get(f"/v2/{repo}/referrers/{sha256(b'no such subject')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = eclient.get(f"/v2/{repo}/referrers/sha256:xyz")
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


def test_repository_is_an_oci_layout_on_disk(tmp_path):
    with EmbeddedRegistry(root=tmp_path) as reg, httpx.Client(base_url=reg.url) as c:
        digest, body = push_image(c, "lib/app", "v2", [b"z" * 100])
    layout = OCILayout(tmp_path / "lib" / "app", create=False)
    assert layout.resolve("v2").digest == digest
    assert layout.read_blob(digest) == body


def test_serves_an_existing_layout(tmp_path):
    layout = OCILayout(tmp_path / "pre" / "made")
    layer = layout.write_blob(b"layer bytes")
    assert layer
    with EmbeddedRegistry(root=tmp_path) as reg:
        r = httpx.get(f"{reg.url}/v2/pre/made/blobs/{layer}")
        assert r.content == b"layer bytes"
        assert httpx.get(f"{reg.url}/v2/_catalog").json() == {"repositories": ["pre/made"]}


def test_layouts_served_in_place(tmp_path):
    from soci_lab.errors import InvalidLayout

    elsewhere = OCILayout(tmp_path / "elsewhere")
    blob = elsewhere.write_blob(b"in place")
    with EmbeddedRegistry(root=tmp_path / "root", layouts={"mapped/repo": tmp_path / "elsewhere"}) as reg:
        assert httpx.get(f"{reg.url}/v2/mapped/repo/blobs/{blob}").content == b"in place"
        assert httpx.get(f"{reg.url}/v2/_catalog").json() == {"repositories": ["mapped/repo"]}
    with pytest.raises(InvalidLayout):
        EmbeddedRegistry(root=tmp_path / "root", layouts={"x": tmp_path / "not-a-layout"})


def _challenge_params(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    out = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def test_token_auth_flow(tmp_path):
    auth = RegistryAuth(users={"alice": "s3cret"})
    with EmbeddedRegistry(root=tmp_path, auth=auth) as reg, httpx.Client(base_url=reg.url) as c:
        r = c.get("/v2/")
        assert r.status_code == 401
        assert error_codes(r) == ["UNAUTHORIZED"]
        r = c.get("/v2/team/app/manifests/latest")
        assert r.status_code == 401
        params = _challenge_params(r.headers["WWW-Authenticate"])
        assert params["realm"] == f"{reg.url}/token"
        assert params["scope"] == "repository:team/app:pull"
        # wrong password: no token
        query = {"service": params["service"], "scope": params["scope"]}
        t = c.get(params["realm"], params=query, auth=("alice", "x"))
        assert t.status_code == 401
        # a pull token: pulls work, pushes are refused with a push challenge
        t = c.get(params["realm"], params=query, auth=("alice", "s3cret"))
        assert t.status_code == 200
        pull = {"Authorization": f"Bearer {t.json()['token']}"}
        assert c.get("/v2/", headers=pull).status_code == 200
        r = c.get("/v2/team/app/tags/list", headers=pull)
        assert r.status_code == 404  # authorised, repository does not exist yet
        r = c.post("/v2/team/app/blobs/uploads/", headers=pull)
        assert r.status_code == 401
        assert _challenge_params(r.headers["WWW-Authenticate"])["scope"] == "repository:team/app:pull,push"
        # a push token (POST form, OAuth2 password grant) lets the push through
        t = c.post(
            "/token",
            data={
                "grant_type": "password",
                "username": "alice",
                "password": "s3cret",
                "service": params["service"],
                "scope": "repository:team/app:pull,push",
            },
        )
        push = {"Authorization": f"Bearer {t.json()['access_token']}"}
        r = c.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x", headers=push)
        assert r.status_code == 201
        # a token for another repository grants nothing here; a forged one neither
        t = c.get("/token", params={"scope": "repository:other:pull"}, auth=("alice", "s3cret"))
        other = {"Authorization": f"Bearer {t.json()['token']}"}
        assert c.get("/v2/team/app/tags/list", headers=other).status_code == 401
        assert c.get("/v2/", headers={"Authorization": "Bearer forged"}).status_code == 401
        assert reg.tokens_issued == 3


def test_token_expiry(tmp_path):
    import time

    with EmbeddedRegistry(root=tmp_path, auth=RegistryAuth(users={"u": "p"}, token_ttl=0.3)) as reg:
        t = httpx.get(f"{reg.url}/token", params={"scope": "repository:r:pull"}, auth=("u", "p")).json()
        headers = {"Authorization": f"Bearer {t['token']}"}
        assert httpx.get(f"{reg.url}/v2/", headers=headers).status_code == 200
        time.sleep(0.5)
        assert httpx.get(f"{reg.url}/v2/", headers=headers).status_code == 401


def test_basic_auth(tmp_path):
    auth = RegistryAuth(users={"bob": "pw"}, scheme="basic")
    with EmbeddedRegistry(root=tmp_path, auth=auth) as reg:
        r = httpx.get(f"{reg.url}/v2/")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert httpx.get(f"{reg.url}/v2/", auth=("bob", "pw")).status_code == 200
        assert httpx.get(f"{reg.url}/v2/", auth=("bob", "nope")).status_code == 401


def test_shaped_registry_meters_blobs(tmp_path):
    import time

    data = random_bytes(1_000_000, 7)
    with EmbeddedRegistry(root=tmp_path, bandwidth="4MB/s", latency="50ms") as reg, httpx.Client(base_url=reg.url) as c:
        d = push_blob(c, "shaped", data)
        t0 = time.monotonic()
        r = c.get(f"/v2/shaped/blobs/{d}")
        elapsed = time.monotonic() - t0
    assert r.content == data
    # 1 MB at 4 MB/s is 0.25 s (+50 ms latency); generous bounds, this asserts the shaping
    assert 0.25 * 0.85 + 0.05 <= elapsed <= 0.25 * 1.15 + 0.05 + 0.3
