"""Content digests (``algorithm:hex``) and streaming verification.

Only sha256 and sha512 are accepted, as the OCI image spec registers; the hex part must be lowercase and of
the algorithm's length, so a digest string has exactly one spelling and can be used as a file name.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from ..errors import DigestMismatch, InvalidDigest, SizeMismatch

_HEX_LEN = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")


class Digest(str):
    """A validated digest string; behaves as the ``str`` it is, with ``algorithm`` and ``hex`` parts."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str):
            raise InvalidDigest(f"digest must be a string, not {type(value).__name__}")
        m = _DIGEST_RE.fullmatch(value)
        if not m:
            raise InvalidDigest(f"malformed digest {value[:100]!r} (expected algorithm:hex)")
        algorithm, hexpart = m.groups()
        if algorithm not in _HEX_LEN:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} in {value[:100]!r} (sha256 or sha512)")
        if len(hexpart) != _HEX_LEN[algorithm] or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise InvalidDigest(
                f"malformed {algorithm} digest {value[:100]!r}: want {_HEX_LEN[algorithm]} lowercase hex characters"
            )
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:  # type: ignore[override]
        return self.partition(":")[2]

    @classmethod
    def parse(cls, value: str) -> Digest:
        return cls(value)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")

    @classmethod
    def from_file(cls, f: BinaryIO, algorithm: str = "sha256", bufsize: int = 1 << 20) -> Digest:
        h = hashlib.new(algorithm)
        while chunk := f.read(bufsize):
            h.update(chunk)
        return cls(f"{algorithm}:{h.hexdigest()}")

    def verifier(self, size: int | None = None) -> DigestVerifier:
        return DigestVerifier(self, size)

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"


def is_digest(value: str) -> bool:
    try:
        Digest(value)
    except InvalidDigest:
        return False
    return True


class DigestVerifier:
    """Hashes bytes as they stream past and says whether they are the announced content.

    ``size`` (optional) is checked too: a body one byte short fails with ``SizeMismatch`` even before the
    hash is compared, which gives the clearer message for truncated downloads.
    """

    __slots__ = ("_hash", "count", "digest", "size")

    def __init__(self, digest: Digest | str, size: int | None = None) -> None:
        self.digest = Digest(digest)
        self.size = size
        self._hash = hashlib.new(self.digest.algorithm)
        self.count = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise SizeMismatch(f"content of {self.digest} is longer than its announced size {self.size}")

    def actual(self) -> Digest:
        return Digest(f"{self.digest.algorithm}:{self._hash.hexdigest()}")

    def verified(self) -> bool:
        return (self.size is None or self.count == self.size) and self.actual() == self.digest

    def check(self, what: str = "content") -> None:
        """Raise ``SizeMismatch``/``DigestMismatch`` unless the bytes seen are exactly the announced ones."""
        if self.size is not None and self.count != self.size:
            raise SizeMismatch(f"{what} {self.digest}: got {self.count} bytes, expected {self.size}")
        actual = self.actual()
        if actual != self.digest:
            raise DigestMismatch(f"{what} does not match its digest: expected {self.digest}, got {actual}")
