"""Batches leave DataLoader workers as one shared-memory buffer, with default_collate's values."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from dataset_factory import make_dataset
from torch.utils.data import DataLoader, default_collate

from smil.data.batching import ItemDict, collate_items
from smil.data.datasets import MultiViewDataset, SingleViewDataset
from smil.errors import DataError


def storages(batch: dict) -> int:
    return len({v.untyped_storage().data_ptr() for v in batch.values()})


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and "params/betas" in y and "mask" in y
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
            assert torch.equal(x[k], y[k]) or torch.allclose(x[k], y[k], equal_nan=True), k


@pytest.fixture
def dataset(tmp_path: Path) -> MultiViewDataset:
    return MultiViewDataset(make_dataset(tmp_path / "d.h5", num_samples=7, num_views=3, invalid={2: [1]}), None, 32)


@pytest.mark.parametrize("collate_fn", [None, collate_items], ids=["default_collate", "collate_items"])
def test_worker_batches_arrive_as_one_buffer_with_default_collate_values(dataset, collate_fn) -> None:
    reference = list(DataLoader(dataset, batch_size=3, num_workers=0))
    shared = list(DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_fn))
    assert_same_batches(reference, shared)
    # one storage for the whole batch: one file descriptor to fetch from the worker, not one per key
    assert all(storages(b) == 1 for b in shared)


def test_collate_items_equals_default_collate_in_process(dataset) -> None:
    items = [dataset[i] for i in range(4)]
    batch = collate_items(items)
    assert_same_batches([default_collate(items)], [batch])
    assert isinstance(batch, ItemDict) and storages(batch) == 1


def test_collate_items_refuses_mismatched_items(dataset) -> None:
    a, b = dataset[0], dataset[1]
    del b["view"]
    with pytest.raises(DataError, match="different keys"):
        collate_items([a, b])
    with pytest.raises(DataError, match="empty"):
        collate_items([])


def test_items_pickle_as_ordinary_dicts_outside_workers(tmp_path: Path) -> None:
    item = SingleViewDataset(make_dataset(tmp_path / "d.h5"), None, 32)[0]
    for clone in (pickle.loads(pickle.dumps(item)), pickle.loads(pickle.dumps(collate_items([item, item])))):
        assert type(clone) is ItemDict and storages(clone) == len(clone)
    clone = pickle.loads(pickle.dumps(item))
    assert clone.keys() == item.keys() and all(torch.equal(clone[k], item[k]) for k in item)


@pytest.mark.parametrize("augment", [False, True])
def test_batches_built_at_once_equal_items_built_one_by_one(tmp_path: Path, augment: bool) -> None:
    path = make_dataset(tmp_path / "d.h5", num_samples=7, num_views=3, size=32, invalid={2: [1], 4: [0, 2]})
    for cls, kw in ((MultiViewDataset, {"random_view_subsets": augment}), (SingleViewDataset, {})):
        # cached per-sample arrays (vectorised geometry) against reading every item from the file
        cached = cls(path, None, 32, augment=augment, seed=1, **kw)
        from_file = cls(path, None, 32, augment=augment, seed=1, cache_bytes=0, **kw)
        # the cached dataset holds its 1-bit masks inflated: the items below take their masks from there
        held = cached._cache["mask_rows"]
        assert held is not None and held.ok.sum() == (cached.reader.has_mask & cached.reader.view_valid).sum() > 0
        indices = [5, 0, 3, 3, 1]
        items = cached.__getitems__(indices)
        batch = collate_items(items)
        assert batch is items.batch and storages(batch) == 1  # passed through, not copied
        assert_same_batches([default_collate([from_file[i] for i in indices])], [batch])
        assert_same_batches([default_collate(items)], [batch])
