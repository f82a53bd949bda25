import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci_lab.errors import InvalidInput
from soci_lab.units import parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4194304", 4194304), ("4MiB", 4 << 20), ("8mb", 8 << 20), ("1GiB", 1 << 30), (" 1.5 kb ", 1536), ("0", 0)],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("100Mbit", 12.5e6), ("12.5MB/s", 12.5e6), ("1Gbit", 125e6), ("1000", 1000.0)]
)
def test_rates(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "expected"), [("20ms", 0.02), ("1.5s", 1.5), ("2m", 120.0), ("3", 3.0)])
def test_durations(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "x", "4XB", "-1", "1..2mb", "mb"])
def test_bad_sizes_name_the_input(bad):
    with pytest.raises(InvalidInput, match="not a size"):
        parse_size(bad)


@pytest.mark.parametrize("bad", ["0Mbit", "fast", "10 parsecs"])
def test_bad_rates(bad):
    with pytest.raises(InvalidInput):
        parse_rate(bad)


@given(st.integers(min_value=0, max_value=1 << 40))
def test_plain_integers_round_trip(n):
    assert parse_size(str(n)) == n
