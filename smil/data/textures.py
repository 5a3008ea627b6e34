"""Procedural textured backgrounds for synthetic images (seeded, numpy + OpenCV).

Every function takes a ``numpy.random.Generator`` and an image size ``(width, height)`` and returns
an ``(H, W, 3)`` uint8 RGB image; the same generator state always gives the same bytes. Kinds:

* ``noise``: multi-octave value noise (random coarse grids upsampled bicubically), mapped through a
  random two- or three-colour palette;
* ``stripes``: a sinusoidal grating with random orientation, frequency and palette, with noise;
* ``gradient``: a linear gradient between two random colours, with noise;
* ``blobs``: random overlapping coloured ellipses, blurred, over a random base colour.

:func:`random_background` picks a kind and adds a faint noise layer so no background is flat.
"""

from __future__ import annotations

import cv2
import numpy as np

from smil.errors import SmilError

__all__ = ["BACKGROUND_KINDS", "blobs", "gradient", "random_background", "stripes", "value_noise"]

BACKGROUND_KINDS = ("noise", "stripes", "gradient", "blobs")


def _size(size: tuple[int, int]) -> tuple[int, int]:
    W, H = int(size[0]), int(size[1])
    if W <= 0 or H <= 0:
        raise SmilError(f"background size must be positive (width, height), got {size}")
    return W, H


def value_noise(rng: np.random.Generator, size: tuple[int, int], octaves: int = 4) -> np.ndarray:
    """Multi-octave value noise in ``[0, 1]``, shape ``(H, W)`` float32.

    Octaves are summed on a grid of at most 64 × 64 (the finest octave has fewer cells than that)
    and the sum is upsampled once, bilinearly, to the image size.
    """
    W, H = _size(size)
    gw, gh = min(W, 64), min(H, 64)
    out = np.zeros((gh, gw), np.float32)
    cells = int(rng.integers(2, 6))
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
        out += np.float32(amp) * cv2.resize(grid, (gw, gh), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cells *= 2
    lo, hi = float(out.min()), float(out.max())
    out = (out - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    return cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR)


def _palette(rng: np.random.Generator, field: np.ndarray, n: int) -> np.ndarray:
    """Map a ``[0, 1]`` field through ``n`` random colours (piecewise linear); ``(H, W, 3)`` uint8.

    The palette is a 256-entry lookup table, so the mapping costs one ``cv2.LUT``.
    """
    colours = rng.uniform(0, 255, size=(n, 3))
    pos = np.linspace(0.0, n - 1, 256)
    i = np.minimum(pos.astype(np.int64), n - 2)
    frac = (pos - i)[:, None]
    lut = np.clip(np.rint(colours[i] * (1 - frac) + colours[i + 1] * frac), 0, 255).astype(np.uint8)
    q = np.clip(np.rint(field * 255.0), 0, 255).astype(np.uint8)
    return cv2.LUT(cv2.merge([q, q, q]), lut.reshape(256, 1, 3))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Coloured value noise."""
    return _palette(rng, value_noise(rng, size), int(rng.integers(2, 4)))


def stripes(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A sinusoidal grating with random orientation, period (4–40 % of the width) and palette."""
    W, H = _size(size)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(0.04, 0.4) * W
    phase = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    coord = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    field = 0.5 + 0.5 * np.sin(coord * np.float32(2 * np.pi / period) + np.float32(phase))
    field = np.float32(0.8) * field + np.float32(0.2) * value_noise(rng, size, octaves=3)
    return _palette(rng, field, 2)


def gradient(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A linear two-colour gradient in a random direction, with 15 % value noise."""
    W, H = _size(size)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    coord = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    field = (coord - coord.min()) / max(float(np.ptp(coord)), 1e-6)
    field = np.float32(0.85) * field + np.float32(0.15) * value_noise(rng, size, octaves=3)
    return _palette(rng, field, 2)


def blobs(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """5–25 random filled ellipses in random colours over a random base colour, lightly blurred."""
    W, H = _size(size)
    img = np.empty((H, W, 3), np.uint8)
    img[:] = rng.integers(0, 256, size=3, dtype=np.uint8)
    for _ in range(int(rng.integers(5, 26))):
        centre = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        axes = (int(rng.integers(3, max(4, W // 4))), int(rng.integers(3, max(4, H // 4))))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, thickness=-1)
    k = 2 * int(rng.integers(1, 4)) + 1
    return cv2.GaussianBlur(img, (k, k), 0)


_MAKERS = {"noise": noise, "stripes": stripes, "gradient": gradient, "blobs": blobs}


def random_background(rng: np.random.Generator, size: tuple[int, int], kind: str | None = None) -> np.ndarray:
    """A textured background of a random (or the given) kind, plus faint fine noise; ``(H, W, 3)`` uint8."""
    if kind is None:
        kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    if kind not in _MAKERS:
        raise SmilError(f"unknown background kind {kind!r}; expected one of {list(BACKGROUND_KINDS)}")
    W, H = _size(size)
    img = _MAKERS[kind](rng, (W, H)).astype(np.int16)
    img += rng.integers(-6, 7, size=(H, W, 1), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)
