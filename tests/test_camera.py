"""Pinhole camera: OpenCV convention, projection, fov/focal, distortion helpers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smil.errors import ShapeMismatchError
from smil.geometry import camera as cam
from smil.geometry.rotations import axis_angle_to_matrix


def test_intrinsics_layout_and_broadcast():
    K = cam.intrinsics(500.0, 400.0, 320.0, 240.0)
    assert K.tolist() == [[500, 0, 320], [0, 400, 240], [0, 0, 1]]
    Kb = cam.intrinsics(torch.tensor([100.0, 200.0], dtype=torch.float64), 300.0, 1.0, 2.0)
    assert Kb.shape == (2, 3, 3) and Kb.dtype == torch.float64
    assert Kb[1, 0, 0].item() == 200 and Kb[1, 1, 1].item() == 300


def test_project_by_hand():
    K = cam.intrinsics(100.0, 200.0, 50.0, 60.0)
    R = torch.eye(3)
    t = torch.tensor([0.0, 0.0, 2.0])
    X = torch.tensor([[1.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    # Camera frame: (1, .5, 4) and (0, 0, 2) → u = 100·1/4 + 50 = 75, v = 200·.5/4 + 60 = 85.
    uv, z = cam.project(X, K, R, t, return_depth=True)
    torch.testing.assert_close(uv, torch.tensor([[75.0, 85.0], [50.0, 60.0]]))
    torch.testing.assert_close(z, torch.tensor([4.0, 2.0]))


def test_opencv_convention_right_and_down():
    K = cam.intrinsics(800.0, 800.0, 320.0, 240.0)
    R, t = torch.eye(3), torch.zeros(3)
    uv = cam.project(torch.tensor([[0.1, 0.2, 1.0]]), K, R, t)[0]
    assert uv[0] > 320  # +x is to the right of cx
    assert uv[1] > 240  # +y is below cy (image y grows downwards)
    # Same as cv2.projectPoints for a general pose.
    g = torch.Generator().manual_seed(0)
    rvec = torch.randn(3, generator=g, dtype=torch.float64) * 0.3
    tvec = torch.tensor([0.1, -0.2, 5.0], dtype=torch.float64)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    Kd = cam.intrinsics(700.0, 650.0, 300.0, 200.0).double()
    ours = cam.project(X, Kd, axis_angle_to_matrix(rvec), tvec)
    ref, _ = cv2.projectPoints(X.numpy(), rvec.numpy(), tvec.numpy(), Kd.numpy(), None)
    np.testing.assert_allclose(ours.numpy(), ref.reshape(-1, 2), atol=1e-9)


def test_projection_matrix_and_camera_center():
    g = torch.Generator().manual_seed(1)
    R = axis_angle_to_matrix(torch.randn(4, 3, generator=g, dtype=torch.float64))
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    K = cam.intrinsics(torch.full((4,), 500.0, dtype=torch.float64), 500.0, 320.0, 240.0)
    P = cam.projection_matrix(K, R, t)
    assert P.shape == (4, 3, 4)
    X = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    h = torch.cat([X, torch.ones_like(X[..., :1])], -1) @ P.transpose(-1, -2)
    torch.testing.assert_close(h[..., :2] / h[..., 2:], cam.project(X, K, R, t))
    C = cam.camera_center(R, t)
    # The centre maps to the camera-frame origin and is P's null vector.
    torch.testing.assert_close(
        cam.world_to_camera(C[:, None], R, t)[:, 0], torch.zeros(4, 3, dtype=torch.float64)
    )
    torch.testing.assert_close(
        P @ torch.cat([C, torch.ones(4, 1, dtype=torch.float64)], -1)[..., None],
        torch.zeros(4, 3, 1, dtype=torch.float64),
    )


def test_project_broadcasts_batch_dims():
    K = cam.intrinsics(500.0, 500.0, 320.0, 240.0)  # shared
    R = torch.eye(3).expand(2, 5, 3, 3)
    t = torch.tensor([0.0, 0.0, 3.0]).expand(2, 5, 3)
    X = torch.rand(5, 11, 3)  # broadcasts over the leading 2
    assert cam.project(X, K, R, t).shape == (2, 5, 11, 2)
    with pytest.raises(ShapeMismatchError):
        cam.project(torch.rand(5, 2), K, torch.eye(3), torch.zeros(3))


def test_point_behind_camera_is_mirrored_not_clamped():
    K = cam.intrinsics(100.0, 100.0, 0.0, 0.0)
    uv, z = cam.project(torch.tensor([[1.0, 1.0, -2.0]]), K, torch.eye(3), torch.zeros(3), return_depth=True)
    assert z.item() == -2.0
    torch.testing.assert_close(uv, torch.tensor([[-50.0, -50.0]]))


def test_project_is_differentiable():
    K = cam.intrinsics(torch.tensor(500.0, requires_grad=True), 500.0, 320.0, 240.0)
    t = torch.tensor([0.0, 0.0, 3.0], requires_grad=True)
    cam.project(torch.rand(6, 3), K, torch.eye(3), t).sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 3.1), st.floats(1.0, 8000.0))
def test_fov_focal_round_trip(fov, size):
    f = cam.fov_to_focal(fov, size)
    assert math.isclose(cam.focal_to_fov(f, size), fov, rel_tol=1e-12)
    # Array and tensor inputs give the same numbers.
    assert np.isclose(cam.fov_to_focal(np.array([fov]), size)[0], f)
    assert torch.isclose(
        cam.focal_to_fov(torch.tensor(f, dtype=torch.float64), size), torch.tensor(fov, dtype=torch.float64)
    )


def test_fov_definition():
    # 90° across 1000 px → the image edge is at 45°: f = 500.
    assert math.isclose(cam.fov_to_focal(math.pi / 2, 1000), 500.0)
    assert math.isclose(cam.focal_to_fov(500.0, 1000), math.pi / 2)


K_NP = np.array([[769.9, 0.0, 639.5], [0.0, 760.0, 511.5], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    "dist",
    [
        [-0.2853406116327607, 0.0, 0.0, 0.0, 0.0],  # the fixture session's strong barrel distortion
        [-0.3437, 0.1788, 0.001, -0.002, -0.0527],
        [0.05, -0.01, 0.0005, 0.0003],
    ],
)
def test_undistort_inverts_opencv_projection(dist):
    rng = np.random.default_rng(0)
    # Rays within the region where the distortion is invertible (normalised radius ≤ 0.6).
    xy = rng.uniform(-0.42, 0.42, size=(200, 2))
    rays = np.concatenate([xy, np.ones((200, 1))], 1)
    distorted, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K_NP, np.array(dist))
    distorted = distorted.reshape(-1, 2)
    ideal = rays[:, :2] @ K_NP[:2, :2].T + K_NP[:2, 2]
    und = cam.undistort_points(distorted, K_NP, dist)
    np.testing.assert_allclose(und, ideal, atol=1e-6)
    np.testing.assert_allclose(cam.distort_points(ideal, K_NP, dist), distorted, atol=1e-6)


def test_undistort_keeps_nan_rows_and_handles_no_distortion():
    pts = np.array([[100.0, 200.0], [np.nan, np.nan], [700.0, np.nan], [300.0, 400.0]])
    out = cam.undistort_points(pts, K_NP, [-0.28, 0, 0, 0, 0])
    assert out.shape == (4, 2)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    assert np.isfinite(out[[0, 3]]).all()
    np.testing.assert_array_equal(cam.undistort_points(pts, K_NP, None)[[0, 3]], pts[[0, 3]])
    assert np.isnan(cam.undistort_points(np.full((2, 2), np.nan), K_NP, [0.1, 0, 0, 0])).all()
    assert cam.undistort_points(np.zeros((0, 2)), K_NP, [0.1, 0, 0, 0]).shape == (0, 2)
    with pytest.raises(ShapeMismatchError):
        cam.undistort_points(np.zeros((3, 3)), K_NP, None)
    with pytest.raises(ShapeMismatchError):
        cam.undistort_points(pts, K_NP, [0.1, 0.2, 0.3])
