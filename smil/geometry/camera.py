"""Pinhole cameras in the OpenCV convention.

Conventions (see ``docs/conventions.md``):

* Intrinsics ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (``s = 0`` from :func:`intrinsics`).
* Extrinsics ``R, t`` map world to camera: ``x_cam = R · X + t``; camera x right, y down,
  z forward (into the scene).
* Pixel coordinates ``(u, v) = (fx · x/z + cx, fy · y/z + cy)``; the centre of the top-left pixel
  is ``(0, 0)``.
* Lens distortion uses OpenCV's model and coefficient order ``(k1, k2, p1, p2[, k3[, k4, k5, k6
  [, s1, s2, s3, s4[, τx, τy]]]])`` and is handled by the numpy helpers
  :func:`undistort_points` / :func:`distort_points` (via ``cv2``); the torch functions model an
  ideal (undistorted) pinhole.

Torch functions broadcast leading batch dimensions: ``K``, ``R``, ``t`` of shapes
``(..., 3, 3)``, ``(..., 3, 3)``, ``(..., 3)`` apply to points ``(..., N, 3)``.
"""

from __future__ import annotations

import math
from typing import TypeVar

import cv2
import numpy as np
import torch

from smil.errors import ShapeMismatchError

__all__ = [
    "camera_center",
    "distort_points",
    "focal_to_fov",
    "fov_to_focal",
    "intrinsics",
    "project",
    "projection_matrix",
    "undistort_points",
    "world_to_camera",
]

Scalar = TypeVar("Scalar", float, np.ndarray, torch.Tensor)


def _check(x: torch.Tensor, trailing: tuple[int, ...], name: str) -> None:
    n = len(trailing)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != trailing:
        expected = "(..., " + ", ".join(str(s) for s in trailing) + ")"
        raise ShapeMismatchError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


def intrinsics(
    fx: float | torch.Tensor,
    fy: float | torch.Tensor,
    cx: float | torch.Tensor,
    cy: float | torch.Tensor,
) -> torch.Tensor:
    """Build ``K`` of shape ``(..., 3, 3)`` from (broadcastable) focal lengths and principal point.

    Python floats give a tensor of the default dtype; tensors keep their dtype and device.
    """
    tensors = [v for v in (fx, fy, cx, cy) if isinstance(v, torch.Tensor)]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    fx, fy, cx, cy = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=dtype, device=device) for v in (fx, fy, cx, cy))
    )
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    return torch.stack(
        [
            torch.stack([fx, zero, cx], -1),
            torch.stack([zero, fy, cy], -1),
            torch.stack([zero, zero, one], -1),
        ],
        -2,
    )


