"""Torch datasets over the HDF5 store, for both training modes.

Every item has a view axis ``V`` (single-view items have ``V = 1``), so both trainers and every loss
read the same keys:

- ``image (V,3,S,S)`` ``uint8`` RGB, channel-first (a batch is ``(B,V,3,S,S)`` ``uint8``); the network
  input is made from it on the device by :func:`smil.data.images.normalise_images` (ImageNet mean and
  standard deviation), called in ``smil.train.loop.run_model``;
- ``view_mask (V,)`` bool; ``K (V,3,3)``, ``R (V,3,3)``, ``t (V,3)`` for the network input image;
- ``keypoints2d (V,J,2)`` pixels in the network input image, ``visibility (V,J)``;
- ``keypoints3d (J,3)`` world units (NaN = missing);
- ``mask (V,S,S)`` ``uint8`` in {0, 1} and ``has_mask (V,)`` (no ``mask`` and ``has_mask`` all False
  with ``masks=False``);
- ``params/<name>`` and ``has_<name>`` for every body parameter the file has;
- ``index`` (sample index in the file) and ``view`` (the stored view of a single-view item, else -1).

Each DataLoader worker opens its own file handle (the reader reopens after a fork) and decodes JPEGs
itself. Augmentation is drawn from ``(seed, epoch, index)``, so a run is reproducible whatever the
number of workers.

Speed (``benchmarks/bench_data.py``): the small per-sample arrays (cameras, keypoints, body parameters)
of the dataset's samples are read into memory once, when the dataset is made, if they fit in
``cache_bytes`` (shared copy-on-write by forked workers); an item then reads only its JPEG (and PNG
mask) bytes from the file. When the whole file fits too, its bytes are held in memory, and its 1-bit
masks are inflated once (:class:`_MaskRows`; 6.3 KB per 224² mask) so that an item without
augmentation only unpacks its mask's bits. Without augmentation, a stored image of the network's size
is used as decoded (no resampling). Colour augmentation is one ``cv2.transform`` on the uint8 image;
the decoded (BGR) image goes into the item's ``uint8`` array in one copy that also swaps the channels,
and the normalisation to float32 is left to the device (a quarter of the bytes to collate and pass between
processes). Views that are not used (invalid, or dropped by ``random_view_subsets``) and absent masks
are not decoded: their images (black) and masks are zeros; the multi-view regressor never looks at them.
``masks=False`` skips the masks altogether (no ``mask`` key, ``has_mask`` all False) for training
without a silhouette term.

Batches are built whole: a DataLoader calls ``__getitems__`` with a batch's indices, which allocates
the batch's one buffer (shared memory in a worker, see :mod:`smil.data.batching`), decodes every
image and mask straight into it, and, for cached files without augmentation, gathers the cameras,
keypoints and parameters of all items with one indexing operation per key. With
``DataLoader(collate_fn=smil.data.batching.collate_items)`` that buffer is the batch (no stacking
copy) and reaches the training process as one shared-memory segment. ``dataset[i]`` is the same
code for a batch of one; items are :class:`smil.data.batching.ItemDict`.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from smil.data import schema as S
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
from smil.data.batching import ItemBatch, ItemDict, allocate_batch
from smil.data.bitmask import packed_mask_rows
from smil.data.images import decode_image, decode_mask_bits, decode_png_mask, to_channels_first
from smil.data.store import DatasetReader, open_dataset
from smil.errors import DataError

#: Default budget for the in-memory copy of the per-sample arrays (cameras, keypoints, parameters).
DEFAULT_CACHE_BYTES = 1 << 30
_CACHED_ARRAYS = (S.K, S.R, S.T, S.KEYPOINTS2D, S.VISIBILITY, S.KEYPOINTS3D)


def _keypoints_in_image(kp: np.ndarray, visibility: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(…, J, 2)`` keypoints with unknown (NaN) ones set to 0, and ``(…, J)`` visibility set to 0
    for points outside the ``size × size`` image (unknown points count as outside)."""
    inside = ((kp >= -0.5) & (kp <= size - 0.5)).all(-1)  # NaN fails both comparisons
    return np.where(np.isnan(kp), kp.dtype.type(0.0), kp), np.where(inside, visibility, np.float32(0.0))


