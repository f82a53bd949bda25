"""Build a dataset recipe into layer directories and an OCI image, cached.

``build_dataset(name)`` → :class:`DatasetBuild`:

1. the **base** rootfs comes from ``debootstrap --variant=minbase`` of the machine's suite, cached on its
   own (every recipe shares it) under ``CACHE/base/``;
2. a copy of it goes through the recipe's steps (:func:`apply_step`); after each, the tree is snapshot and
   diffed against the previous snapshot into a layer directory (:mod:`.layers`) — :func:`split_into_layers`
   is that loop on any callables, which is how the tests check it on synthetic trees in milliseconds;
3. the layer directories become an OCI image (``soci_lab.images.build_image``) in ``CACHE/<name>-<key>/oci``.

The **cache key** is the builder version and the recipe's digest plus the suite's state (``InRelease``
date and package-list digest: every package version a build can get), the suite, variant and architecture.
A finished build is a directory with ``dataset.json``; a half-done one never is (built under a temporary
name, renamed at the end), and a file lock keeps two builders of one dataset from racing. A new build of a
dataset removes its older builds (one build per dataset in the cache). When the mirror cannot be reached
(the key cannot be known), the cached build is used as it is, with a warning, rather than failing. The cache lives in
``$SOCI_LAB_CACHE/datasets``, else ``~/.cache/soci_lab/datasets``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from . import debian
from .layers import DEFAULT_EXCLUDE, EntryMeta, diff_snapshots, materialize_layer, snapshot_tree
from .recipes import Recipe, Step, get_recipe

log = logging.getLogger(__name__)

FORMAT = "soci_lab.dataset/1"
#: bumped whenever the build logic changes what a layer holds or how the image's documents are written
#: (4: manifests and configs in Go's json.Marshal field order, as upstream), so old cache entries are not reused
BUILDER_VERSION = 4


def cache_root() -> Path:
    """``$SOCI_LAB_CACHE/datasets`` or ``~/.cache/soci_lab/datasets``."""
    env = os.environ.get("SOCI_LAB_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "soci_lab"
    return base / "datasets"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- the layer split, on any tree ------------------------------------------------------------------


@dataclass
class LayerBuild:
    """One layer of a split: its name, directory, what went in, and how long its step took."""

    name: str
    path: str
    added: int
    changed: int
    deleted: int
    files: int
    content_bytes: int
    step_s: float


def split_into_layers(
    rootfs: str | os.PathLike[str],
    steps: Sequence[tuple[str, Callable[[Path], object]]],
    layers_dir: str | os.PathLike[str],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> list[LayerBuild]:
    """Run each ``(name, action)`` on ``rootfs`` in order; after each, write what changed into
    ``layers_dir/NN-name`` (the first layer is everything there is after the first action)."""
    root = Path(rootfs)
    out_dir = Path(layers_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prev: dict[str, EntryMeta] = {}
    built: list[LayerBuild] = []
    for i, (name, action) in enumerate(steps):
        t0 = time.monotonic()
        action(root)
        step_s = time.monotonic() - t0
        snap = snapshot_tree(root, exclude)
        diff = diff_snapshots(prev, snap)
        dest = out_dir / f"{i:02d}-{name}"
        counts = materialize_layer(diff, root, dest, snap)
        built.append(LayerBuild(name, str(dest), len(diff.added), len(diff.changed), len(diff.deleted),
                                counts["files"], counts["bytes"], step_s))
        prev = snap
    return built


def write_files(root: Path, files: dict[str, str] | Any) -> None:
    """Write a step's files into ``root`` (root-owned; 0755 for scripts starting ``#!``, else 0644)."""
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_text(text)
        target.chmod(0o755 if text.startswith("#!") else 0o644)


def apply_step(root: Path, step: Step, *, archive_cache: Path | None) -> None:
    """Do one recipe step on ``root``: install its packages (chrooted), write its files, run its commands."""
    if step.packages:
        debian.apt_install(root, step.packages, archive_cache=archive_cache)
    write_files(root, step.files)
    if step.commands:
        debian.apt_install(root, (), step.commands)


# --- the base rootfs ------------------------------------------------------------------------------


