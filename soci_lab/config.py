"""Every knob of soci_lab, shaped like soci-snapshotter's ``config.toml``.

Sections and keys mirror upstream (``[http]``, ``[blob]``, ``[fuse]``, ``[background_fetch]``,
``[prefetch]``, ``[pull_modes.*]``, ``[external_artifact_store]``) with upstream's defaults, so a user can
load a production config and use it for a real or a simulated run.

Loading is strict: a key or section that is neither modelled here nor one of soci-snapshotter's own
(``UPSTREAM_ONLY``: ``metrics_address``, ``[cri_keychain]``…, kept in ``Config.unknown`` so a production
file loads) is an error naming the key and the closest valid one, and a number out of its range
(``max_retries = -5``) is an error too: a typo must not silently leave a default in force.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError
from .units import parse_size


@dataclass
class HTTPConfig:
    """``[http]``: retries and timeouts of every registry request (go-retryablehttp defaults)."""

    max_retries: int = 8
    min_wait_msec: int = 30
    max_wait_msec: int = 300_000
    dial_timeout_msec: int = 3_000
    response_header_timeout_msec: int = 3_000
    request_timeout_msec: int = 300_000


@dataclass
class BlobConfig:
    """``[blob]``: remote blob access for lazy layers."""

    valid_interval: int = 60
    check_always: bool = False
    fetching_timeout_sec: int = 300
    max_retries: int = 8
    min_wait_msec: int = 30
    max_wait_msec: int = 300_000
    max_span_verification_retries: int = 0
    #: accepted for upstream's config files; changes nothing: every ranged GET here already asks for one range
    force_single_range_mode: bool = False


@dataclass
class FuseConfig:
    """``[fuse]``: kernel cache timeouts of the FUSE layer mounts."""

    attr_timeout: int = 1
    entry_timeout: int = 1
    negative_timeout: int = 1


@dataclass
class BackgroundFetchConfig:
    """``[background_fetch]``: the rate-limited sequential fetcher of all spans."""

    disable: bool = False
    silence_period_msec: int = 30_000
    fetch_period_msec: int = 500
    max_queue_size: int = 300
    drop_policy: str = "newest"
    emit_metric_period_sec: int = 10

    def __post_init__(self) -> None:
        if self.drop_policy not in ("newest", "oldest"):
            raise ConfigError(f"background_fetch.drop_policy must be 'newest' or 'oldest', not {self.drop_policy!r}")
        if self.max_queue_size == 0:
            self.max_queue_size = 300


@dataclass
class PrefetchConfig:
    """``[prefetch]``: span ranges of prefetch artifacts fetched before a layer is ready."""

    enable: bool = False
    max_concurrency: int = 0


@dataclass
class SociV1Config:
    enable: bool = False


@dataclass
class SociV2Config:
    enable: bool = True


@dataclass
class DecompressStream:
    """An external decompressor (``decompress_streams."gzip"``), run without a shell."""

    path: str = ""
    args: list[str] = field(default_factory=list)


@dataclass
class ParallelPullUnpackConfig:
    """``[pull_modes.parallel_pull_unpack]`` (upstream ``config/parallel.go``)."""

    enable: bool = False
    experimental_parallel_pull_as_fallback: bool = False
    max_concurrent_downloads: int = -1
    max_concurrent_downloads_per_image: int = 3
    concurrent_download_chunk_size: str = ""
    max_concurrent_unpacks: int = -1
    max_concurrent_unpacks_per_image: int = 1
    discard_unpacked_layers: bool = False
    decompress_streams: dict[str, DecompressStream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, limit, per_image in (
            ("download", self.max_concurrent_downloads, self.max_concurrent_downloads_per_image),
            ("unpack", self.max_concurrent_unpacks, self.max_concurrent_unpacks_per_image),
        ):
            if limit > 0 and per_image > limit:
                raise ConfigError(f"global {kind} limit less than per-image {kind} limit ({limit} < {per_image})")
        self.chunk_size_bytes()  # validate early
        self.decompress_streams = {
            k: v if isinstance(v, DecompressStream) else _build(DecompressStream, v, f"decompress_streams.{k}")
            for k, v in self.decompress_streams.items()
        }

    def chunk_size_bytes(self) -> int:
        """The chunk size in bytes, or -1 for "whole layer in one request" (upstream: ``""`` and ``0``)."""
        text = self.concurrent_download_chunk_size.strip()
        if not text:
            return -1
        try:
            size = parse_size(text)
        except Exception as exc:
            raise ConfigError(f"concurrent_download_chunk_size: {exc}") from None
        return size if size > 0 else -1


@dataclass
class PullModesConfig:
    soci_v1: SociV1Config = field(default_factory=SociV1Config)
    soci_v2: SociV2Config = field(default_factory=SociV2Config)
    parallel_pull_unpack: ParallelPullUnpackConfig = field(default_factory=ParallelPullUnpackConfig)


@dataclass
class ExternalArtifactStoreConfig:
    """``[external_artifact_store]`` (Hermes, hermes.md §2.1)."""

    enable: bool = False
    endpoint: str = ""
    timeout_sec: int = 2
    platform: str = ""
    fallback_to_registry: bool = False

    def __post_init__(self) -> None:
        if self.enable and not self.endpoint:
            raise ConfigError(
                "external_artifact_store.endpoint must be set when external_artifact_store.enable is true"
            )
        if self.timeout_sec == 0:
            self.timeout_sec = 2
        self.endpoint = self.endpoint.rstrip("/")


@dataclass
class Config:
    """The whole configuration; ``Config()`` is upstream's defaults."""

    http: HTTPConfig = field(default_factory=HTTPConfig)
    blob: BlobConfig = field(default_factory=BlobConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    background_fetch: BackgroundFetchConfig = field(default_factory=BackgroundFetchConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    pull_modes: PullModesConfig = field(default_factory=PullModesConfig)
    external_artifact_store: ExternalArtifactStoreConfig = field(default_factory=ExternalArtifactStoreConfig)
    #: snapshotter-level keys (``max_concurrency``, ``overlay_opaque_type``, ``disable_verification``…)
    max_concurrency: int = 100
    disable_verification: bool = False
    overlay_opaque_type: str = "trusted"
    filesystem_cache_type: str = ""
    #: soci_lab only — when a lazily served layer is checked against its zTOC (docs/formats.md §5): ``auto``
    #: (in the background for a zTOC the mounted manifest names, before serving a v1 referrer's or the
    #: artifact store's), ``before_serving`` (always), ``background`` (serve at once, as upstream)
    lazy_layer_check: str = "auto"
    unknown: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """Load a soci-style TOML file; missing keys keep upstream's defaults."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        unknown: dict[str, Any] = {}
        cfg = _build(cls, data, "", unknown)
        cfg.unknown = unknown
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("unknown")
        return out


#: soci-snapshotter's own keys and sections that soci_lab does not model (``config/config.toml`` upstream):
#: accepted and kept in ``Config.unknown``. A section listed here takes any keys.
UPSTREAM_ONLY: dict[str, frozenset[str]] = {
    "": frozenset({
        "http_cache_type", "resolve_result_entry", "debug", "no_prometheus", "mount_timeout_sec",
        "fuse_metrics_emit_wait_duration_sec", "metrics_address", "metrics_network", "debug_address",
        "metadata_store", "skip_check_snapshotter_supported", "directory_cache", "content_store", "resolver",
        "kubeconfig_keychain", "cri_keychain", "snapshotter", "registry", "Mirror", "RegistryConfig", "auth", "tls",
    }),
    "fuse": frozenset({"log_fuse_operations"}),
}

#: integer keys that may go below zero, and how far (everything else must be >= 0)
INT_MINIMUM: dict[str, int | None] = {
    "pull_modes.parallel_pull_unpack.max_concurrent_downloads": -1,  # -1: unlimited
    "pull_modes.parallel_pull_unpack.max_concurrent_downloads_per_image": -1,
    "pull_modes.parallel_pull_unpack.max_concurrent_unpacks": -1,
    "pull_modes.parallel_pull_unpack.max_concurrent_unpacks_per_image": -1,
    "blob.max_span_verification_retries": None,  # negative: upstream's default of 3
}


def _unknown_key(where: str, key: str, modelled: set[str], upstream: frozenset[str], is_table: bool) -> ConfigError:
    """The error for a key nobody knows, naming the closest valid one (else listing soci_lab's own)."""
    dotted = f"{where}.{key}" if where else key
    valid = sorted(modelled | upstream)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or \
        difflib.get_close_matches(key.lower(), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {(f'{where}.' if where else '') + near[0]!r}?" if near else \
        f" (soci_lab reads: {', '.join(sorted(modelled))})"
    what = f"section [{dotted}]" if is_table else f"key {dotted!r}"
    return ConfigError(f"unknown config {what}{hint}")


def _build(cls: type, data: Any, where: str, unknown: dict[str, Any] | None = None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section [{where}] must be a table, not {type(data).__name__}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
    upstream = UPSTREAM_ONLY.get(where, frozenset())
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            if key not in upstream:
                raise _unknown_key(where, key, names, upstream, isinstance(value, dict))
            if unknown is not None:
                unknown[dotted] = value
            continue
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, dotted, unknown)
        else:
            kwargs[key] = _coerce(value, hint, dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config [{where or 'root'}]: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {where} must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {where} must be an integer, not {value!r}")
        low = INT_MINIMUM.get(where, 0)
        if low is not None and value < low:
            raise ConfigError(f"config key {where} must be {low} or more, not {value}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {where} must be a string, not {value!r}")
        return value
    return value
