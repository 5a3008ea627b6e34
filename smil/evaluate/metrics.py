"""Evaluation metrics: keypoints (2D and 3D), silhouettes and cameras. numpy, float64.

Every function takes numpy arrays (anything ``np.asarray`` accepts; torch tensors must be moved to the
CPU first) and computes in float64. Definitions, units and references are in ``docs/metrics.md``.

Conventions:

* 2D keypoints are pixels ``(x, y)`` in the evaluated image; a joint counts when its ``visible`` flag
  is true (or its visibility weight is > 0) and both coordinates are finite.
* 3D points are in the dataset's world frame, in world units; ``NaN`` marks a missing ground-truth
  point. :func:`units_to_mm` converts with the dataset's ``world_unit_m``.
* Cameras follow ``docs/conventions.md``: ``x_cam = R · X + t``, ``K`` pinhole intrinsics.
* Per-item results keep the leading axes of the input, so one call gives values per sample, per view
  and per joint. Missing entries are ``NaN``; :func:`error_summary` and :func:`summaries_along`
  reduce them while ignoring ``NaN``.
* A keypoint that projects from behind a camera (depth ≤ 0) has an *infinite* reprojection error: it
  is never within a PCK threshold and :func:`error_summary` counts it separately.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np

from smil.errors import ShapeMismatchError

__all__ = [
    "PCK_AUC_ALPHAS",
    "camera_center_error",
    "error_summary",
    "fov_error_deg",
    "joint_distances",
    "keypoint_bbox_size",
    "keypoint_distances",
    "mpjpe",
    "pa_joint_distances",
    "pa_mpjpe",
    "pa_mpvpe",
    "pck",
    "pck_auc",
    "pck_per_joint",
    "procrustes_align",
    "project_points",
    "reprojection_distances",
    "rotation_error_deg",
    "silhouette_iou",
    "silhouette_normaliser",
    "summaries_along",
    "translation_error",
    "units_to_mm",
    "vertical_fov",
]

#: The α grid of :func:`pck_auc`: 101 evenly spaced values from 0 to 1 (step 0.01).
PCK_AUC_ALPHAS = np.linspace(0.0, 1.0, 101)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _trailing(x: np.ndarray, tail: tuple[int, ...], name: str) -> None:
    n = len(tail)
    if x.ndim < n or tuple(x.shape[x.ndim - n :]) != tail:
        want = "(..., " + ", ".join(str(s) for s in tail) + ")"
        raise ShapeMismatchError(f"{name}: expected shape {want}, got {x.shape}")


def _nanmean(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Mean ignoring NaN (``inf`` propagates); ``NaN`` where nothing is left, without a warning."""
    ok = ~np.isnan(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _visible_mask(visible: Any, shape: tuple[int, ...]) -> np.ndarray:
    if visible is None:
        return np.ones(shape, dtype=bool)
    v = np.asarray(visible)
    v = v > 0 if v.dtype != bool else v
    try:
        return np.broadcast_to(v, shape)
    except ValueError:
        raise ShapeMismatchError(f"visible: expected shape broadcastable to {shape}, got {v.shape}") from None


def units_to_mm(value: Any, world_unit_m: float) -> np.ndarray:
    """Convert lengths in world units to millimetres: ``value · world_unit_m · 1000``."""
    return _f64(value) * float(world_unit_m) * 1000.0


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------


def error_summary(values: Any) -> dict[str, float | int | None]:
    """Mean, median and max of per-item errors, ignoring ``NaN`` (= not evaluated).

    Returns a JSON-ready dict ``{"mean", "median", "max", "count", "count_infinite"}``: the statistics
    are over the finite values (``None`` when there are none); ``count`` is their number and
    ``count_infinite`` the number of infinite values (for example keypoints behind a camera), which
    a reader should treat as failures.
    """
    v = _f64(values).ravel()
    finite = v[np.isfinite(v)]
    n_inf = int(np.isinf(v).sum())
    if finite.size == 0:
        return {"mean": None, "median": None, "max": None, "count": 0, "count_infinite": n_inf}
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "max": float(finite.max()),
        "count": int(finite.size),
        "count_infinite": n_inf,
    }