class _PackedBytes:
    """The (n, V) variable-length byte strings of a dataset column, packed in one uint8 buffer.

    One buffer and one offset table (no Python object per string), so DataLoader workers forked from
    the process that read it share its pages instead of copying them.
    """

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray):
        self.buffer, self.offsets = buffer, offsets  # offsets (n, V + 1): row r view v = [o[r,v], o[r,v+1])

    @classmethod
    def read(cls, column: h5py.Dataset, indices: np.ndarray, block: int = 4096) -> "_PackedBytes":
        """Read rows ``indices`` (ascending) of ``column`` in blocks of ``block`` rows."""
        V = column.shape[1]
        parts: list[np.ndarray] = []
        lengths = np.zeros((len(indices), V), dtype=np.int64)
        for start in range(0, len(indices), block):
            sel = indices[start : start + block]
            rows = column[int(sel[0]) : int(sel[-1]) + 1][sel - sel[0]]
            for k, row in enumerate(rows):
                for v, blob in enumerate(row):
                    lengths[start + k, v] = len(blob)
                    parts.append(np.asarray(blob, dtype=np.uint8))
        buffer = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
        ends = np.cumsum(lengths.ravel()).reshape(lengths.shape)
        offsets = np.concatenate([ends[:, :1] - lengths[:, :1], ends], axis=1)
        return cls(buffer, offsets)

    def get(self, row: int, view: int) -> np.ndarray:
        o = self.offsets[row]
        return self.buffer[o[view] : o[view + 1]]