def world_to_camera(X: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Camera-frame coordinates ``R · X + t`` of world points ``X (..., N, 3)``; shape ``(..., N, 3)``."""
    _check(X, (3,), "X")
    _check(R, (3, 3), "R")
    _check(t, (3,), "t")
    return X @ R.transpose(-1, -2) + t[..., None, :]


def project(
    X: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Project world points ``X (..., N, 3)`` to pixel coordinates ``(..., N, 2)``.

    The depth ``z`` (camera-frame z, in world units) is not clamped: a point behind the camera
    (``z < 0``) is divided by its negative depth and lands mirrored through the principal point,
    and a point with ``z = 0`` gives ``inf``/``NaN``. Use ``return_depth=True`` to get ``z``
    ``(..., N)`` and mask points with ``z ≤ 0`` yourself.
    """
    _check(K, (3, 3), "K")
    xc = world_to_camera(X, R, t)
    h = xc @ K.transpose(-1, -2)
    z = xc[..., 2]
    uv = h[..., :2] / h[..., 2:3]
    return (uv, z) if return_depth else uv


def projection_matrix(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``P = K · [R | t]``, shape ``(..., 3, 4)``; ``P · [X; 1]`` gives homogeneous pixels."""
    _check(K, (3, 3), "K")
    _check(R, (3, 3), "R")
    _check(t, (3,), "t")
    return K @ torch.cat([R, t[..., :, None]], -1)


def camera_center(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Camera centre in world coordinates, ``C = −Rᵀ t``; shape ``(..., 3)``."""
    _check(R, (3, 3), "R")
    _check(t, (3,), "t")
    return -(R.transpose(-1, -2) @ t[..., :, None])[..., 0]


def fov_to_focal(fov_rad: Scalar, size_px: Scalar) -> Scalar:
    """Focal length in pixels for a field of view across ``size_px`` pixels: ``size / (2·tan(fov/2))``.

    Works on floats, numpy arrays and torch tensors. Use the image height and ``fy`` for the
    network's (vertical) field of view.
    """
    if isinstance(fov_rad, torch.Tensor) or isinstance(size_px, torch.Tensor):
        return torch.as_tensor(size_px) / (2 * torch.tan(torch.as_tensor(fov_rad) / 2))
    if isinstance(fov_rad, np.ndarray) or isinstance(size_px, np.ndarray):
        return np.asarray(size_px) / (2 * np.tan(np.asarray(fov_rad) / 2))
    return float(size_px) / (2 * math.tan(float(fov_rad) / 2))


def focal_to_fov(focal: Scalar, size_px: Scalar) -> Scalar:
    """Field of view in radians across ``size_px`` pixels: ``fov = 2·atan(size / (2·focal))``."""
    if isinstance(focal, torch.Tensor) or isinstance(size_px, torch.Tensor):
        return 2 * torch.atan(torch.as_tensor(size_px) / (2 * torch.as_tensor(focal)))
    if isinstance(focal, np.ndarray) or isinstance(size_px, np.ndarray):
        return 2 * np.arctan(np.asarray(size_px) / (2 * np.asarray(focal)))
    return 2 * math.atan(float(size_px) / (2 * float(focal)))


def _points_np(points_px: np.ndarray) -> np.ndarray:
    pts = np.asarray(points_px, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ShapeMismatchError(f"points_px: expected shape (N, 2), got {pts.shape}")
    return pts


def _dist_np(dist: np.ndarray | list[float] | None) -> np.ndarray:
    d = np.zeros(0) if dist is None else np.asarray(dist, dtype=np.float64).ravel()
    if d.size not in (0, 4, 5, 8, 12, 14):
        raise ShapeMismatchError(
            f"dist: expected 0, 4, 5, 8, 12 or 14 OpenCV distortion coefficients, got {d.size}"
        )
    return d


def undistort_points(
    points_px: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray | list[float] | None,
    *,
    iterations: int = 100,
    eps: float = 1e-12,
) -> np.ndarray:
    """Remove lens distortion from pixel coordinates (numpy in, numpy out).

    Args:
        points_px: ``(N, 2)`` distorted pixel coordinates; rows with a non-finite value stay NaN.
        K: ``(3, 3)`` intrinsics.
        dist: OpenCV distortion coefficients (``None`` or empty for none).
        iterations, eps: stopping criteria of OpenCV's iterative inversion (its default of 5
            iterations is too few for strong barrel distortion).

    Returns:
        ``(N, 2)`` float64 pixel coordinates of an ideal pinhole camera with the same ``K``
        (``cv2.undistortPoints`` with ``P = K``).
    """
    pts = _points_np(points_px)
    K = np.asarray(K, dtype=np.float64)
    d = _dist_np(dist)
    out = np.full_like(pts, np.nan)
    ok = np.isfinite(pts).all(axis=1)
    if not ok.any():
        return out
    if d.size == 0 or not d.any():
        out[ok] = pts[ok]
        return out
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(iterations), float(eps))
    und = cv2.undistortPoints(pts[ok].reshape(-1, 1, 2), K, d, R=None, P=K, criteria=criteria)
    out[ok] = und.reshape(-1, 2)
    return out


def distort_points(points_px: np.ndarray, K: np.ndarray, dist: np.ndarray | list[float] | None) -> np.ndarray:
    """Apply lens distortion to ideal-pinhole pixel coordinates (inverse of :func:`undistort_points`).

    ``(N, 2)`` in, ``(N, 2)`` float64 out; non-finite rows stay NaN. Uses ``cv2.projectPoints`` on
    the normalised rays ``K⁻¹ [u, v, 1]``.
    """
    pts = _points_np(points_px)
    K = np.asarray(K, dtype=np.float64)
    d = _dist_np(dist)
    out = np.full_like(pts, np.nan)
    ok = np.isfinite(pts).all(axis=1)
    if not ok.any():
        return out
    homog = np.concatenate([pts[ok], np.ones((int(ok.sum()), 1))], axis=1)
    rays = homog @ np.linalg.inv(K).T
    rays /= rays[:, 2:3]
    proj, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)
    out[ok] = proj.reshape(-1, 2)
    return out
