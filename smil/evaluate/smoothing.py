"""Temporal smoothing of per-frame body and camera parameters.

**Rotations are smoothed as rotations.** Each output rotation is the weighted chordal L2 mean
(:func:`smil.geometry.rotations.average_rotations`) of the rotation *matrices* in a Gaussian window,
projected back onto SO(3), so it is always a proper rotation (orthonormal, det = +1). Axis-angle
vectors are never averaged element-wise: near an angle of π, consecutive frames flip between
``θ·n`` and ``(2π − θ)·(−n)`` although the rotation barely changes, and the element-wise mean of the
two is a rotation near the identity, far from both. Matrices have no such seam. The chordal mean is
meaningful while the rotations inside one window stay within about 90° of each other, which holds
for any plausible frame rate and window.

**Other parameters** (translations, betas, per-joint scales, fields of view, …) are averaged with the
same weights; strictly positive ones (``scale``) are averaged in log space, so they stay positive.

**Window.** A frame at time ``t`` (frame number) gets the weight ``exp(−½ (Δt / σ)²)`` from every
frame of the same segment with ``|Δt| ≤ truncate · σ``. Segments (e.g. recording sessions) are never
mixed. At the ends of a segment and next to missing frames the window is simply cut and the
remaining weights renormalised (no padding, no reflection): the first frame averages over a
one-sided window. Frames whose value is not finite (no prediction) get no weight and stay NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from smil.errors import ConfigError, DataError, ShapeMismatchError
from smil.geometry.rotations import average_rotations

#: Parameters given as rotation matrices ``(F, …, 3, 3)``; smoothed as rotations.
ROTATION_KEYS = ("global_rot", "joint_rot", "cam_rot")
#: Strictly positive parameters; smoothed in log space.
LOG_KEYS = ("scale",)

_CHUNK = 512  # frames per chunk: bounds the memory of the (frames, window, …) gathers


@dataclass(frozen=True)
class SmoothingSettings:
    """A Gaussian window of standard deviation ``sigma_frames`` (in frames), cut at ``truncate·σ``."""

    sigma_frames: float
    truncate: float = 3.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma_frames) and self.sigma_frames > 0):
            raise ConfigError(f"must be a positive number of frames, got {self.sigma_frames}", field="smooth")
        if not (math.isfinite(self.truncate) and self.truncate > 0):
            raise ConfigError(f"must be positive, got {self.truncate}", field="smooth_truncate")

    @property
    def radius(self) -> int:
        """Largest frame distance with a non-zero weight."""
        return int(math.floor(self.truncate * self.sigma_frames))

    def describe(self) -> dict:
        """JSON-ready description (for output sidecars)."""
        return {
            "sigma_frames": float(self.sigma_frames),
            "truncate": float(self.truncate),
            "radius_frames": self.radius,
            "window": "gaussian, cut at segment ends and gaps, weights renormalised",
            "rotations": "weighted chordal L2 mean of rotation matrices, projected to SO(3)",
            "log_space": list(LOG_KEYS),
        }


@dataclass(frozen=True)
class Window:
    """For each frame ``i``: neighbour indices ``index[i]`` (F, W) and their weights ``weight[i]``.

    Out-of-window slots point at frame ``i`` itself with weight 0.
    """

    index: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def gaussian_window(
    num_frames: int,
    settings: SmoothingSettings,
    times: np.ndarray | None = None,
    segments: np.ndarray | None = None,
) -> Window:
    """The smoothing window of ``num_frames`` frames.

    Args:
        times: integer frame numbers ``(F,)`` (default ``0 … F-1``), unique within a segment; frames
            may come in any order.
        segments: labels ``(F,)`` (any hashable values); frames of different segments never mix
            (default: one segment).
    """
    F = int(num_frames)
    t = np.arange(F, dtype=np.int64) if times is None else np.asarray(times)
    if t.shape != (F,):
        raise ShapeMismatchError(f"times: expected shape ({F},), got {t.shape}")
    if t.size and not np.all(np.equal(np.mod(t, 1), 0)):
        raise DataError("smoothing needs integer frame numbers", field="times")
    t = t.astype(np.int64)
    if segments is None:
        seg = np.zeros(F, dtype=np.int64)
    else:
        seg = np.unique(np.asarray(segments), return_inverse=True)[1].reshape(-1)
    if seg.shape != (F,):
        raise ShapeMismatchError(f"segments: expected shape ({F},), got {np.shape(segments)}")
    order = np.lexsort((t, seg))
    ts, ss = t[order], seg[order]
    dup = (ts[1:] == ts[:-1]) & (ss[1:] == ss[:-1])
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise DataError(f"frame number {int(ts[k])} occurs twice in one segment; cannot order the frames in time",
                        field="times")
    # Frame numbers are unique integers within a segment, so every frame within `radius` frame
    # numbers is within `radius` positions in the sorted order.
    M = settings.radius
    offsets = np.arange(-M, M + 1)
    pos = np.arange(F)[:, None] + offsets[None, :]  # (F, W) positions in sorted order
    inside = (pos >= 0) & (pos < F)
    pos_c = np.clip(pos, 0, max(F - 1, 0))
    same = inside & (ss[pos_c] == ss[:, None])
    dt = (ts[pos_c] - ts[:, None]).astype(np.float64)
    near = same & (np.abs(dt) <= settings.truncate * settings.sigma_frames)
    w = np.where(near, np.exp(-0.5 * (dt / settings.sigma_frames) ** 2), 0.0)
    idx = np.where(near, order[pos_c], order[:, None])
    index = np.empty_like(idx)
    weight = np.empty_like(w)
    index[order] = idx
    weight[order] = w
    return Window(index=index, weight=weight)


def _valid_frames(x: np.ndarray, trailing: int) -> np.ndarray:
    axes = tuple(range(1, 1 + trailing)) if trailing else ()
    finite = np.isfinite(x)
    return finite.all(axis=axes) if axes else finite


def smooth_values(x: np.ndarray, window: Window, *, log: bool = False) -> np.ndarray:
    """Gaussian-weighted mean of ``x`` ``(F, …)`` over ``window`` (float64 out).

    ``log``: average ``log(x)`` and exponentiate (for strictly positive values).
    """
    x = np.asarray(x, dtype=np.float64)
    F = len(window)
    if x.shape[:1] != (F,):
        raise ShapeMismatchError(f"expected {F} frames along axis 0, got shape {x.shape}")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = np.isfinite(x) & (x <= 0)
            if bad.any():
                raise DataError("log-space smoothing needs strictly positive values", field="scale")
            x = np.log(x)
    valid = _valid_frames(x, x.ndim - 1)
    xz = np.where(valid.reshape(F, *([1] * (x.ndim - 1))), x, 0.0)
    out = np.full_like(x, np.nan)
    for lo in range(0, F, _CHUNK):
        hi = min(lo + _CHUNK, F)
        idx = window.index[lo:hi]
        w = window.weight[lo:hi] * valid[idx]
        total = w.sum(axis=1)
        wn = w / np.where(total > 0, total, 1.0)[:, None]
        gathered = xz[idx]  # (c, W, …)
        mean = np.einsum("cw,cw...->c...", wn, gathered)
        out[lo:hi] = mean
    out[~valid] = np.nan
    return np.exp(out) if log else out


def smooth_rotations(R: np.ndarray, window: Window) -> np.ndarray:
    """Weighted chordal mean of rotation matrices ``(F, …, 3, 3)`` over ``window``, on SO(3)."""
    R = np.asarray(R, dtype=np.float64)
    F = len(window)
    if R.shape[:1] != (F,) or R.shape[-2:] != (3, 3):
        raise ShapeMismatchError(f"expected rotation matrices ({F}, …, 3, 3), got shape {R.shape}")
    valid = _valid_frames(R, R.ndim - 1)
    Rz = np.where(valid.reshape(F, *([1] * (R.ndim - 1))), R, 0.0)
    out = np.full_like(R, np.nan)
    extra = R.ndim - 3  # dims between frame and the 3×3
    for lo in range(0, F, _CHUNK):
        hi = min(lo + _CHUNK, F)
        idx = window.index[lo:hi]
        w = window.weight[lo:hi] * valid[idx]
        stack = torch.from_numpy(Rz[idx])  # (c, W, …, 3, 3)
        wt = torch.from_numpy(w).reshape(*w.shape, *([1] * extra))
        out[lo:hi] = average_rotations(stack, wt, dim=1).numpy()
    out[~valid] = np.nan  # a valid frame always weighs itself (weight 1), so only these lack a mean
    return out


def smooth_parameters(
    params: Mapping[str, np.ndarray],
    settings: SmoothingSettings,
    *,
    times: np.ndarray | None = None,
    segments: np.ndarray | None = None,
    rotation_keys: tuple[str, ...] = ROTATION_KEYS,
    log_keys: tuple[str, ...] = LOG_KEYS,
) -> dict[str, np.ndarray]:
    """Smooth every array of ``params`` (all ``(F, …)``) along the frame axis.

    Keys in ``rotation_keys`` must hold rotation matrices ``(F, …, 3, 3)`` and are smoothed as
    rotations; keys in ``log_keys`` are smoothed in log space; everything else element-wise. The
    input is not modified; the output arrays are float64.
    """
    if not params:
        return {}
    F = len(next(iter(params.values())))
    window = gaussian_window(F, settings, times, segments)
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if name in rotation_keys:
            out[name] = smooth_rotations(value, window)
        else:
            out[name] = smooth_values(value, window, log=name in log_keys)
    return out


__all__ = [
    "LOG_KEYS",
    "ROTATION_KEYS",
    "SmoothingSettings",
    "Window",
    "gaussian_window",
    "smooth_parameters",
    "smooth_rotations",
    "smooth_values",
]
