"""Square crops around the animal, resized to the stored image size, with the matching camera update.

Pixel convention (``docs/conventions.md``): the centre of the top-left pixel is ``(0, 0)``, so pixel
``i`` covers ``[i - 0.5, i + 0.5]``.

A crop is a :class:`CropBox`: integer pixel indices ``[x0, x0 + size) × [y0, y0 + size)`` of the (possibly
reduced-resolution) decoded image; indices outside the image are zero padding. Resizing it to
``out_size`` pixels maps ``x ↦ s · (x - x0 + 0.5) - 0.5`` with ``s = out_size / size`` (the mapping of
``cv2.resize``). Every step is an affine map ``A`` (3×3, acting on homogeneous pixel coordinates); the
camera of the stored image is ``K' = A · K`` (``R``, ``t`` unchanged) and keypoints map as ``A · (x, y, 1)``,
so projecting 3D points with ``K'`` gives the transformed 2D keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A square crop: integer pixel indices ``[x0, x0 + size) × [y0, y0 + size)``."""

    x0: int
    y0: int
    size: int


@dataclass(frozen=True)
class CropPlan:
    """How to turn one source image into the stored image.

    ``reduce``: decode at 1/reduce resolution first; ``box``: the crop in the decoded image's pixels;
    ``affine``: 3×3 map from *source* pixels (full resolution, as in the manifest) to stored pixels.
    """

    reduce: int
    box: CropBox
    out_size: int
    affine: np.ndarray


def points_bbox(points: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(xmin, ymin, xmax, ymax)`` of the finite rows of ``points`` (N, 2), or None when there are none."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return finite_points_bbox(pts[finite_rows(pts)])


def finite_rows(points: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the rows of ``points`` (N, D) finite in every coordinate (tested on the sum of the
    coordinates, in which NaN and ±inf propagate: fewer array operations than ``isfinite().all()``)."""
    return np.isfinite(points.sum(axis=1))


def finite_points_bbox(points: np.ndarray) -> tuple[float, float, float, float] | None:
    """:func:`points_bbox` of ``points`` (N, 2) float64 known to be finite (None when N = 0)."""
    if len(points) == 0:
        return None
    (x0, y0), (x1, y1) = np.minimum.reduce(points).tolist(), np.maximum.reduce(points).tolist()
    return x0, y0, x1, y1


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(xmin, ymin, xmax, ymax)`` pixel centres of the non-zero pixels of ``mask``, or None when empty."""
    if mask.dtype == np.uint8 and mask.ndim == 2:  # OpenCV's one-pass bounding box of the non-zero pixels
        x, y, w, h = cv2.boundingRect(mask)
        return None if w == 0 else (float(x), float(y), float(x + w - 1), float(y + h - 1))
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    return float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])


