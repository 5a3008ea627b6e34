"""Seeded train/val/test splits by group.

A *group* is what must never be split across train/val/test: a recording session, the views of one
frame, a replicAnt batch. Every sample of a group lands in the same split, so no frame (and, when the
ingest groups by session, no session) leaks from training into evaluation.

The split is deterministic in ``(set of groups, sample counts per group, fractions, seed)``: the
distinct group names are sorted, shuffled with ``numpy.random.default_rng(seed)``, and cut into three
consecutive runs whose *sample* counts follow the fractions as closely as whole groups allow. Every
split with a non-zero fraction gets at least one group whenever there are enough groups (three for
the default fractions); with fewer groups the later splits stay empty.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from smil.data.schema import SPLIT_NAMES
from smil.errors import ConfigError

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` (or a sequence) into three non-negative fractions summing to 1."""
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(
                f"expected three comma-separated numbers like 0.8,0.1,0.1, got {text!r}", field="split"
            ) from None
    else:
        values = [float(v) for v in text]
    if len(values) != len(SPLIT_NAMES):
        raise ConfigError(
            f"expected {len(SPLIT_NAMES)} fractions ({'/'.join(SPLIT_NAMES)}), got {len(values)}", field="split"
        )
    if any(not np.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"fractions must be >= 0 and sum to 1, got {values}", field="split")
    if values[0] <= 0:
        raise ConfigError("the train fraction must be > 0", field="split")
    return values[0], values[1], values[2]


def split_by_group(
    groups: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> np.ndarray:
    """Assign each sample a split code (0 train, 1 val, 2 test) so that groups are never divided.

    ``groups[i]`` is sample ``i``'s group. Returns ``uint8`` codes of the same length.
    """
    fr = np.asarray(parse_fractions(fractions), dtype=np.float64)
    group_arr = np.asarray([str(g) for g in groups], dtype=object)
    if len(group_arr) == 0:
        return np.zeros(0, dtype=np.uint8)
    names, inverse, counts = np.unique(group_arr.astype(str), return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = counts[order].astype(np.float64)
    n_groups = len(names)

    # assign each shuffled group by where the middle of its samples falls on the cumulative fractions
    bounds = np.cumsum(fr) * sizes.sum()
    middles = np.cumsum(sizes) - sizes / 2
    code_in_order = np.minimum(np.searchsorted(bounds, middles, side="right"), len(fr) - 1)

    # run lengths per split, then make every split with a non-zero fraction non-empty when possible
    runs = np.bincount(code_in_order, minlength=len(fr))
    wanted = [i for i in range(len(fr)) if fr[i] > 0]
    if n_groups >= len(wanted):
        for i in wanted:
            while runs[i] == 0:
                donor = int(np.argmax(runs))
                runs[donor] -= 1
                runs[i] += 1
    code_in_order = np.repeat(np.arange(len(fr)), runs)

    group_code = np.empty(n_groups, dtype=np.uint8)
    group_code[order] = code_in_order
    return group_code[inverse]


def split_sizes(codes: np.ndarray) -> dict[str, int]:
    """``{"train": n, "val": n, "test": n}`` for an array of split codes."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(SPLIT_NAMES))
    return {name: int(counts[i]) for i, name in enumerate(SPLIT_NAMES)}