def summaries_along(values: Any, axis: int, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`error_summary` of each index along ``axis`` (e.g. per view or per joint), keyed by name."""
    v = _f64(values)
    axis = axis % v.ndim
    if v.shape[axis] != len(names):
        raise ShapeMismatchError(f"values: axis {axis} has {v.shape[axis]} entries but {len(names)} names were given")
    return {str(name): error_summary(np.take(v, i, axis=axis)) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# 2D keypoints
# ---------------------------------------------------------------------------------------------


def keypoint_distances(pred: Any, gt: Any, visible: Any = None) -> np.ndarray:
    """Euclidean pixel distances ``‖pred − gt‖`` of 2D keypoints ``(..., J, 2)`` → ``(..., J)``.

    ``NaN`` where the joint is not visible or the ground truth is not finite. A non-finite prediction
    of a visible joint gives ``inf`` (a failure, never "not evaluated").
    """
    p, g = _f64(pred), _f64(gt)
    _trailing(p, (2,), "pred")
    if p.shape != g.shape:
        raise ShapeMismatchError(f"gt: expected shape {p.shape} (as pred), got {g.shape}")
    vis = _visible_mask(visible, p.shape[:-1]) & np.isfinite(g).all(-1)
    with np.errstate(invalid="ignore"):
        d = np.linalg.norm(p - g, axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    return np.where(vis, d, np.nan)


def keypoint_bbox_size(gt: Any, visible: Any = None) -> np.ndarray:
    """PCK normaliser from the ground truth: ``max(w, h)`` of the visible keypoints' bounding box.

    ``gt (..., J, 2)`` → ``(...)`` pixels; ``NaN`` where no joint is visible. This is the normaliser of
    the original PCK (Yang & Ramanan, TPAMI 2013): a keypoint is correct within ``α · max(w, h)``.
    """
    g = _f64(gt)
    _trailing(g, (2,), "gt")
    vis = _visible_mask(visible, g.shape[:-1]) & np.isfinite(g).all(-1)
    big = np.where(vis[..., None], g, np.nan)
    any_vis = vis.any(-1)
    safe = np.where(any_vis[..., None, None], big, 0.0)
    with np.errstate(invalid="ignore"):
        size = (np.nanmax(safe, axis=-2) - np.nanmin(safe, axis=-2)).max(-1)
    return np.where(any_vis, size, np.nan)


def silhouette_normaliser(mask: Any) -> np.ndarray:
    """PCK normaliser from the ground-truth silhouette: ``√(mask area in pixels)``.

    ``mask (..., H, W)`` (non-zero = animal) → ``(...)``; as in WLDO (Biggs et al., ECCV 2020) and BARC
    (Rueegg et al., CVPR 2022). An empty mask gives 0, so every keypoint of that image fails PCK.
    """
    m = np.asarray(mask)
    if m.ndim < 2:
        raise ShapeMismatchError(f"mask: expected shape (..., H, W), got {m.shape}")
    return np.sqrt((m > 0).sum(axis=(-2, -1)).astype(np.float64))


def _hits(distances: Any, thresholds: Any, normaliser: Any) -> tuple[np.ndarray, np.ndarray]:
    """``hit (T, ..., J)`` (``d < threshold``, or ``d < α · normaliser``) and ``evaluated (..., J)``."""
    d = _f64(distances)
    if d.ndim < 1:
        raise ShapeMismatchError(f"distances: expected shape (..., J), got {d.shape}")
    th = _f64(thresholds).reshape(-1)
    limit = th[(slice(None),) + (None,) * d.ndim]  # (T, 1, …, 1)
    if normaliser is not None:
        n = _f64(normaliser)
        try:
            n = np.broadcast_to(n, d.shape[:-1])
        except ValueError:
            raise ShapeMismatchError(
                f"normaliser: expected shape {d.shape[:-1]} (one value per image), got {n.shape}"
            ) from None
        limit = limit * n[None, ..., None]
    evaluated = ~np.isnan(d)
    with np.errstate(invalid="ignore"):
        hit = (d[None] < limit) & evaluated[None]
    return hit, evaluated


def pck(distances: Any, thresholds: Sequence[float] | np.ndarray, normaliser: Any = None) -> np.ndarray:
    """Percentage of correct keypoints per image, as a fraction in ``[0, 1]``.

    Args:
        distances: ``(..., J)`` keypoint errors in pixels from :func:`keypoint_distances` (``NaN`` =
            not visible, not counted).
        thresholds: ``T`` thresholds: pixels when ``normaliser`` is ``None``, else fractions ``α``.
        normaliser: ``(...)`` one length per image (:func:`keypoint_bbox_size`,
            :func:`silhouette_normaliser`), or ``None``.

    Returns:
        ``(..., T)``: per image, the fraction of its visible joints with ``d < threshold`` (or
        ``d < α · normaliser``); ``NaN`` for an image without visible joints. The dataset PCK is the
        ``NaN``-ignoring mean over images (the WLDO/BARC protocol averages per-image PCK).
    """
    hit, evaluated = _hits(distances, thresholds, normaliser)
    count = evaluated.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(count > 0, hit.sum(-1) / np.maximum(count, 1), np.nan)
    return np.moveaxis(frac, 0, -1)


def pck_per_joint(distances: Any, thresholds: Sequence[float] | np.ndarray, normaliser: Any = None) -> np.ndarray:
    """PCK per joint, pooled over all images: ``(..., J)`` distances → ``(T, J)`` fractions.

    For each joint, the fraction of the images in which it is visible where it lies within the
    threshold (as :func:`pck`); ``NaN`` for a joint that is never visible.
    """
    hit, evaluated = _hits(distances, thresholds, normaliser)
    J = evaluated.shape[-1]
    hits = hit.reshape(hit.shape[0], -1, J).sum(1)
    count = evaluated.reshape(-1, J).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def pck_auc(distances: Any, normaliser: Any, alphas: Sequence[float] | np.ndarray = PCK_AUC_ALPHAS) -> np.ndarray:
    """Area under the normalised-PCK curve: the mean of :func:`pck` over the ``alphas`` grid.

    ``(..., J)`` distances and ``(...)`` normalisers → ``(...)`` per image, in ``[0, 1]``. With the
    default grid (α = 0, 0.01, …, 1) this is the mean PCK over 101 thresholds.
    """
    return _nanmean(pck(distances, alphas, normaliser), axis=-1)


# ---------------------------------------------------------------------------------------------
# 3D keypoints and meshes
# ---------------------------------------------------------------------------------------------


def joint_distances(pred: Any, gt: Any) -> np.ndarray:
    """Euclidean 3D distances ``‖pred − gt‖``, ``(..., J, 3)`` → ``(..., J)``, in the inputs' unit.

    ``NaN`` where the ground truth is missing (non-finite); ``inf`` where the prediction is not finite.
    """
    p, g = _f64(pred), _f64(gt)
    _trailing(p, (3,), "pred")
    if p.shape != g.shape:
        raise ShapeMismatchError(f"gt: expected shape {p.shape} (as pred), got {g.shape}")
    with np.errstate(invalid="ignore"):
        d = np.linalg.norm(p - g, axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    return np.where(np.isfinite(g).all(-1), d, np.nan)


def mpjpe(pred: Any, gt: Any) -> np.ndarray:
    """Mean per-joint position error: the mean of :func:`joint_distances` over joints → ``(...)``."""
    return _nanmean(joint_distances(pred, gt), axis=-1)


def procrustes_align(pred: Any, gt: Any) -> np.ndarray:
    """``pred`` aligned onto ``gt`` by the best similarity transform (scale, proper rotation, translation).

    ``(..., N, 3)`` → ``(..., N, 3)``. Uses :func:`smil.geometry.procrustes.similarity_procrustes`
    (Umeyama 1991, with the reflection fix: the rotation always has ``det = +1``), fitted on the points
    whose ground truth and prediction are both finite.
    """
    import torch

    from smil.geometry.procrustes import similarity_procrustes

    p, g = _f64(pred), _f64(gt)
    _trailing(p, (3,), "pred")
    if p.shape != g.shape:
        raise ShapeMismatchError(f"gt: expected shape {p.shape} (as pred), got {g.shape}")
    if p.ndim < 2:
        raise ShapeMismatchError(f"pred: expected shape (..., N, 3), got {p.shape}")
    aligned, _, _, _ = similarity_procrustes(torch.from_numpy(p), torch.from_numpy(g))
    return aligned.numpy()


def pa_joint_distances(pred: Any, gt: Any) -> np.ndarray:
    """Per-joint distances after Procrustes alignment (:func:`procrustes_align`) → ``(..., J)``."""
    return joint_distances(procrustes_align(pred, gt), gt)


def pa_mpjpe(pred: Any, gt: Any) -> np.ndarray:
    """Procrustes-aligned MPJPE: mean of :func:`pa_joint_distances` over joints → ``(...)``."""
    return _nanmean(pa_joint_distances(pred, gt), axis=-1)


def pa_mpvpe(pred_vertices: Any, gt_vertices: Any) -> np.ndarray:
    """Procrustes-aligned mean per-vertex position error, ``(..., V, 3)`` meshes → ``(...)``.

    The meshes must share their topology (vertex ``i`` of both is the same surface point).
    """
    return pa_mpjpe(pred_vertices, gt_vertices)


# ---------------------------------------------------------------------------------------------
# projection and multi-view reprojection
# ---------------------------------------------------------------------------------------------


def project_points(X: Any, K: Any, R: Any, t: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project world points ``X (..., N, 3)`` with cameras ``(..., 3, 3)``/``(..., 3)``.

    Returns ``(uv (..., N, 2) pixels, depth (..., N))``, depth being the camera-frame ``z`` (world
    units). Points with depth ≤ 0 get ``uv = NaN`` (they are not in front of the camera).
    """
    X, K, R, t = _f64(X), _f64(K), _f64(R), _f64(t)
    _trailing(X, (3,), "X")
    _trailing(K, (3, 3), "K")
    _trailing(R, (3, 3), "R")
    _trailing(t, (3,), "t")
    xc = X @ np.swapaxes(R, -1, -2) + t[..., None, :]
    h = xc @ np.swapaxes(K, -1, -2)
    z = xc[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = h[..., :2] / h[..., 2:3]
    return np.where((z > 0)[..., None], uv, np.nan), z


def reprojection_distances(
    joints3d: Any, K: Any, R: Any, t: Any, keypoints2d: Any, visible: Any = None
) -> np.ndarray:
    """Pixel error of 3D joints projected into every view, against that view's 2D keypoints.

    Args:
        joints3d: ``(..., J, 3)`` predicted (or ground-truth) 3D joints, world units.
        K, R, t: ``(..., V, 3, 3)``, ``(..., V, 3, 3)``, ``(..., V, 3)`` ground-truth cameras.
        keypoints2d: ``(..., V, J, 2)`` ground-truth pixels.
        visible: ``(..., V, J)`` visibility (flags or weights > 0), optionally combined by the caller
            with a valid-view mask.

    Returns:
        ``(..., V, J)`` pixel distances; ``NaN`` where not visible, ``inf`` where the joint is behind
        the camera (depth ≤ 0) or not finite.
    """
    X = _f64(joints3d)
    _trailing(X, (3,), "joints3d")
    uv, _ = project_points(X[..., None, :, :], K, R, t)
    kp = _f64(keypoints2d)
    if kp.shape != uv.shape:
        raise ShapeMismatchError(
            f"keypoints2d: expected shape {uv.shape} (..., V, J, 2) from joints3d and the cameras, got {kp.shape}"
        )
    return keypoint_distances(uv, kp, visible)


# ---------------------------------------------------------------------------------------------
# silhouettes
# ---------------------------------------------------------------------------------------------


def silhouette_iou(
    pred: Any,
    gt: Any,
    valid: Any = None,
    outside: Literal["wldo", "exclude"] = "wldo",
) -> np.ndarray:
    """Intersection over union of binary silhouettes ``(..., H, W)`` (non-zero / > 0.5 = foreground).

    Args:
        pred, gt: predicted and ground-truth silhouettes. Float inputs are thresholded at 0.5, others
            at > 0.
        valid: optional ``(..., H, W)`` mask of pixels that lie inside the original image (pixels a
            crop padded beyond the image border are 0). ``None``: every pixel is valid.
        outside: how pixels outside ``valid`` count.
            ``"wldo"`` (default): as in WLDO/BARC, the ground truth there is replaced by the prediction,
            so a predicted pixel outside the image counts in both the intersection and the union and
            the ground truth there is ignored:
            ``IoU = (|P∩G∩valid| + |P∖valid|) / (|(P∪G)∩valid| + |P∖valid|)``.
            ``"exclude"``: pixels outside are dropped from both,
            ``IoU = |P∩G∩valid| / |(P∪G)∩valid|``.

    Returns:
        ``(...)`` IoU in ``[0, 1]``; ``NaN`` where the union is empty (nothing predicted, nothing there).
    """
    if outside not in ("wldo", "exclude"):
        raise ValueError(f"outside must be 'wldo' or 'exclude', got {outside!r}")

    def binary(x: Any, name: str) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim < 2:
            raise ShapeMismatchError(f"{name}: expected shape (..., H, W), got {a.shape}")
        return a > 0.5 if np.issubdtype(a.dtype, np.floating) else a > 0

    P, G = binary(pred, "pred"), binary(gt, "gt")
    if P.shape != G.shape:
        raise ShapeMismatchError(f"gt: expected shape {P.shape} (as pred), got {G.shape}")
    if valid is None:
        inside = np.ones(P.shape, dtype=bool)
    else:
        inside = np.broadcast_to(binary(valid, "valid"), P.shape)
    inter = (P & G & inside).sum(axis=(-2, -1))
    union = ((P | G) & inside).sum(axis=(-2, -1))
    if outside == "wldo":
        extra = (P & ~inside).sum(axis=(-2, -1))
        inter, union = inter + extra, union + extra
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# cameras
# ---------------------------------------------------------------------------------------------


def rotation_error_deg(R_pred: Any, R_gt: Any) -> np.ndarray:
    """Geodesic angle between rotations, ``(..., 3, 3)`` → ``(...)`` degrees in ``[0, 180]``.

    ``θ = angle of R_predᵀ · R_gt``, computed as ``atan2(‖A − Aᵀ‖_F / (2√2), (tr A − 1) / 2)``, which
    stays accurate near 0 and 180 degrees (unlike ``arccos`` of the trace alone).
    """
    Rp, Rg = _f64(R_pred), _f64(R_gt)
    _trailing(Rp, (3, 3), "R_pred")
    _trailing(Rg, (3, 3), "R_gt")
    A = np.swapaxes(Rp, -1, -2) @ Rg
    cos = (np.trace(A, axis1=-2, axis2=-1) - 1.0) / 2.0
    sin = np.linalg.norm(A - np.swapaxes(A, -1, -2), axis=(-2, -1)) / (2.0 * math.sqrt(2.0))
    return np.degrees(np.arctan2(sin, cos))


def translation_error(t_pred: Any, t_gt: Any) -> np.ndarray:
    """Euclidean distance between world→camera translations ``t`` ``(..., 3)`` → ``(...)`` world units."""
    tp, tg = _f64(t_pred), _f64(t_gt)
    _trailing(tp, (3,), "t_pred")
    _trailing(tg, (3,), "t_gt")
    return np.linalg.norm(tp - tg, axis=-1)


def camera_center_error(R_pred: Any, t_pred: Any, R_gt: Any, t_gt: Any) -> np.ndarray:
    """Distance between camera centres ``C = −Rᵀ t`` in the world, ``(...)`` world units."""
    def centre(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        return -(np.swapaxes(R, -1, -2) @ t[..., None])[..., 0]

    Rp, tp, Rg, tg = _f64(R_pred), _f64(t_pred), _f64(R_gt), _f64(t_gt)
    for x, tail, name in ((Rp, (3, 3), "R_pred"), (tp, (3,), "t_pred"), (Rg, (3, 3), "R_gt"), (tg, (3,), "t_gt")):
        _trailing(x, tail, name)
    return np.linalg.norm(centre(Rp, tp) - centre(Rg, tg), axis=-1)


def vertical_fov(K: Any, image_height: float) -> np.ndarray:
    """Vertical field of view ``2 · atan(H / (2 · fy))`` of intrinsics ``(..., 3, 3)``, radians."""
    K = _f64(K)
    _trailing(K, (3, 3), "K")
    return 2.0 * np.arctan(float(image_height) / (2.0 * K[..., 1, 1]))


def fov_error_deg(fov_pred_rad: Any, fov_gt_rad: Any) -> np.ndarray:
    """Absolute field-of-view difference in degrees (inputs in radians, e.g. from :func:`vertical_fov`)."""
    return np.degrees(np.abs(_f64(fov_pred_rad) - _f64(fov_gt_rad)))
