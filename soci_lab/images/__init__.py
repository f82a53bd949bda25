"""Images: build OCI images from directories (one deterministic layer per directory), push them or write
them to OCI layouts, copy them between registries and layouts, verify every digest of an image, and
materialise the sample image the demo uses.

- ``build_image(layers, ref, ...)`` → ``BuildResult`` (``build.py``; tar in ``tarwriter.py``,
  compression in ``compress.py``, config/manifest in ``config.py``, push in ``push.py``)
- ``copy_image(src, dst, ...)`` → ``CopyResult`` (``copy.py``)
- ``verify_image(ref, ...)`` → ``VerifiedImage`` (``verify.py``)
- ``sample_image_trees(dest_dir, scale=1.0)`` → layer directories; ``build_sample_image(ref, workdir)``
  (``sample.py``)
"""

from .build import BuildResult, BuiltLayer, LayerSpec, build_image, build_layer
from .compress import COMPRESSIONS, make_compressor
from .config import RuntimeConfig, created_time, image_config, image_manifest
from .copy import CopyResult, acopy_image, copy_image
from .sample import build_sample_image, sample_image_trees
from .tarwriter import TarStats, write_tree_tar
from .verify import VerifiedImage, VerifiedLayer, verify_image

__all__ = [
    "COMPRESSIONS",
    "BuildResult",
    "BuiltLayer",
    "CopyResult",
    "LayerSpec",
    "RuntimeConfig",
    "TarStats",
    "VerifiedImage",
    "VerifiedLayer",
    "acopy_image",
    "build_image",
    "build_layer",
    "build_sample_image",
    "copy_image",
    "created_time",
    "image_config",
    "image_manifest",
    "make_compressor",
    "sample_image_trees",
    "verify_image",
    "write_tree_tar",
]
