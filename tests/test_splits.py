"""smil.data.splits: seeded splits by group."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smil.data.splits import parse_fractions, split_by_group, split_sizes
from smil.errors import ConfigError


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 30).map(lambda g: f"session{g}"), min_size=1, max_size=200),
    seed=st.integers(0, 2**31),
)
def test_a_group_never_spans_two_splits(groups: list[str], seed: int) -> None:
    codes = split_by_group(groups, seed=seed)
    assert codes.shape == (len(groups),) and codes.dtype == np.uint8
    by_group: dict[str, set[int]] = {}
    for g, c in zip(groups, codes):
        by_group.setdefault(g, set()).add(int(c))
    assert all(len(c) == 1 for c in by_group.values())
    if len(by_group) >= 3:
        assert set(codes.tolist()) == {0, 1, 2}, "every split gets a group when there are >= 3 groups"


def test_deterministic_and_seeded() -> None:
    groups = [f"g{i % 50}" for i in range(500)]
    a, b = split_by_group(groups, seed=1), split_by_group(groups, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, split_by_group(groups, seed=2))
    # the order of samples does not change which split a group goes to
    perm = np.random.default_rng(0).permutation(len(groups))
    shuffled = split_by_group([groups[i] for i in perm], seed=1)
    assert np.array_equal(shuffled, a[perm])


def test_fractions_are_followed_in_samples() -> None:
    codes = split_by_group([str(i) for i in range(1000)], (0.7, 0.2, 0.1), seed=0)
    assert split_sizes(codes) == {"train": 700, "val": 200, "test": 100}
    # uneven groups: the sample counts still come close
    groups = [f"g{i}" for i in range(60) for _ in range(1 + i % 7)]
    sizes = split_sizes(split_by_group(groups, seed=4))
    assert abs(sizes["train"] / len(groups) - 0.8) < 0.06


def test_few_groups() -> None:
    assert split_by_group(["a"] * 5).tolist() == [0] * 5
    assert sorted(set(split_by_group(["a", "b", "c"]).tolist())) == [0, 1, 2]
    assert split_by_group([]).tolist() == []


def test_zero_fraction_stays_empty() -> None:
    sizes = split_sizes(split_by_group([str(i) for i in range(40)], (0.9, 0.0, 0.1)))
    assert sizes["val"] == 0 and sizes["test"] == 4


@pytest.mark.parametrize("text", ["0.8,0.1", "0.5,0.5,0.5", "a,b,c", "0.9,-0.1,0.2", "0,0.5,0.5"])
def test_bad_fractions(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fractions(text)


def test_parse_fractions() -> None:
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_fractions([1, 0, 0]) == (1.0, 0.0, 0.0)
