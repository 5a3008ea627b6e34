"""Torch datasets over the HDF5 store, for both training modes.

Every item has a view axis ``V`` (single-view items have ``V = 1``), so both trainers and every loss
read the same keys:

- ``image (V,3,S,S)`` float32, normalised with the ImageNet mean and standard deviation;
- ``view_mask (V,)`` bool; ``K (V,3,3)``, ``R (V,3,3)``, ``t (V,3)`` for the network input image;
- ``keypoints2d (V,J,2)`` pixels in the network input image, ``visibility (V,J)``;
- ``keypoints3d (J,3)`` world units (NaN = missing);
- ``mask (V,S,S)`` float32 in {0, 1} and ``has_mask (V,)``;
- ``params/<name>`` and ``has_<name>`` for every body parameter the file has;
- ``index`` (sample index in the file) and ``view`` (the stored view of a single-view item, else -1).

Each DataLoader worker opens its own file handle (the reader reopens after a fork) and decodes JPEGs
itself. Augmentation is drawn from ``(seed, epoch, index)``, so a run is reproducible whatever the
number of workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from smil.data.augment import (
    AugmentSettings,
    apply_affine_to_camera,
    apply_color,
    random_color,
    random_similarity,
    resize_affine,
    transform_points,
    warp,
)
from smil.data.store import DatasetReader, open_dataset
from smil.errors import DataError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalise(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (H,W,3) → normalised (3,H,W) float32."""
    return np.ascontiguousarray(((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), dtype=np.float32)


def denormalise(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise` for display: (…,3,H,W) → [0, 1]."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


class _StoreDataset(Dataset):
    def __init__(
        self,
        path_or_reader: Any,
        split: str | None,
        image_size: int,
        augment: bool = False,
        settings: AugmentSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.reader: DatasetReader = (
            path_or_reader if isinstance(path_or_reader, DatasetReader) else open_dataset(path_or_reader)
        )
        self.split = split
        self.indices = (
            np.arange(len(self.reader)) if split is None else self.reader.split_indices(split)
        )
        self.image_size = int(image_size)
        self.augment = augment
        self.settings = settings or AugmentSettings()
        self.seed = seed
        self.epoch = 0
        self.joint_names = self.reader.joint_names
        self.camera_names = self.reader.camera_names

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of the next pass depends on the epoch (call from every worker's parent)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _views(self, sample: dict[str, Any], views: list[int], rng: np.random.Generator | None) -> dict[str, Any]:
        """Prepare the given stored views of a sample for the network."""
        S = self.image_size
        base = resize_affine(self.reader.image_size, S)
        color = random_color(rng, self.settings) if rng is not None else None
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "K", "R", "t", "keypoints2d", "visibility", "mask")}
        for v in views:
            A = base if rng is None else random_similarity(rng, S, self.settings) @ base
            img = warp(sample["images"][v], A, S).astype(np.float32) / 255.0
            if color is not None:
                img = apply_color(img, color)
            K, R, t = apply_affine_to_camera(A, sample["K"][v].astype(np.float64), sample["R"][v].astype(np.float64), sample["t"][v].astype(np.float64))
            kp = transform_points(sample["keypoints2d"][v].astype(np.float64), A)
            vis = sample["visibility"][v].copy()
            inside = np.isfinite(kp).all(-1) & (kp >= -0.5).all(-1) & (kp <= S - 0.5).all(-1)
            vis = np.where(inside, vis, 0.0)
            out["image"].append(normalise(img))
            out["K"].append(K)
            out["R"].append(R)
            out["t"].append(t)
            out["keypoints2d"].append(np.nan_to_num(kp))
            out["visibility"].append(vis)
            out["mask"].append((warp(sample["masks"][v], A, S, is_mask=True) > 127).astype(np.float32))
        return {k: np.stack(v) for k, v in out.items()}

    def _item(self, sample: dict[str, Any], views: list[int], valid: np.ndarray, view: int) -> dict[str, torch.Tensor]:
        rng = self._rng(sample["index"] * 64 + max(view, 0)) if self.augment else None
        prepared = self._views(sample, views, rng)
        item: dict[str, Any] = {
            "image": prepared["image"],
            "view_mask": valid,
            "K": prepared["K"].astype(np.float32),
            "R": prepared["R"].astype(np.float32),
            "t": prepared["t"].astype(np.float32),
            "keypoints2d": prepared["keypoints2d"].astype(np.float32),
            "visibility": (prepared["visibility"] * valid[:, None]).astype(np.float32),
            "keypoints3d": sample["keypoints3d"].astype(np.float32),
            "mask": prepared["mask"],
            "has_mask": sample["has_mask"][views] & valid,
            "index": np.int64(sample["index"]),
            "view": np.int64(view),
        }
        for name, value in sample["params"].items():
            item[f"params/{name}"] = np.asarray(value, dtype=np.float32)
            item[f"has_{name}"] = np.bool_(sample["has_params"][name])
        return {k: torch.as_tensor(v) for k, v in item.items()}


class SingleViewDataset(_StoreDataset):
    """One image per item. On a multi-view file, ``expand_views`` makes one item per valid
    (sample, view) pair; otherwise the first valid view of each sample is used."""

    def __init__(self, path_or_reader: Any, split: str | None, image_size: int, *, expand_views: bool = True, **kw: Any) -> None:
        super().__init__(path_or_reader, split, image_size, **kw)
        valid = self.reader.view_valid[self.indices]
        pairs = []
        for row, idx in enumerate(self.indices):
            views = np.flatnonzero(valid[row])
            if len(views) == 0:
                continue
            for v in views if expand_views else views[:1]:
                pairs.append((int(idx), int(v)))
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx, view = self.pairs[i]
        sample = self.reader.get_sample(idx)
        return self._item(sample, [view], np.array([True]), view)


class MultiViewDataset(_StoreDataset):
    """All view slots of a sample per item, with a view mask; training can drop a random subset of
    the valid views (keeping at least ``min_views``)."""

    def __init__(
        self,
        path_or_reader: Any,
        split: str | None,
        image_size: int,
        *,
        random_view_subsets: bool = False,
        min_views: int = 1,
        **kw: Any,
    ) -> None:
        super().__init__(path_or_reader, split, image_size, **kw)
        if min_views < 1:
            raise DataError("min_views must be ≥ 1", field="data.min_views")
        self.random_view_subsets = random_view_subsets
        self.min_views = min_views
        keep = self.reader.view_valid[self.indices].any(axis=1)
        self.indices = self.indices[keep]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = int(self.indices[i])
        sample = self.reader.get_sample(idx)
        valid = sample["view_valid"].astype(bool).copy()
        if self.random_view_subsets:
            rng = np.random.default_rng([self.seed, self.epoch, idx, 7])
            real = np.flatnonzero(valid)
            lo = min(self.min_views, len(real))
            n_keep = int(rng.integers(lo, len(real) + 1))
            keep = rng.choice(real, size=n_keep, replace=False)
            valid = np.zeros_like(valid)
            valid[keep] = True
        V = len(valid)
        item = self._item(sample, list(range(V)), valid, -1)
        item["image"] = item["image"] * torch.as_tensor(valid, dtype=torch.float32).view(V, 1, 1, 1)
        return item


def create_dataset(mode: str, path: Any, split: str | None, cfg_data: Any, *, train: bool, seed: int = 0) -> Dataset:
    """The dataset a trainer uses for ``mode`` from a :class:`smil.config.DataConfig`."""
    settings = AugmentSettings(
        scale=cfg_data.aug_scale,
        rotation_deg=cfg_data.aug_rotation_deg,
        translate=cfg_data.aug_translate,
        color=cfg_data.aug_color,
    )
    common = dict(augment=train and cfg_data.augment, settings=settings, seed=seed)
    if mode == "singleview":
        return SingleViewDataset(path, split, cfg_data.image_size, expand_views=cfg_data.expand_views, **common)
    return MultiViewDataset(
        path,
        split,
        cfg_data.image_size,
        random_view_subsets=train and cfg_data.random_view_subsets,
        min_views=cfg_data.min_views,
        **common,
    )
