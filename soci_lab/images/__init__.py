"""Images: build OCI images from directories (one deterministic layer per directory), copy them between
registries and OCI layouts, and materialise the sample image the demo uses.
"""

from .build import BuildResult, BuiltLayer, LayerSpec, build_image, build_layer
from .compress import COMPRESSIONS, make_compressor
from .config import RuntimeConfig, created_time, image_config, image_manifest
from .tarwriter import TarStats, write_tree_tar

__all__ = [
    "COMPRESSIONS",
    "BuildResult",
    "BuiltLayer",
    "LayerSpec",
    "RuntimeConfig",
    "TarStats",
    "build_image",
    "build_layer",
    "created_time",
    "image_config",
    "image_manifest",
    "make_compressor",
    "write_tree_tar",
]
