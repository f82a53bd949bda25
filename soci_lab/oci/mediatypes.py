"""Media types of the OCI image spec, Docker's schema 2, and SOCI, and what a layer's type says about it."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#: SOCI (soci/soci_index.go)
SOCI_INDEX_V1 = "application/vnd.amazon.soci.index.v1+json"
SOCI_INDEX_V2 = "application/vnd.amazon.soci.index.v2+json"
SOCI_LAYER = "application/octet-stream"
SOCI_PREFETCH = "application/vnd.amazon.soci.prefetch.v1+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

#: The Accept list sent with every manifest request: everything soci_lab can read.
MANIFEST_ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

_LAYER_COMPRESSION = {
    OCI_LAYER_TAR: "uncompressed",
    OCI_LAYER_NONDIST_TAR: "uncompressed",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER_TAR: "unknown",  # containerd: "may be compressed"
}


def is_layer(media_type: str) -> bool:
    """Whether ``media_type`` is an image layer (any compression)."""
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> str:
    """``gzip``, ``zstd``, ``uncompressed`` or ``unknown`` (containerd's DiffCompression, as SOCI maps it)."""
    from ..errors import UnsupportedMediaType

    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedMediaType(f"not a layer media type: {media_type!r}") from None


def layer_media_type(compression: str, docker: bool = False) -> str:
    """The layer media type for a compression (``gzip``, ``zstd``, ``none``/``uncompressed``)."""
    from ..errors import InvalidInput

    table = (
        {"gzip": DOCKER_LAYER_GZIP, "none": DOCKER_LAYER_TAR, "uncompressed": DOCKER_LAYER_TAR}
        if docker
        else {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR, "uncompressed": OCI_LAYER_TAR}
    )
    try:
        return table[compression]
    except KeyError:
        raise InvalidInput(f"unknown layer compression {compression!r} (gzip, zstd or none)") from None