def base_rootfs(suite: str, mirror: str, arch: str, state: dict[str, str], *, variant: str = "minbase",
                cache: Path | None = None) -> Path:
    """The cached ``debootstrap`` rootfs for (suite, variant, arch, suite state); built when missing."""
    root = cache or cache_root()
    key = hashlib.sha256(json.dumps([suite, variant, arch, state], sort_keys=True).encode()).hexdigest()[:16]
    final = root / "base" / f"{suite}-{variant}-{arch}-{key}"
    with _locked(root / "base" / f"{suite}-{variant}-{arch}.lock"):
        if (final / "done").exists():
            return final / "rootfs"
        work = final.with_name(final.name + ".tmp")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        t0 = time.monotonic()
        debian.debootstrap(work / "rootfs", suite, mirror, variant=variant, arch=arch,
                           cache_dir=root / "debs" / suite)
        debian.clean_apt(work / "rootfs")
        (work / "done").write_text(json.dumps({"seconds": time.monotonic() - t0, "state": state}))
        work.rename(final)
        return final / "rootfs"


# --- datasets -------------------------------------------------------------------------------------


@dataclass
class DatasetBuild:
    """A built dataset: where its layers, rootfs and OCI image are, and what went into them."""

    name: str
    key: str
    dir: str
    rootfs: str
    image: str  #: ``oci:DIR:latest``
    manifest_digest: str
    image_bytes: int  #: the image's uncompressed size (sum of its layer tars)
    compressed_bytes: int
    rootfs_file_bytes: int  #: file content bytes of the final rootfs
    layers: list[dict[str, Any]]
    recipe: dict[str, Any]
    suite: dict[str, Any]
    packages: dict[str, str] = field(default_factory=dict)
    build_s: float = 0.0
    cached: bool = False
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetBuild:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a {FORMAT} document")
        return cls(**doc)


