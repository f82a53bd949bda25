import pytest

from soci_lab.config import Config
from soci_lab.errors import ConfigError


def test_defaults_are_upstreams():
    c = Config()
    assert c.pull_modes.soci_v1.enable is False
    assert c.pull_modes.soci_v2.enable is True
    assert c.background_fetch.fetch_period_msec == 500
    assert c.background_fetch.silence_period_msec == 30_000
    assert c.background_fetch.max_queue_size == 300 and c.background_fetch.drop_policy == "newest"
    assert c.http.max_retries == 8 and c.http.min_wait_msec == 30
    p = c.pull_modes.parallel_pull_unpack
    assert (p.max_concurrent_downloads, p.max_concurrent_downloads_per_image) == (-1, 3)
    assert (p.max_concurrent_unpacks, p.max_concurrent_unpacks_per_image) == (-1, 1)
    assert p.chunk_size_bytes() == -1
    assert c.external_artifact_store.timeout_sec == 2


def test_loads_a_production_style_toml(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text(
        """
metrics_address = "127.0.0.1:8000"
[pull_modes.soci_v1]
enable = true
[pull_modes.parallel_pull_unpack]
enable = true
max_concurrent_downloads = 50
max_concurrent_downloads_per_image = 10
concurrent_download_chunk_size = "8mb"
[pull_modes.parallel_pull_unpack.decompress_streams."gzip"]
path = "/usr/bin/unpigz"
args = ["-d", "-c"]
[external_artifact_store]
enable = true
endpoint = "http://127.0.0.1:39091/"
timeout_sec = 5
fallback_to_registry = true
"""
    )
    c = Config.from_toml(f)
    assert c.pull_modes.soci_v1.enable
    p = c.pull_modes.parallel_pull_unpack
    assert p.chunk_size_bytes() == 8 << 20
    assert p.decompress_streams["gzip"].args == ["-d", "-c"]
    assert c.external_artifact_store.endpoint == "http://127.0.0.1:39091"
    assert c.unknown == {"metrics_address": "127.0.0.1:8000"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[pull_modes.parallel_pull_unpack]\nmax_concurrent_downloads = 2\n", "per-image download"),
        ("[external_artifact_store]\nenable = true\n", "endpoint must be set"),
        ("[background_fetch]\ndrop_policy = 'random'\n", "drop_policy"),
        ("[http]\nmax_retries = 'many'\n", "http.max_retries must be an integer"),
        ("[http\n", "not valid TOML"),
        ("[pull_modes.parallel_pull_unpack]\nconcurrent_download_chunk_size = 'huge'\n", "chunk_size"),
    ],
)
def test_bad_configs_get_one_clear_error(tmp_path, toml, message):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        Config.from_toml(f)
