from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci_lab.errors import InvalidReference
from soci_lab.oci import Digest, Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000", "a/b", "v1", None),
        (f"localhost/x@{D}", "localhost", "x", None, D),
        (f"reg.example.com/x/y:t@{D}", "reg.example.com", "x/y", "t", D),
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("me/app:1.0", "docker.io", "me/app", "1.0", None),
        ("[::1]:5000/r", "[::1]:5000", "r", "latest", None),
    ],
)
def test_parse(text, registry, repo, tag, digest):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)


def test_layout_refs():
    r = Reference.parse("oci:/tmp/lay:v2")
    assert r.is_layout and r.layout_path == Path("/tmp/lay") and r.tag == "v2"
    r = Reference.parse(f"oci:rel/dir@{D}")
    assert r.layout_path == Path("rel/dir") and r.digest == D


def test_scheme_follows_loopback():
    assert Reference.parse("127.0.0.1:5000/a").base_url() == "http://127.0.0.1:5000"
    assert Reference.parse("[::1]:5000/a").base_url() == "http://[::1]:5000"
    assert Reference.parse("localhost:5000/a").base_url() == "http://localhost:5000"
    assert Reference.parse("reg.example.com/a").base_url() == "https://reg.example.com"
    assert Reference.parse("reg.example.com/a").base_url(insecure=True) == "http://reg.example.com"
    assert Reference.parse("docker.io/library/x").base_url() == "https://registry-1.docker.io"


@pytest.mark.parametrize(
    "bad",
    ["", "UPPER/case", "host:5000/a:b:c", "a/b:", "a//b", "a/b@sha256:zz", "a/b:" + "t" * 200, " a", "oci:", "a/b@"],
)
def test_malformed(bad):
    with pytest.raises(InvalidReference):
        Reference.parse(bad)


component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)


@given(
    st.lists(component, min_size=1, max_size=3),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    st.binary(max_size=8),
)
def test_round_trip(parts, tag, payload):
    text = f"127.0.0.1:5000/{'/'.join(parts)}:{tag}@{Digest.from_bytes(payload)}"
    assert str(Reference.parse(text)) == text
    assert Reference.parse(str(Reference.parse(text))) == Reference.parse(text)
