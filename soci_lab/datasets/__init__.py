"""Datasets: real images built from Debian packages (recipes), their recorded startup traces, and the
published numbers soci_lab is calibrated against.

- ``RECIPES``/``get_recipe``/``Recipe``/``Step`` — minbase, python-pandas, nodejs, postgresql (``recipes.py``);
- ``build_dataset(name)`` → ``DatasetBuild`` (cached), ``cached_build(name)`` (never builds),
  ``export_image(built, ref)`` (``build.py``; Debian steps in ``debian.py``);
- ``snapshot_tree``/``diff_snapshots``/``materialize_layer``/``split_into_layers`` — the layer split with
  whiteouts (``layers.py``, ``build.py``);
- ``record_startup(built)``/``startup_stats`` — startup trace and fraction of the image read (``startup.py``);
- ``published_numbers()`` — ``datasets/published.csv`` as a DataFrame (``published.py``).
"""

from .build import DatasetBuild, LayerBuild, build_dataset, cache_root, cached_build, export_image, split_into_layers
from .layers import EntryMeta, LayerDiff, diff_snapshots, materialize_layer, snapshot_tree
from .published import published_numbers, published_path
from .recipes import RECIPES, Recipe, Step, get_recipe
from .startup import record_startup, startup_stats

__all__ = [
    "RECIPES",
    "DatasetBuild",
    "EntryMeta",
    "LayerBuild",
    "LayerDiff",
    "Recipe",
    "Step",
    "build_dataset",
    "cache_root",
    "cached_build",
    "diff_snapshots",
    "export_image",
    "get_recipe",
    "materialize_layer",
    "published_numbers",
    "published_path",
    "record_startup",
    "snapshot_tree",
    "split_into_layers",
    "startup_stats",
]
