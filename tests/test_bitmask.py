"""smil.data.bitmask: packed binary masks and the 1-bit PNG files that hold them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smil.data.bitmask import PackedMask, encode_bilevel_png, packed_mask_rows
from smil.data.crop import mask_bbox


def masks() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = [np.zeros((9, 13), np.uint8), np.full((8, 16), 255, np.uint8), np.zeros((1, 1), np.uint8)]
    for h, w in ((37, 53), (64, 64), (5, 200), (120, 7)):
        m = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(m, centre, (w // 3 + 1, h // 4 + 1), 20, 0, 360, 255, -1)
        out.append(m)
    noise = (rng.random((31, 45)) > 0.7).astype(np.uint8) * 255
    out.append(noise)
    edge = np.zeros((10, 17), np.uint8)
    edge[9, 16] = edge[0, 0] = 255  # set pixels in the first and the last (partial) byte
    out.append(edge)
    return out


@pytest.mark.parametrize("mask", masks(), ids=lambda m: f"{m.shape[1]}x{m.shape[0]}")
def test_png_round_trip_bbox_and_rows(mask: np.ndarray) -> None:
    data = encode_bilevel_png(mask)
    # a standard PNG: OpenCV (libpng) reads the same 0/255 image
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), mask)
    rows, width = packed_mask_rows(data, "m.png")
    assert width == mask.shape[1] and np.array_equal(rows, np.packbits(mask, axis=1))
    packed = PackedMask(rows, width)
    assert packed.shape == mask.shape
    assert packed.bbox() == mask_bbox(mask)
    h = mask.shape[0]
    for y0, y1 in ((0, h), (h // 3, h // 2 + 1), (-4, 2), (h - 1, h + 9), (h + 2, h + 5)):
        assert np.array_equal(packed.unpack(y0, y1), mask[max(y0, 0) : y1])


def test_other_pngs_are_not_read_as_packed_rows() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 3:25] = 255
    ok, filtered = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_BILEVEL, 1])  # libpng filters the rows
    assert ok and packed_mask_rows(filtered.tobytes()) is None
    ok, grey = cv2.imencode(".png", mask)
    assert ok and packed_mask_rows(grey.tobytes()) is None
