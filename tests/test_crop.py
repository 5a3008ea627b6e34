"""smil.data.crop: square crops, resizing and the matching camera update."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smil.data import crop as C
from smil.data.images import decode_image, encode_jpeg


def _camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = np.array([[rng.uniform(300, 1500), 0, rng.uniform(200, 800)],
                  [0, rng.uniform(300, 1500), rng.uniform(200, 600)], [0, 0, 1.0]])
    R, _ = cv2.Rodrigues(rng.normal(scale=0.3, size=3))
    t = np.array([0, 0, rng.uniform(3, 6)])
    return K, R, t


def _project(X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    uv = (X @ R.T + t) @ K.T
    return uv[:, :2] / uv[:, 2:3]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6), out=st.sampled_from([32, 64, 256]), padding=st.floats(1.0, 2.0),
       border=st.sampled_from(["shift", "pad"]))
def test_adjusted_camera_projects_onto_transformed_keypoints(seed: int, out: int, padding: float, border: str) -> None:
    rng = np.random.default_rng(seed)
    K, R, t = _camera(rng)
    X = rng.normal(scale=0.5, size=(12, 3))
    kp = _project(X, K, R, t)
    plan = C.plan_crop(C.points_bbox(kp), (1024, 768), out, padding=padding, border=border)
    np.testing.assert_allclose(_project(X, C.adjust_intrinsics(K, plan.affine), R, t),
                               C.transform_points(kp, plan.affine), atol=1e-6)


def test_affine_matches_cv2_resize_of_the_crop() -> None:
    # a linear ramp survives area averaging and linear interpolation exactly, away from the borders
    ys, xs = np.mgrid[0:300, 0:400].astype(np.float32)
    image = np.dstack([xs, ys, xs + ys])
    for box, out in ((C.CropBox(50, 40, 200), 64), (C.CropBox(100, 120, 50), 80)):
        res = C.crop_and_resize(image, box, out)
        A = C.crop_affine(box, out)
        inv = np.linalg.inv(A)
        u, v = np.meshgrid(np.arange(out), np.arange(out))
        src = np.stack([u, v], -1).reshape(-1, 2) @ inv[:2, :2].T + inv[:2, 2]
        inner = slice(2, -2)
        np.testing.assert_allclose(res[inner, inner, 0], src[:, 0].reshape(out, out)[inner, inner], atol=0.05)
        np.testing.assert_allclose(res[inner, inner, 1], src[:, 1].reshape(out, out)[inner, inner], atol=0.05)


def test_reduced_jpeg_decoding_follows_reduce_affine() -> None:
    ys, xs = np.mgrid[0:512, 0:768].astype(np.float64)
    image = np.dstack([xs / 3, ys / 2, np.full_like(xs, 128)]).astype(np.uint8)
    data = encode_jpeg(image, 100)
    for r in (2, 4, 8):
        small = decode_image(data, reduce=r)
        assert small.shape == (512 // r, 768 // r, 3)
        A = np.linalg.inv(C.reduce_affine(r))
        i, j = 10, 20  # reduced pixel (x=j, y=i) sits at source A·(j, i)
        x, y = A[:2, :2] @ [j, i] + A[:2, 2]
        assert abs(small[i, j, 0] - x / 3) <= 1.5 and abs(small[i, j, 1] - y / 2) <= 1.5


def test_square_box_shift_and_pad() -> None:
    bbox = (0.0, 100.0, 39.0, 139.0)  # 40×40 at the left edge of a 200×200 image
    shifted = C.square_box(bbox, (200, 200), padding=2.0, border="shift")
    padded = C.square_box(bbox, (200, 200), padding=2.0, border="pad")
    assert shifted == C.CropBox(0, 80, 80)
    assert padded.size == 80 and padded.x0 == -20 and padded.y0 == 80
    # larger than the image: always centred and padded
    big = C.square_box((0.0, 0.0, 199.0, 99.0), (200, 100), padding=1.5, border="shift")
    assert big.size == 300 and big.x0 == -50 and big.y0 == -100


def test_crop_outside_the_image_is_zero_padded() -> None:
    image = np.full((50, 50, 3), 200, np.uint8)
    out = C.crop_and_resize(image, C.CropBox(-50, 0, 100), 100)
    assert (out[:, :50] == 0).all() and (out[:50, 50:] == 200).all() and (out[50:, 50:] == 0).all()
    assert not C.crop_and_resize(image, C.CropBox(100, 100, 20), 10).any()


def test_full_frame_when_there_is_no_bbox() -> None:
    plan = C.plan_crop(None, (640, 480), 64, allow_reduce=False)
    assert plan.box == C.CropBox(0, -80, 640)


def test_reduction_never_upsamples() -> None:
    for size in (100, 255, 256, 511, 512, 1024, 2100):
        plan = C.plan_crop((0.0, 0.0, size - 1.0, size - 1.0), (4000, 4000), 256, padding=1.0)
        assert plan.box.size >= 256 or plan.reduce == 1
        assert plan.reduce == max([r for r in (1, 2, 4, 8) if size / r >= 256] or [1])


def test_mask_crop_is_binary() -> None:
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (50, 50), 30, 255, -1)
    out = C.crop_and_resize(mask, C.CropBox(10, 10, 80), 37, is_mask=True)
    assert set(np.unique(out)) == {0, 255}


@pytest.mark.parametrize("box", [C.CropBox(40, 30, 120), C.CropBox(-20, 100, 90)])
def test_undistort_maps_on_the_crop_equal_undistorting_the_whole_image(box: C.CropBox) -> None:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (200, 240, 3), dtype=np.uint8), (7, 7), 2)
    K = np.array([[220.0, 0, 119.5], [0, 220.0, 99.5], [0, 0, 1]])
    dist = np.array([-0.3, 0.1, 0.001, -0.002, 0.0])
    maps = cv2.initUndistortRectifyMap(K, dist, None, K, (240, 200), cv2.CV_16SC2)
    whole = cv2.remap(image, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    expect = C.crop_and_resize(whole, box, 60)
    got = C.crop_and_resize(image, box, 60, undistort_maps=maps)
    assert np.abs(got.astype(int) - expect.astype(int)).max() <= 1
