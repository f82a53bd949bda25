"""Properties of the command-line conventions (hypothesis): what follows ``--`` is the command's, verbatim;
``--debug``/``--version`` move to the front wherever they stand; rates and durations need their unit."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci_lab.cli import argtypes, split_argv

word = st.one_of(st.sampled_from(["--debug", "--version", "--", "-x", "--json", "REF", "--out", "d"]),
                 st.text(min_size=0, max_size=8))


@given(st.lists(word, max_size=12))
def test_split_keeps_the_command_verbatim_and_moves_the_global_flags(argv: list[str]) -> None:
    own, cmd = split_argv(argv)
    if "--" in argv:
        i = argv.index("--")
        assert cmd == argv[i + 1 :]  # every word after the first --, options and -- included, untouched
        before = argv[:i]
    else:
        assert cmd is None
        before = argv
    flags = [w for w in before if w in ("--debug", "--version")]
    assert own == flags + [w for w in before if w not in ("--debug", "--version")]


@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False), st.sampled_from(["ms", "s", "us", "m", "h"]))
def test_durations_with_a_unit_parse(value: float, unit: str) -> None:
    text = f"{value:.3f}{unit}"
    assert argtypes.duration(text) == pytest.approx(float(f"{value:.3f}") * {"ms": 1e-3, "s": 1, "us": 1e-6,
                                                                             "m": 60, "h": 3600}[unit])


@given(st.integers(min_value=1, max_value=10**9) | st.floats(min_value=0.01, max_value=1e6).map(lambda v: round(v, 2)))
def test_bare_numbers_are_refused_as_rates_and_durations(value: float) -> None:
    if value == 0:
        return
    for convert in (argtypes.duration, argtypes.rate):
        with pytest.raises(argparse.ArgumentTypeError, match="needs a unit"):
            convert(str(value))


@given(st.floats(min_value=0.01, max_value=1e4).map(lambda v: round(v, 2)), st.sampled_from(["Mbit", "Gbit", "MB/s",
                                                                                          "kbit", "KiB/s"]))
def test_rates_with_a_unit_parse(value: float, unit: str) -> None:
    assert argtypes.rate(f"{value}{unit}") > 0
