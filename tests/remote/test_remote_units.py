"""Pure parts of the remote room: challenge parsing, backoff, redaction, ranges, credentials files."""

from __future__ import annotations

import base64
import json
import random

import pytest

from soci_lab.errors import InvalidInput
from soci_lab.remote import (
    Credentials,
    RetryPolicy,
    check_range,
    is_retryable_status,
    load_credentials,
    parse_content_range,
    parse_retry_after,
    parse_www_authenticate,
    redact_url,
    referrers_tag,
)


def test_bearer_challenge_with_quoted_commas():
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.example.com/token"
    assert c.service == "registry.example.com"
    assert c.scopes == ("repository:samalba/my-app:pull,push",)


def test_several_challenges_and_escapes():
    cs = parse_www_authenticate('Basic realm="a \\"quoted\\" realm", Bearer realm=https://x/t, error="invalid_token"')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].realm == 'a "quoted" realm'
    assert cs[1].realm == "https://x/t"
    assert cs[1].params["error"] == "invalid_token"


def test_multiple_scopes_are_space_separated():
    [c] = parse_www_authenticate('Bearer realm="r",scope="repository:a:pull repository:b:pull"')
    assert c.scopes == ("repository:a:pull", "repository:b:pull")


def test_retryable_statuses_follow_go_retryablehttp():
    assert is_retryable_status(429)
    assert all(is_retryable_status(s) for s in (500, 502, 503, 504, 599))
    assert not is_retryable_status(501)
    assert not any(is_retryable_status(s) for s in (200, 206, 400, 401, 403, 404, 416))


def test_backoff_doubles_from_30ms_with_jitter_below_one_eighth():
    policy = RetryPolicy()  # soci's defaults
    assert policy.max_retries == 8
    rng = random.Random(1)
    for attempt in range(8):
        d = 0.030 * 2**attempt
        for _ in range(50):
            w = policy.delay(attempt, rng=rng)
            assert d <= w < d + d / 8
    capped = RetryPolicy(8, 0.030, 0.1)
    assert capped.base_delay(10) == 0.1


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(8, 0.030, 5.0)
    assert policy.base_delay(0, retry_after=2.0) == 2.0
    assert policy.base_delay(0, retry_after=60.0) == 5.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_redact_url_hides_query_values_and_userinfo():
    url = "https://user:pw@bucket.s3.amazonaws.com/blob?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/x"
    red = redact_url(url)
    assert "abc123" not in red and "AKIA" not in red and "pw" not in red
    assert red.startswith("https://bucket.s3.amazonaws.com/blob?")
    assert "X-Amz-Signature=REDACTED" in red


def test_check_range_rejects_illogical_ranges():
    check_range(0, 0)
    check_range(5, 10)
    for lower, upper in ((-1, 5), (10, 5), (0, -1)):
        with pytest.raises(InvalidInput, match="illogical content range"):
            check_range(lower, upper)
    with pytest.raises(InvalidInput):
        check_range(1.5, 3)  # type: ignore[arg-type]


def test_parse_content_range():
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)
    assert parse_content_range("items 0-1/2") is None
    assert parse_content_range(None) is None


def test_referrers_tag_schema():
    d = "sha256:" + "ab" * 32
    assert referrers_tag(d) == "sha256-" + "ab" * 32
    d512 = "sha512:" + "cd" * 64
    assert referrers_tag(d512) == "sha512-" + "cd" * 32  # ref truncated to 64 characters


def test_credentials_never_show_the_password():
    c = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(c) and "hunter2" not in str(c) and "alice" not in repr(c)
    assert Credentials.coerce("bob:pa:ss").basic_header() == "Basic " + base64.b64encode(b"bob:pa:ss").decode()
    with pytest.raises(InvalidInput):
        Credentials.coerce("no-colon")


def test_credentials_from_docker_config(tmp_path, monkeypatch):
    auth = base64.b64encode(b"alice:s3cret").decode()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {"https://reg.example.com:5000": {"auth": auth},
                                         "other.example.com": {"auth": "not base64!"}},
                               "credHelpers": {"ecr.example.com": "ecr-login"}}))
    found = load_credentials("reg.example.com:5000", files=[cfg])
    assert found.credentials is not None and found.credentials.username == "alice"
    assert load_credentials("other.example.com", files=[cfg]).credentials is None
    helper = load_credentials("ecr.example.com", files=[cfg])
    assert helper.credentials is None and "ecr-login" in (helper.note or "")
    assert load_credentials("nowhere.example.com", files=[tmp_path / "missing.json"]).credentials is None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(cfg))
    assert load_credentials("reg.example.com:5000").credentials is not None


def test_client_targets_and_plain_http_rules():
    from soci_lab.remote import RegistryClient

    rc = RegistryClient("registry.example.com/team/app:1.0")
    assert rc.base_url == "https://registry.example.com" and rc.default_repository == "team/app"
    assert RegistryClient("registry.example.com:5000", insecure=True).base_url == "http://registry.example.com:5000"
    assert RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("http://[::1]:5000").base_url == "http://[::1]:5000"
    with pytest.raises(InvalidInput, match="plain HTTP"):
        RegistryClient("http://registry.example.com")
    with pytest.raises(InvalidInput):
        RegistryClient("oci:/tmp/layout:tag")
    with pytest.raises(InvalidInput, match="is on"):
        rc.blob_url(__import__("soci_lab.oci", fromlist=["Reference"]).Reference.parse("other.example.com/a:1"),
                    "sha256:" + "0" * 64)