class _MaskRows:
    """The cached masks that are 1-bit PNGs (what ``smil preprocess`` writes), inflated once: each as
    its packed rows ``(H, ceil(W / 8))``, so an item without augmentation only unpacks its bits
    (about 12 µs at 224², against 67 µs to parse and inflate the PNG). Other masks stay bytes."""

    def __init__(self, rows: np.ndarray, ok: np.ndarray):
        self.rows, self.ok = rows, ok  # rows (n, V, H, ceil(W/8)); ok (n, V)

    @classmethod
    def decode(cls, masks: _PackedBytes, image_size: tuple[int, int], budget: int) -> "_MaskRows | None":
        """Inflate every 1-bit mask of ``masks``; None when the rows would not fit in ``budget`` bytes."""
        W, H = image_size
        n, V = masks.offsets.shape[0], masks.offsets.shape[1] - 1
        if n * V * H * ((W + 7) // 8) > budget:
            return None
        rows = np.zeros((n, V, H, (W + 7) // 8), dtype=np.uint8)
        ok = np.zeros((n, V), dtype=bool)
        for i in range(n):
            for v in range(V):
                data = masks.get(i, v)
                if not len(data):
                    continue
                try:
                    packed = packed_mask_rows(data)
                except DataError:
                    continue  # a damaged mask stays bytes: reading its item reports it
                if packed is not None and packed[0].shape == rows.shape[2:] and packed[1] == W:
                    rows[i, v], ok[i, v] = packed[0], True
        return cls(rows, ok)

    def get(self, row: int, view: int) -> np.ndarray | None:
        """The packed rows of a mask, or None when it is not held here."""
        return self.rows[row, view] if self.ok[row, view] else None


class _StoreDataset(Dataset):
    def __init__(
        self,
        path_or_reader: Any,
        split: str | None,
        image_size: int,
        augment: bool = False,
        settings: AugmentSettings | None = None,
        seed: int = 0,
        masks: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
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
        self.masks = bool(masks)
        self.joint_names = self.reader.joint_names
        self.camera_names = self.reader.camera_names
        self._columns: tuple[h5py.File, h5py.Dataset, h5py.Dataset] | None = None
        self._base = resize_affine(self.reader.image_size, self.image_size)  # stored image → network input
        self._stored_size_is_input = tuple(self.reader.image_size) == (self.image_size, self.image_size)
        self._path = str(self.reader.path)
        self._cache = self._load_cache(int(cache_bytes))

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of the next pass depends on the epoch (call from every worker's parent)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    # -- reading ---------------------------------------------------------------------------------
    def _load_cache(self, budget: int) -> dict[str, Any] | None:
        """Memory copies for ``self.indices``: the per-sample arrays when they fit in ``budget``, and
        the image (and mask) bytes as well when the whole file does. None when nothing fits."""
        r = self.reader
        names = list(_CACHED_ARRAYS) + [S.param_path(n) for n in r.param_names]
        h5 = r.h5
        row_bytes = sum(int(np.prod(h5[n].shape[1:])) * h5[n].dtype.itemsize for n in names)
        if len(self.indices) == 0 or row_bytes * len(r) > budget:
            return None
        row = np.full(len(r), -1, dtype=np.int64)
        row[self.indices] = np.arange(len(self.indices))
        cache: dict[str, Any] = {"row": row, "images": None, "masks": None, "mask_rows": None, "plain": None}
        try:
            cache["arrays"] = a = {n: h5[n][:][self.indices] for n in names}
            if self._stored_size_is_input:  # what items without augmentation use, computed once for all
                cache["plain"] = _keypoints_in_image(a[S.KEYPOINTS2D], a[S.VISIBILITY], self.image_size)
            file_bytes = os.path.getsize(r.path)
            if file_bytes <= budget:
                cache["images"] = _PackedBytes.read(h5[S.IMAGES], self.indices)
                if self.masks:
                    cache["masks"] = _PackedBytes.read(h5[S.MASKS], self.indices)
                    cache["mask_rows"] = _MaskRows.decode(cache["masks"], r.image_size,
                                                          budget - file_bytes - row_bytes * len(r))
        except OSError as exc:
            raise DataError(f"cannot read the per-sample arrays ({exc}); the file may be truncated or corrupt",
                            path=r.path) from None
        return cache

    def _byte_columns(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """This process's image and mask columns (resolved once per file handle)."""
        h5 = self.reader.h5  # the reader reopens it after a fork
        if self._columns is None or self._columns[0] is not h5:
            self._columns = (h5, h5[S.IMAGES], h5[S.MASKS])
        return self._columns[1], self._columns[2]

    def _read_bytes(self, idx: int, row: int, name: str, used: np.ndarray) -> list[Any]:
        """The V byte strings of ``name`` ("images" or "masks") of sample ``idx``; ``b""`` where not ``used``."""
        packed = self._cache[name] if self._cache is not None else None
        if packed is not None:
            return [packed.get(row, v) if u else b"" for v, u in enumerate(used)]
        column = self._byte_columns()[0 if name == "images" else 1]
        try:
            blobs = column[idx]
        except OSError as exc:
            raise DataError(f"cannot read sample {idx} ({exc}); the file may be truncated or corrupt",
                            path=self.reader.path) from None
        return [b if u else b"" for b, u in zip(blobs, used)]

    def _sample(self, idx: int, used: np.ndarray, *, geometry: bool = True) -> dict[str, Any]:
        """Sample ``idx`` as :meth:`DatasetReader.get_sample` gives it, with ``image_bytes`` and
        ``mask_bytes`` (V each; ``b""`` for views not in ``used``, absent masks and ``masks=False``).
        ``geometry=False`` (cached files only): just ``index`` and the bytes."""
        r = self.reader
        if not geometry and self._cache is not None:
            row = int(self._cache["row"][idx])
            sample = {"index": idx, "image_bytes": self._read_bytes(idx, row, "images", used)}
        elif self._cache is None:
            sample = r.get_sample(idx, decode_images=False, masks=False)
            sample["image_bytes"] = [b if u else b"" for b, u in zip(sample["image_bytes"], used)]
            row = -1
        else:
            row = int(self._cache["row"][idx])
            a = self._cache["arrays"]
            sample = {
                "index": idx,
                "K": a[S.K][row], "R": a[S.R][row], "t": a[S.T][row],
                "keypoints2d": a[S.KEYPOINTS2D][row], "visibility": a[S.VISIBILITY][row],
                "keypoints3d": a[S.KEYPOINTS3D][row],
                "params": {n: a[S.param_path(n)][row] for n in r.param_names},
            }
            sample["image_bytes"] = self._read_bytes(idx, row, "images", used)
        with_mask = used & r.has_mask[idx] if self.masks else np.zeros_like(used)
        sample["mask_bytes"] = (
            self._read_bytes(idx, row, "masks", with_mask) if with_mask.any() else [b""] * len(used)
        )
        mask_rows = self._cache["mask_rows"] if self._cache is not None else None
        if mask_rows is not None and with_mask.any():
            sample["mask_rows"] = [mask_rows.get(row, v) if w else None for v, w in enumerate(with_mask)]
        return sample

    # -- preparing -------------------------------------------------------------------------------
    def _plan(self, i: int) -> tuple[int, np.ndarray, np.ndarray, int]:
        """Item ``i`` as (sample index, stored views (n,), valid (n,) bool, ``view`` key)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> ItemDict:
        return ItemBatch(self._batch([i]))[0]

    def __getitems__(self, indices: list[int]) -> ItemBatch:
        """The items ``indices`` built as one batch (the DataLoader's call): one buffer, filled in place,
        which :func:`smil.data.batching.collate_items` passes through without a copy."""
        return ItemBatch(self._batch(indices))

    def _specs(self, B: int, n: int) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        S_, J = self.image_size, len(self.joint_names)
        u8, f32, b = torch.uint8, torch.float32, torch.bool
        specs = [
            ("image", u8, (B, n, 3, S_, S_)), ("view_mask", b, (B, n)),
            ("K", f32, (B, n, 3, 3)), ("R", f32, (B, n, 3, 3)), ("t", f32, (B, n, 3)),
            ("keypoints2d", f32, (B, n, J, 2)), ("visibility", f32, (B, n, J)), ("keypoints3d", f32, (B, J, 3)),
            ("has_mask", b, (B, n)), ("index", torch.int64, (B,)), ("view", torch.int64, (B,)),
        ]
        if self.masks:
            specs.append(("mask", u8, (B, n, S_, S_)))
        for name in self.reader.param_names:
            specs += [(f"params/{name}", f32, (B, *self.reader.param_shapes[name])), (f"has_{name}", b, (B,))]
        return specs

    def _batch(self, indices: list[int]) -> ItemDict:
        """Items ``indices`` as a batch ``(B, …)`` per key (see the module docstring), built in place."""
        plans = [self._plan(int(i)) for i in indices]
        if not plans:
            raise DataError("cannot build an empty batch")
        r = self.reader
        idxs = np.array([p[0] for p in plans], dtype=np.int64)
        views = np.stack([p[1] for p in plans])  # (B, n)
        valid = np.stack([p[2] for p in plans])
        batch = allocate_batch(self._specs(*views.shape))
        out = {k: v.numpy() for k, v in batch.items()}
        out["index"][:] = idxs
        out["view"][:] = [p[3] for p in plans]
        out["view_mask"][:] = valid
        has_mask = np.take_along_axis(r.has_mask[idxs], views, axis=1) & valid
        out["has_mask"][:] = has_mask if self.masks else False
        for name in r.param_names:
            out[f"has_{name}"][:] = r.has_params[name][idxs]
        cache = self._cache
        plain_cached = not self.augment and self._stored_size_is_input and cache is not None
        if plain_cached:  # geometry of every item in a few array operations
            rows = cache["row"][idxs]
            a, sel = cache["arrays"], (rows[:, None], views)
            for key, name in (("K", S.K), ("R", S.R), ("t", S.T)):
                out[key][:] = a[name][sel]
            kp, vis = cache["plain"]
            out["keypoints2d"][:] = kp[sel]
            np.multiply(vis[sel], valid[..., None], out=out["visibility"])
            out["keypoints3d"][:] = a[S.KEYPOINTS3D][rows]
            for name in r.param_names:
                out[f"params/{name}"][:] = a[S.param_path(name)][rows]
        for b, (idx, item_views, item_valid, view) in enumerate(plans):
            used = np.zeros(r.num_views, dtype=bool)
            used[item_views[item_valid]] = True
            sample = self._sample(idx, used, geometry=not plain_cached)
            rng = self._rng(idx * 64 + max(view, 0)) if self.augment else None
            self._fill(b, sample, item_views, item_valid, has_mask[b], rng, out, geometry=not plain_cached)
        return batch

    def _fill(
        self,
        b: int,
        sample: dict[str, Any],
        views: np.ndarray,
        valid: np.ndarray,
        has_mask: np.ndarray,
        rng: np.random.Generator | None,
        out: dict[str, np.ndarray],
        *,
        geometry: bool,
    ) -> None:
        """Write item ``b`` of the batch ``out``: the images (and masks) of its ``valid`` views, and,
        with ``geometry``, its cameras, keypoints and body parameters."""
        size = self.image_size
        color = random_color(rng, self.settings) if rng is not None else None
        affines = [self._base if rng is None else random_similarity(rng, size, self.settings) @ self._base
                   for _ in views]
        # without augmentation at the stored size the warp is the identity: use the stored pixels as they are
        plain = rng is None and self._stored_size_is_input
        where = f"{self._path}[{sample['index']}]"
        image = out["image"][b]
        mask = out["mask"][b] if self.masks else None
        for k, (v, A) in enumerate(zip(views, affines)):
            data = sample["image_bytes"][v]
            if valid[k] and len(data):
                img = decode_image(data, path=where, rgb=False)  # BGR: no colour conversion needed
                if not plain:
                    img = warp(img, A, size)
                if color is not None:
                    img = apply_color(img, color, bgr=True)
                to_channels_first(img, out=image[k], bgr=True)
            else:
                image[k] = 0
            if mask is None:
                continue
            if has_mask[k] and len(sample["mask_bytes"][v]):
                packed = sample["mask_rows"][v] if "mask_rows" in sample else None
                if plain and packed is not None:
                    mask[k] = np.unpackbits(packed, axis=1, count=size)
                elif plain:
                    decode_mask_bits(sample["mask_bytes"][v], path=where, out=mask[k])
                else:
                    m = warp(decode_png_mask(sample["mask_bytes"][v], path=where), A, size, is_mask=True)
                    np.greater(m, 127, out=mask[k], casting="unsafe")
            else:
                mask[k] = 0
        if not geometry:
            return
        if plain:
            K, R, t = sample["K"][views], sample["R"][views], sample["t"][views]
            kp, vis = _keypoints_in_image(sample["keypoints2d"][views], sample["visibility"][views], size)
        else:
            cams = [
                apply_affine_to_camera(A, sample["K"][v].astype(np.float64), sample["R"][v].astype(np.float64),
                                       sample["t"][v].astype(np.float64))
                for v, A in zip(views, affines)
            ]
            K, R, t = (np.stack([c[i] for c in cams]) for i in range(3))
            kp = np.stack([transform_points(sample["keypoints2d"][v].astype(np.float64), A)
                           for v, A in zip(views, affines)])
            kp, vis = _keypoints_in_image(kp, sample["visibility"][views], size)
        out["K"][b], out["R"][b], out["t"][b] = K, R, t
        out["keypoints2d"][b] = kp
        out["visibility"][b] = vis * valid[:, None]
        out["keypoints3d"][b] = sample["keypoints3d"]
        for name, value in sample["params"].items():
            out[f"params/{name}"][b] = value

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_columns"] = None  # h5py objects belong to one process
        return state


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

    def _plan(self, i: int) -> tuple[int, np.ndarray, np.ndarray, int]:
        idx, view = self.pairs[i]
        return idx, np.array([view]), np.array([True]), view


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

    def _plan(self, i: int) -> tuple[int, np.ndarray, np.ndarray, int]:
        idx = int(self.indices[i])
        valid = self.reader.view_valid[idx].astype(bool).copy()
        if self.random_view_subsets:
            rng = np.random.default_rng([self.seed, self.epoch, idx, 7])
            real = np.flatnonzero(valid)
            lo = min(self.min_views, len(real))
            n_keep = int(rng.integers(lo, len(real) + 1))
            keep = rng.choice(real, size=n_keep, replace=False)
            valid = np.zeros_like(valid)
            valid[keep] = True
        return idx, np.arange(len(valid)), valid, -1  # unused views' images are zeros


def create_dataset(
    mode: str, path: Any, split: str | None, cfg_data: Any, *, train: bool, seed: int = 0, masks: bool = True
) -> Dataset:
    """The dataset a trainer uses for ``mode`` from a :class:`smil.config.DataConfig`.

    ``masks=False`` (e.g. when no loss uses silhouettes) skips decoding and shipping the masks.
    """
    settings = AugmentSettings(
        scale=cfg_data.aug_scale,
        rotation_deg=cfg_data.aug_rotation_deg,
        translate=cfg_data.aug_translate,
        color=cfg_data.aug_color,
    )
    common = dict(augment=train and cfg_data.augment, settings=settings, seed=seed, masks=masks)
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