def union_bbox(*boxes: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
    """The smallest bbox containing every given bbox (None entries ignored)."""
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return (float(min(b[0] for b in real)), float(min(b[1] for b in real)), float(max(b[2] for b in real)),
            float(max(b[3] for b in real)))


def square_box(
    bbox: tuple[float, float, float, float],
    image_size: tuple[int, int],
    *,
    padding: float = 1.2,
    min_size: int = 16,
    border: str = "shift",
) -> CropBox:
    """A square crop centred on ``bbox`` with side ``padding × max(width, height)`` (at least ``min_size``).

    ``border="shift"`` moves the square inside the image when it fits (no padding pixels, animal off
    centre near an edge); ``border="pad"`` keeps it centred and pads with black. A square larger than
    the image is always centred and padded.
    """
    if border not in ("shift", "pad"):
        raise ValueError(f"border must be 'shift' or 'pad', got {border!r}")
    xmin, ymin, xmax, ymax = bbox
    # pixel centres xmin..xmax span (xmax - xmin + 1) pixels
    extent = max(xmax - xmin + 1.0, ymax - ymin + 1.0) * padding
    size = max(int(round(extent)), int(min_size), 1)
    x0 = int(math.floor((xmin + xmax) / 2.0 - (size - 1) / 2.0 + 0.5))
    y0 = int(math.floor((ymin + ymax) / 2.0 - (size - 1) / 2.0 + 0.5))
    if border == "shift":
        w, h = image_size
        if size <= w:
            x0 = min(max(x0, 0), w - size)
        if size <= h:
            y0 = min(max(y0, 0), h - size)
    return CropBox(x0, y0, size)


def full_frame_box(image_size: tuple[int, int]) -> CropBox:
    """The square centred on the whole image (longer side; the shorter one is padded)."""
    w, h = image_size
    size = max(w, h)
    return CropBox((w - size) // 2, (h - size) // 2, size)


def reduce_affine(reduce: int) -> np.ndarray:
    """Source pixels → pixels of the image decoded at 1/reduce: ``x ↦ (x + 0.5) / r - 0.5``."""
    r = float(reduce)
    return np.array([[1 / r, 0, 0.5 / r - 0.5], [0, 1 / r, 0.5 / r - 0.5], [0, 0, 1]], dtype=np.float64)


def crop_affine(box: CropBox, out_size: int) -> np.ndarray:
    """Pixels of the cropped image → stored pixels: ``x ↦ s · (x - x0 + 0.5) - 0.5``, ``s = out/size``."""
    s = out_size / box.size
    return np.array(
        [[s, 0, s * (0.5 - box.x0) - 0.5], [0, s, s * (0.5 - box.y0) - 0.5], [0, 0, 1]], dtype=np.float64
    )


def plan_crop(
    bbox: tuple[float, float, float, float] | None,
    source_size: tuple[int, int],
    out_size: int,
    *,
    padding: float = 1.2,
    border: str = "shift",
    allow_reduce: bool = True,
    min_size: int = 16,
) -> CropPlan:
    """Plan the crop of a ``source_size`` (W, H) image around ``bbox`` (source pixels; None = full frame).

    With ``allow_reduce`` the largest factor ``r`` in 2, 4, 8 with ``box.size / r >= out_size`` is
    chosen, so the image can be decoded at 1/r size without ever upsampling afterwards.
    """
    if bbox is None:
        box = full_frame_box(source_size)
    else:
        box = square_box(bbox, source_size, padding=padding, min_size=min_size, border=border)
    reduce = 1
    if allow_reduce:
        for r in (8, 4, 2):
            if box.size / r >= out_size:
                reduce = r
                break
    if reduce > 1:
        # the same square in reduced pixels: continuous edge x0 - 0.5 maps to x0 / r - 0.5
        w = -(-source_size[0] // reduce)
        h = -(-source_size[1] // reduce)
        size = max(int(round(box.size / reduce)), 1)
        x0 = int(round(box.x0 / reduce + (box.size / reduce - size) / 2))
        y0 = int(round(box.y0 / reduce + (box.size / reduce - size) / 2))
        if border == "shift" and bbox is not None:
            if size <= w:
                x0 = min(max(x0, 0), w - size)
            if size <= h:
                y0 = min(max(y0, 0), h - size)
        box = CropBox(x0, y0, size)
    affine = crop_affine(box, out_size)
    if reduce > 1:
        affine = affine @ reduce_affine(reduce)
    return CropPlan(reduce=reduce, box=box, out_size=out_size, affine=affine)


def crop_and_resize(
    image: np.ndarray,
    box: CropBox,
    out_size: int,
    *,
    is_mask: bool = False,
    undistort_maps: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Cut ``box`` out of ``image`` (zero outside it) and resize it to ``out_size`` × ``out_size``.

    Downsampling averages (``INTER_AREA``), upsampling interpolates linearly. For a mask (``is_mask``) the
    result is thresholded back to {0, 255}. ``undistort_maps`` are ``cv2.initUndistortRectifyMap`` maps
    for the whole ``image``: only the crop's rows and columns of them are remapped, which equals
    undistorting the whole image and then cropping.
    """
    h, w = image.shape[:2]
    xa, ya = max(box.x0, 0), max(box.y0, 0)
    xb, yb = min(box.x0 + box.size, w), min(box.y0 + box.size, h)
    if xa >= xb or ya >= yb:
        out_shape = (out_size, out_size) + image.shape[2:]
        return np.zeros(out_shape, dtype=image.dtype)
    if undistort_maps is None:
        patch = image[ya:yb, xa:xb]
    else:
        m1, m2 = undistort_maps
        interp = cv2.INTER_NEAREST if is_mask else cv2.INTER_LINEAR
        patch = cv2.remap(image, np.ascontiguousarray(m1[ya:yb, xa:xb]), np.ascontiguousarray(m2[ya:yb, xa:xb]),
                          interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    pads = (ya - box.y0, box.y0 + box.size - yb, xa - box.x0, box.x0 + box.size - xb)
    if any(pads):
        patch = cv2.copyMakeBorder(patch, *pads, borderType=cv2.BORDER_CONSTANT, value=0)
    if box.size == out_size:
        out = np.ascontiguousarray(patch)
    else:
        interp = cv2.INTER_AREA if box.size > out_size else cv2.INTER_LINEAR
        out = cv2.resize(patch, (out_size, out_size), interpolation=interp)
    if is_mask:
        out = _binarise(out)
    return out


def _binarise(mask: np.ndarray) -> np.ndarray:
    """255 where ``mask >= 128``, else 0 (uint8)."""
    if mask.dtype == np.uint8:
        return cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)[1]
    return np.where(mask >= 128, np.uint8(255), np.uint8(0))


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a 3×3 affine to pixel points (..., 2); NaN stays NaN."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ affine[:2, :2].T + affine[:2, 2]


def adjust_intrinsics(K: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The intrinsics of the transformed image: ``K' = A · K``."""
    return affine @ np.asarray(K, dtype=np.float64)
