"""Augmentation that keeps the geometry consistent.

Geometric augmentation (zoom, in-plane rotation, crop jitter) is an image-plane similarity ``A``. For a
pinhole camera with square pixels, ``A·K = K'·Rz`` with ``Rz`` a rotation about the optical axis, so the
augmented view is exactly a camera with intrinsics ``K'`` and extrinsics ``Rz·R, Rz·t``: projecting the
3D keypoints through the updated camera still gives the transformed 2D keypoints. (With non-square
pixels ``K'`` gains a skew term; the projection stays exact.)

Photometric augmentation (brightness, contrast, saturation) is drawn once per sample and shared by all
of its views, so the views of one frame keep looking alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    scale: float = 0.15  # max relative zoom
    rotation_deg: float = 15.0
    translate: float = 0.05  # max shift as a fraction of the image size
    color: float = 0.2  # brightness/contrast/saturation strength


def resize_affine(in_size: tuple[int, int], out_size: int) -> np.ndarray:
    """3×3 affine mapping pixel centres of a ``(W, H)`` image onto an ``out_size²`` image."""
    W, H = in_size
    sx, sy = out_size / W, out_size / H
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=np.float64)


def random_similarity(rng: np.random.Generator, size: int, s: AugmentSettings) -> np.ndarray:
    """A random zoom/rotation/shift about the image centre, as a 3×3 matrix."""
    zoom = math.exp(rng.uniform(-1, 1) * math.log1p(s.scale))
    angle = math.radians(rng.uniform(-1, 1) * s.rotation_deg)
    shift = rng.uniform(-1, 1, size=2) * s.translate * size
    c = (size - 1) / 2.0
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    A = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    A[:2, 2] = np.array([c, c]) + shift - A[:2, :2] @ np.array([c, c])
    return A


def apply_affine_to_camera(A: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray):
    """Camera of the warped image: ``A·K = K'·Rz`` → ``(K', Rz·R, Rz·t)``."""
    M = A[:2, :2]
    angle = math.atan2(M[1, 0] - M[0, 1], M[0, 0] + M[1, 1])
    c, s = math.cos(angle), math.sin(angle)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    K_new = A @ K @ Rz.T
    K_new[2] = np.array([0.0, 0.0, 1.0])
    return K_new, Rz @ R, Rz @ t


def transform_points(points: np.ndarray, A: np.ndarray) -> np.ndarray:
    return points @ A[:2, :2].T + A[:2, 2]


def warp(image: np.ndarray, A: np.ndarray, size: int, *, is_mask: bool = False) -> np.ndarray:
    return cv2.warpAffine(
        image,
        A[:2].astype(np.float64),
        (size, size),
        flags=cv2.INTER_NEAREST if is_mask else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def random_color(rng: np.random.Generator, s: AugmentSettings) -> tuple[float, float, float]:
    """(brightness, contrast, saturation) factors, shared by a sample's views."""
    return tuple(float(1.0 + rng.uniform(-1, 1) * s.color) for _ in range(3))  # type: ignore[return-value]


_LUMA = np.array([0.299, 0.587, 0.114])  # RGB weights of the grey level used for saturation


def color_matrix(factors: tuple[float, float, float], mean: float, *, bgr: bool = False) -> np.ndarray:
    """The 3×4 affine colour map of :func:`apply_color` for an image whose mean value is ``mean``.

    Brightness ``b`` scales the image; contrast ``c`` moves every value towards or away from the
    (brightened) image mean ``m = b·mean``; saturation ``s`` moves every pixel towards or away from its
    grey level ``luma·y``. All three are affine, so together they are ``x ↦ c·b·T·x + (1 − c)·m`` with
    ``T = s·I + (1 − s)·1·lumaᵀ`` (``T·1 = 1`` because the luma weights sum to 1). ``bgr``: for images in
    OpenCV's channel order.
    """
    brightness, contrast, saturation = factors
    luma = _LUMA[::-1] if bgr else _LUMA
    T = saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), luma)
    M = np.empty((3, 4))
    M[:, :3] = contrast * brightness * T
    M[:, 3] = (1.0 - contrast) * brightness * mean
    return M


def apply_color(image: np.ndarray, factors: tuple[float, float, float], *, bgr: bool = False) -> np.ndarray:
    """Apply brightness, contrast and saturation factors (:func:`random_color`) to an RGB image
    (BGR with ``bgr=True``).

    ``uint8`` images (values 0–255) come back as ``uint8``, rounded and saturated; float images with
    values in [0, 1] come back as float32 clipped to [0, 1].
    """
    if image.dtype == np.uint8:
        mean = float(np.mean(cv2.mean(image)[:3]))
        return cv2.transform(image, color_matrix(factors, mean, bgr=bgr))
    img = np.asarray(image, dtype=np.float32)
    out = cv2.transform(img, color_matrix(factors, float(img.mean()), bgr=bgr))
    return np.clip(out, 0.0, 1.0)
