"""Evaluation metrics against small cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from smil.errors import ShapeMismatchError
from smil.evaluate import metrics as M

# ----------------------------------------------------------------------------------------------
# 2D keypoints and PCK
# ----------------------------------------------------------------------------------------------

GT = np.array([[10.0, 10.0], [20.0, 10.0], [10.0, 40.0]])
PRED = np.array([[13.0, 14.0], [20.0, 11.0], [10.0, 40.0]])  # errors 5, 1, 0 px


def test_keypoint_distances_and_visibility() -> None:
    d = M.keypoint_distances(PRED, GT)
    np.testing.assert_allclose(d, [5.0, 1.0, 0.0])
    d = M.keypoint_distances(PRED, GT, visible=[1.0, 0.0, 0.5])  # weights > 0 count
    assert math.isnan(d[1]) and d[0] == 5.0 and d[2] == 0.0
    gt = GT.copy()
    gt[2] = np.nan  # unknown ground truth: not evaluated
    assert np.isnan(M.keypoint_distances(PRED, gt)[2])
    pred = PRED.copy()
    pred[0] = np.nan  # missing prediction of a visible joint: a failure
    assert np.isinf(M.keypoint_distances(pred, GT)[0])


def test_pck_pixel_thresholds_three_joints() -> None:
    d = M.keypoint_distances(PRED, GT)
    # d = 5, 1, 0 → within 0.5 px: 1/3, within 2 px: 2/3, within 6 px: 3/3; 5 px is not < 5 px
    np.testing.assert_allclose(M.pck(d, [0.5, 2.0, 5.0, 6.0]), [1 / 3, 2 / 3, 2 / 3, 1.0])
    d_inv = M.keypoint_distances(PRED, GT, visible=[True, True, False])
    np.testing.assert_allclose(M.pck(d_inv, [2.0]), [0.5])  # only the 2 visible joints count


def test_pck_normalised_per_image_and_per_joint() -> None:
    # two images; image 1 is the same layout scaled ×2 (errors 10, 2, 0 px)
    d = np.stack([M.keypoint_distances(PRED, GT), M.keypoint_distances(2 * PRED, 2 * GT)])
    size = M.keypoint_bbox_size(np.stack([GT, 2 * GT]))
    np.testing.assert_allclose(size, [30.0, 60.0])  # max(w=10, h=30), doubled
    # α = 0.05: limits 1.5 px and 3 px → image 0: {1, 0} of 3, image 1: {2, 0} of 3
    np.testing.assert_allclose(M.pck(d, [0.05, 0.2], size), [[2 / 3, 1.0], [2 / 3, 1.0]])
    per_joint = M.pck_per_joint(d, [0.05], size)
    np.testing.assert_allclose(per_joint, [[0.0, 1.0, 1.0]])
    # an image without visible joints has no PCK (NaN), and does not count in per-joint PCK
    d[1, :] = np.nan
    out = M.pck(d, [0.05], size)
    assert out[0, 0] == pytest.approx(2 / 3) and np.isnan(out[1, 0])
    np.testing.assert_allclose(M.pck_per_joint(d, [0.05], size), [[0.0, 1.0, 1.0]])


def test_silhouette_normaliser_and_pck() -> None:
    mask = np.zeros((2, 20, 20), np.uint8)
    mask[0, :10, :10] = 255  # area 100 → √ = 10
    mask[1, :4, :4] = 1  # area 16 → 4
    norm = M.silhouette_normaliser(mask)
    np.testing.assert_allclose(norm, [10.0, 4.0])
    d = np.array([[1.0, 1.4, 2.0], [0.5, 0.7, 10.0]])
    # α = 0.15: limits 1.5 and 0.6 px
    np.testing.assert_allclose(M.pck(d, [0.15], norm)[:, 0], [2 / 3, 1 / 3])
    assert M.silhouette_normaliser(np.zeros((5, 5)))[()] == 0.0  # empty mask: every keypoint fails
    assert M.pck(np.array([0.0]), [0.1], 0.0)[0] == 0.0


def test_pck_auc_of_a_step_function() -> None:
    # every joint is 2.55 px off, normaliser 10 → PCK(α) = 1 for α > 0.255, else 0;
    # on the grid 0, 0.01, …, 1 that is α = 0.26 … 1.00: 75 of 101 values
    d = np.full((4, 3), 2.55)
    auc = M.pck_auc(d, np.full(4, 10.0))
    np.testing.assert_allclose(auc, 75 / 101)
    # perfect predictions: PCK(0) = 0 (strict <), 1 elsewhere
    np.testing.assert_allclose(M.pck_auc(np.zeros((1, 3)), [10.0]), 100 / 101)
    np.testing.assert_allclose(M.pck_auc(d, 10.0, alphas=[0.2, 0.3]), 0.5)


def test_error_summary_and_per_axis() -> None:
    s = M.error_summary([1.0, 2.0, 6.0, np.nan, np.inf])
    assert s == {"mean": 3.0, "median": 2.0, "max": 6.0, "count": 3, "count_infinite": 1}
    assert M.error_summary([np.nan])["mean"] is None
    per = M.summaries_along(np.array([[1.0, 3.0], [3.0, np.nan]]), 1, ["a", "b"])
    assert per["a"]["mean"] == 2.0 and per["b"]["count"] == 1 and per["b"]["max"] == 3.0
    with pytest.raises(ShapeMismatchError):
        M.summaries_along(np.zeros((2, 3)), 1, ["a"])


# ----------------------------------------------------------------------------------------------
# 3D
# ----------------------------------------------------------------------------------------------


def _points(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3))


def test_mpjpe_by_hand() -> None:
    gt = np.zeros((3, 3))
    pred = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert M.mpjpe(pred, gt) == pytest.approx(2.0)  # (5 + 1 + 0) / 3
    gt[1] = np.nan
    assert M.mpjpe(pred, gt) == pytest.approx(2.5)  # missing GT joint is skipped
    np.testing.assert_allclose(M.units_to_mm([2.5], 0.01), [25.0])  # cm → mm


def test_pa_mpjpe_zero_for_similarity_copy() -> None:
    X = _points()
    R = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    Y = 2.5 * X @ R.T + np.array([1.0, -2.0, 3.0])
    assert M.pa_mpjpe(Y, X) == pytest.approx(0.0, abs=1e-9)
    assert M.mpjpe(Y, X) > 1.0
    np.testing.assert_allclose(M.procrustes_align(Y, X), X, atol=1e-9)
    # batched, with a per-vertex variant
    np.testing.assert_allclose(M.pa_mpvpe(np.stack([Y, X]), np.stack([X, X])), [0.0, 0.0], atol=1e-9)


def test_pa_mpjpe_of_a_reflection_by_hand() -> None:
    # Points on the axes, mirrored through the plane x = 0. A proper rotation cannot undo a mirror.
    gt = np.array([[1, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 3], [0, 0, -3]], float)
    pred = gt * np.array([-1.0, 1.0, 1.0])
    # Both sets are centred. Cross-covariance Σ gt·predᵀ / 6 = diag(−2, 8, 18) / 6: the best orthogonal
    # map is the mirror itself (det −1), so Umeyama flips the smallest singular direction (x):
    # R = I, s = (18 + 8 − 2) / Σ|pred|² = 24 / 28 = 6/7, t = 0.
    s = 6 / 7
    np.testing.assert_allclose(M.procrustes_align(pred, gt), gt * np.array([-s, s, s]), atol=1e-9)
    # Errors: points on x are off by 1 + s, on y by 2(1 − s), on z by 3(1 − s):
    # mean = (2(1 + s) + 4(1 − s) + 6(1 − s)) / 6 = (26/7 + 4/7 + 6/7) / 6 = 6/7.
    np.testing.assert_allclose(M.pa_joint_distances(pred, gt), [13 / 7, 13 / 7, 2 / 7, 2 / 7, 3 / 7, 3 / 7])
    assert M.pa_mpjpe(pred, gt) == pytest.approx(6 / 7)


def test_pa_handles_missing_ground_truth_joints() -> None:
    X = _points()
    Y = 0.5 * X + 2.0
    X_missing = X.copy()
    X_missing[3] = np.nan
    d = M.pa_joint_distances(Y, X_missing)
    assert np.isnan(d[3]) and np.nanmax(d) < 1e-9


# ----------------------------------------------------------------------------------------------
# reprojection
# ----------------------------------------------------------------------------------------------


def test_reprojection_distances_multi_view() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    R0, t0 = np.eye(3), np.array([0.0, 0.0, 5.0])
    R1 = Rotation.from_euler("y", 180, degrees=True).as_matrix()  # looks at the origin from +z
    t1 = np.array([0.0, 0.0, 5.0])
    X = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # view 0: (50, 50) and (70, 50); view 1 (x mirrored): (50, 50) and (30, 50)
    kp = np.array([[[50.0, 50.0], [73.0, 54.0]], [[50.0, 50.0], [30.0, 50.0]]])
    d = M.reprojection_distances(X, np.stack([K, K]), np.stack([R0, R1]), np.stack([t0, t1]), kp)
    np.testing.assert_allclose(d, [[0.0, 5.0], [0.0, 0.0]], atol=1e-9)
    # a joint behind a camera is an infinite error, not a mirrored projection
    d = M.reprojection_distances(np.array([[0.0, 0.0, -6.0]]), K[None], R0[None], t0[None], np.array([[[50.0, 50.0]]]))
    assert np.isinf(d).all()
    uv, depth = M.project_points(np.array([[0.0, 0.0, -6.0]]), K, R0, t0)
    assert np.isnan(uv).all() and depth[0] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------------------------
# silhouettes
# ----------------------------------------------------------------------------------------------


def test_iou_of_two_rectangles() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, overlap rows 2-3: 10 px
    assert M.silhouette_iou(a, b) == pytest.approx(10 / 30)
    assert M.silhouette_iou(a, a) == 1.0
    assert np.isnan(M.silhouette_iou(np.zeros((3, 3)), np.zeros((3, 3))))
    # float silhouettes threshold at 0.5
    assert M.silhouette_iou(a * 0.9, b.astype(np.float32) * 0.4) == 0.0


def test_iou_border_handling() -> None:
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    valid = np.zeros((10, 10), bool)
    valid[:, :6] = True  # columns 6-9 are crop padding outside the original image
    pred[0:2, 4:10] = True  # 12 px: 4 inside (cols 4-5), 8 outside
    gt[0:2, 2:10] = True  # 16 px, 8 inside (cols 2-5), 8 outside (ignored)
    # WLDO: inside I = 4, U = 8; plus the 8 predicted pixels outside in both → 12/16
    assert M.silhouette_iou(pred, gt, valid) == pytest.approx(12 / 16)
    # exclude: 4/8
    assert M.silhouette_iou(pred, gt, valid, outside="exclude") == pytest.approx(4 / 8)
    # without a valid mask every pixel counts: I = 12, U = 16
    assert M.silhouette_iou(pred, gt) == pytest.approx(12 / 16)
    gt2 = gt.copy()
    gt2[5:7, 7:9] = True  # GT outside the image never penalises the prediction
    assert M.silhouette_iou(pred, gt2, valid) == pytest.approx(12 / 16)
    assert M.silhouette_iou(pred, gt2) == pytest.approx(12 / 20)


# ----------------------------------------------------------------------------------------------
# cameras
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 1e-6, 0.1, 30.0, 90.0, 179.0, 180.0])
def test_rotation_error_deg(angle: float) -> None:
    base = Rotation.from_rotvec([0.2, 0.5, -0.3]).as_matrix()
    delta = Rotation.from_rotvec(np.radians(angle) * np.array([1.0, 2.0, 2.0]) / 3.0).as_matrix()
    err = M.rotation_error_deg(base, base @ delta)
    assert err == pytest.approx(angle, abs=1e-7)
    assert M.rotation_error_deg(base @ delta, base) == pytest.approx(angle, abs=1e-7)


def test_translation_centre_and_fov_errors() -> None:
    assert M.translation_error([1.0, 2.0, 3.0], [1.0, 5.0, 7.0]) == pytest.approx(5.0)
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    # same centre C = (0, 0, −5) expressed by two rotations → centre error 0, translation error > 0
    C = np.array([0.0, 0.0, -5.0])
    assert M.camera_center_error(R, -R @ C, np.eye(3), -C) == pytest.approx(0.0, abs=1e-12)
    assert M.camera_center_error(np.eye(3), -C, np.eye(3), -(C + [3.0, 4.0, 0.0])) == pytest.approx(5.0)
    # fy = H / 2 → fov = 2·atan(1) = 90°
    K = np.array([[50.0, 0, 50], [0, 50.0, 50], [0, 0, 1]])
    assert np.degrees(M.vertical_fov(K, 100)) == pytest.approx(90.0)
    assert M.fov_error_deg(np.radians(60.0), M.vertical_fov(K, 100)) == pytest.approx(30.0)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ShapeMismatchError, match="gt"):
        M.keypoint_distances(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ShapeMismatchError, match="normaliser"):
        M.pck(np.zeros((2, 3)), [0.1], np.ones(3))
    with pytest.raises(ShapeMismatchError, match="R_pred"):
        M.rotation_error_deg(np.eye(4), np.eye(3))
    with pytest.raises(ShapeMismatchError, match="keypoints2d"):  # one view needs a view axis
        M.reprojection_distances(np.zeros((2, 3)), np.eye(3), np.eye(3), np.ones(3), np.zeros((2, 2)))
