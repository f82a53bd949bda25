import hashlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci_lab.errors import DigestMismatch, InvalidDigest, SizeMismatch
from soci_lab.oci import Digest


@given(st.binary(max_size=4096), st.sampled_from(["sha256", "sha512"]))
def test_from_bytes_parses_back_and_verifies(data, alg):
    d = Digest.from_bytes(data, alg)
    assert Digest.parse(str(d)) == d
    assert d.algorithm == alg and d.hex == hashlib.new(alg, data).hexdigest()
    v = d.verifier(len(data))
    for i in range(0, len(data), 97):
        v.update(data[i : i + 97])
    assert v.verified()
    v.check()
    assert Digest.from_file(io.BytesIO(data), alg) == d


@given(st.binary(min_size=1, max_size=512), st.integers(min_value=0, max_value=511))
def test_any_flipped_byte_fails_verification(data, pos):
    pos %= len(data)
    bad = bytearray(data)
    bad[pos] ^= 0x01
    v = Digest.from_bytes(data).verifier()
    v.update(bytes(bad))
    assert not v.verified()
    with pytest.raises(DigestMismatch, match="does not match"):
        v.check()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "sha256:" + "g" * 64,
        " sha256:" + "a" * 64,
    ],
)
def test_malformed_digests(bad):
    with pytest.raises(InvalidDigest):
        Digest(bad)


def test_short_and_long_bodies_are_size_errors():
    d = Digest.from_bytes(b"hello")
    v = d.verifier(5)
    v.update(b"hell")
    with pytest.raises(SizeMismatch, match="got 4 bytes, expected 5"):
        v.check()
    with pytest.raises(SizeMismatch, match="longer"):
        d.verifier(5).update(b"hello!")