def dataset_key(recipe: Recipe, suite: str, arch: str, state: dict[str, str]) -> str:
    """The cache key: recipe digest + suite, variant, architecture and suite state."""
    doc = {"builder": BUILDER_VERSION, "recipe": recipe.digest(), "suite": suite, "variant": recipe.variant,
           "arch": arch, "state": state}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _file_bytes(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel in DEFAULT_EXCLUDE:
            dirnames[:] = []
            continue
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if st.st_mode & 0o170000 == 0o100000:
                total += st.st_size
    return total


def cached_build(name: str, *, cache: str | os.PathLike[str] | None = None,
                 suite: str | None = None) -> DatasetBuild | None:
    """The build of ``name`` that :func:`build_dataset` would return from the cache, or None (never builds).
    Offline, the newest cached build of ``name``."""
    recipe = get_recipe(name)
    root = Path(cache) if cache else cache_root()
    suite_name = suite or debian.host_suite()
    arch = debian.host_arch()
    state, online = debian.suite_state(debian.debian_mirror(suite_name), suite_name, arch)
    meta = root / f"{name}-{dataset_key(recipe, suite_name, arch, state)}" / "dataset.json"
    if not meta.exists() and not online:
        meta = _latest_build(root, name) or meta
    if not meta.exists():
        return None
    built = DatasetBuild.load(meta)
    built.cached = True
    return built


def build_dataset(
    name: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    suite: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DatasetBuild:
    """Build (or take from the cache) the dataset ``name``; see the module docstring."""
    recipe = get_recipe(name)
    say = progress or (lambda msg: log.info("%s", msg))
    root = Path(cache) if cache else cache_root()
    suite_name = suite or debian.host_suite()
    arch = debian.host_arch()
    mirror = debian.debian_mirror(suite_name)
    state, online = debian.suite_state(mirror, suite_name, arch)
    key = dataset_key(recipe, suite_name, arch, state)
    final = root / f"{name}-{key}"
    with _locked(root / f"{name}.lock"):
        meta = final / "dataset.json"
        if not meta.exists() and not online and not force:
            meta = _latest_build(root, name) or meta
            if meta.exists():
                log.warning("%s: the Debian mirror is unreachable; using the cached build %s", name, meta.parent.name)
        if meta.exists() and not force:
            built = DatasetBuild.load(meta)
            built.cached = True
            return built
        if final.exists():
            shutil.rmtree(final)
        t0 = time.monotonic()
        say(f"{name}: base rootfs ({suite_name} {recipe.variant})")
        base = base_rootfs(suite_name, mirror, arch, state, variant=recipe.variant, cache=root)
        work = final.with_name(final.name + ".tmp")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        rootfs = work / "rootfs"

        def copy_base(r: Path) -> None:
            subprocess.run(["cp", "-a", "--one-file-system", str(base), str(r)], check=True)

        archive_cache = root / "apt-archives" / suite_name
        def step_action(step: Step) -> Callable[[Path], object]:
            def run(r: Path) -> None:
                say(f"{name}: {step.name} layer")
                apply_step(r, step, archive_cache=archive_cache)

            return run

        steps: list[tuple[str, Callable[[Path], object]]] = [("base", copy_base)]
        steps += [(step.name, step_action(step)) for step in recipe.steps]
        layers = split_into_layers(rootfs, steps, work / "layers")
        say(f"{name}: image")
        from ..images import build_image

        specs, runtime = _image_inputs(recipe.to_json(), [lb.path for lb in layers])
        image_ref = f"oci:{final / 'oci'}:latest"
        result = build_image(specs, f"oci:{work / 'oci'}:latest", runtime=runtime)
        layer_docs = []
        for lb, bl in zip(layers, result.layers, strict=True):
            doc = asdict(lb)
            doc["path"] = str(final / "layers" / Path(lb.path).name)
            doc.update(digest=str(bl.descriptor.digest), size=bl.descriptor.size,
                       uncompressed_size=bl.uncompressed_size, entries=bl.entries)
            layer_docs.append(doc)
        built = DatasetBuild(
            name=name, key=key, dir=str(final), rootfs=str(final / "rootfs"), image=image_ref,
            manifest_digest=str(result.digest),
            image_bytes=sum(bl.uncompressed_size for bl in result.layers),
            compressed_bytes=sum(bl.descriptor.size for bl in result.layers),
            rootfs_file_bytes=_file_bytes(rootfs),
            layers=layer_docs, recipe=recipe.to_json(),
            suite={"name": suite_name, "arch": arch, **state},
            packages=debian.installed_packages(rootfs),
            build_s=round(time.monotonic() - t0, 1),
        )
        (work / "dataset.json").write_text(json.dumps(built.to_json(), indent=2, sort_keys=True))
        work.rename(final)
        _prune(root, name, keep=final)
        return built


def _latest_build(root: Path, name: str) -> Path | None:
    """The ``dataset.json`` of the newest finished build of ``name`` in the cache, if any."""
    found = [p for p in root.glob(f"{name}-*/dataset.json") if len(p.parent.name) == len(name) + 17]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _prune(root: Path, name: str, keep: Path) -> None:
    """Remove older builds of ``name`` (other keys): a cache holds one build per dataset."""
    for old in root.glob(f"{name}-*"):
        if old != keep and old.is_dir() and len(old.name) == len(keep.name) and (old / "dataset.json").exists():
            shutil.rmtree(old, ignore_errors=True)


def _image_inputs(recipe: dict[str, Any], layer_paths: Sequence[str]) -> tuple[list[Any], Any]:
    """Layer specs (with history text) and the runtime config (cmd, env, cwd) of a recipe's image."""
    from ..images import LayerSpec, RuntimeConfig

    env = [f"{k}={v}" for k, v in sorted({**debian.APT_ENV, **recipe["env"]}.items()) if k != "DEBIAN_FRONTEND"]
    history = ["debootstrap --variant=" + recipe["variant"], *(s["created_by"] for s in recipe["steps"])]
    specs = [LayerSpec(Path(p), created_by=h) for p, h in zip(layer_paths, history, strict=True)]
    return specs, RuntimeConfig(cmd=recipe["cmd"], env=env, working_dir=recipe["cwd"])


def export_image(built: DatasetBuild, ref: str, **kwargs: Any) -> str:
    """Build the dataset's cached layers again into ``ref`` (``oci:PATH[:TAG]`` or a registry ref);
    the layer tars are deterministic, so the digests equal the cached image's. Returns the digest."""
    from ..images import build_image

    specs, runtime = _image_inputs(built.recipe, [lay["path"] for lay in built.layers])
    return str(build_image(specs, ref, runtime=runtime, **kwargs).digest)
