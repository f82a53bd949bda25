"""The OCI model: digests, descriptors, manifests, indexes, configs, platforms, references, and the
OCI image layout used as the local content store. Pure and synchronous; nothing here touches the network.
"""

from . import mediatypes
from .descriptor import Descriptor
from .digest import Digest, DigestVerifier, is_digest
from .gojson import go_json, go_map
from .layout import REF_NAME, BlobWriter, OCILayout
from .manifest import (
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    check_layers_match_config,
    parse_manifest_or_index,
)
from .platform import Platform
from .reference import Reference, is_loopback_host

__all__ = [
    "REF_NAME",
    "BlobWriter",
    "Descriptor",
    "Digest",
    "DigestVerifier",
    "ImageConfig",
    "Index",
    "Manifest",
    "OCILayout",
    "Platform",
    "Reference",
    "canonical_json",
    "check_layers_match_config",
    "go_json",
    "go_map",
    "is_digest",
    "is_loopback_host",
    "mediatypes",
    "parse_manifest_or_index",
]
