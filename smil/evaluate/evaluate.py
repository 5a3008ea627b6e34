"""Evaluate a trained model and the mean-pose baseline on a dataset split: ``smil evaluate``.

Everything is evaluated on the images the network sees: the stored images resized to the network's
square input (``image_size`` × ``image_size``, no augmentation). 2D errors are also converted back to
pixels of the *stored* image (the inverse of the resize), so numbers can be compared across networks
with different input sizes. The split is the one stored in the HDF5 file (never re-split). Metric
definitions are in ``docs/metrics.md`` (section "Evaluation outputs" describes these files).

Predictors. Every predictor maps a batch to *outputs*: numpy ``vertices (B,Nv,3)``, ``joints (B,J,3)``
(world frame, world units) and cameras ``K, R, t (B,V,…)`` for the network image
(:func:`smil.evaluate.inference.decode`). Two are always evaluated: ``model`` (the trained network)
and ``baseline`` (:func:`~smil.evaluate.inference.mean_pose_prediction`: the training set's mean
parameters for every input). :func:`ground_truth_outputs` is the perfect predictor (ground-truth body
parameters and cameras); it also gives the ground-truth mesh for PA-MPVPE.

What is compared where ("seen" views are the ones the network was given; all valid views unless
``views`` restricts a multi-view model to the first ``K`` valid views of each sample):

- ``keypoints2d``: predicted joints through the *predicted* camera of each seen view vs the 2D
  keypoints (visibility > 0): px in the network image and in the stored image; PCK at pixel thresholds
  (both), PCK normalised by the keypoints' bounding box and by √(mask area) (where a mask exists),
  the silhouette PCK AUC.
- ``reprojection``: predicted 3D joints through the *ground-truth* cameras of every valid view (seen
  or not), vs the 2D keypoints: the multi-view reprojection error (for a single-view item, the 2D error
  given the true camera).
- ``keypoints3d``: predicted joints vs stored 3D keypoints in the model's frame (MPJPE) and after
  similarity alignment (PA-MPJPE), in world units and mm (``world_unit_m``). Multi-view models predict
  in the world frame of the rig; single-view models in the frame of the view
  (:mod:`smil.train.view_frame`), so their MPJPE includes the depth of the animal from the camera and
  their ground-truth camera is the canonical one (identity rotation, centred principal point).
- ``mesh``: PA-MPVPE against the body posed with the ground-truth parameters (samples with
  ``global_rot`` and ``joint_rot``).
- ``silhouette``: IoU of the hard-rasterised predicted mesh (predicted camera, network image) and the
  ground-truth mask, seen views with a mask. The dataset stores no "inside the original image" mask, so
  every pixel of the network image counts.
- ``camera``: predicted vs dataset ``K, R, t`` of each seen view: rotation angle (degrees),
  translation distance (world units, mm), vertical field of view (degrees).

metrics.json layout (``format`` ``smil-evaluation``, ``format_version`` 1)::

    {format, format_version, smil_version, model_path, dataset_path, split, mode,
     image_size,                 # network input (square, px)
     stored_image_size: [W, H],  # stored images (px)
     world_unit_m, joint_names, camera_names,
     views: {requested: K | null, rig: V},
     counts: {items, samples, images, keypoints, samples_with_keypoints3d, samples_with_gt_mesh,
              images_with_mask},
     thresholds: {pixel: [2, 5, 10], bbox_alpha: [0.05, 0.1], silhouette_alpha: [0.1, 0.15],
                  auc_alpha: [0, 1, 101]},
     model: BLOCK, baseline: BLOCK,
     ratio_to_baseline: {headline error key: model / baseline}}

    BLOCK = {headline: {flat numbers: :func:`headline`},
             keypoints2d: {px, stored_px: SUMMARY, pck_px, pck_stored_px: {"2": f, …},
                           pck_bbox: {"0.05": f, "0.1": f}, pck_silhouette: {…} | null,
                           pck_silhouette_auc: f | null, per_view: {camera: SUMMARY}},
             reprojection: {px, stored_px: SUMMARY, pck_px: {…}, per_view: {camera: SUMMARY}},
             keypoints3d: {mpjpe, mpjpe_mm, pa_mpjpe, pa_mpjpe_mm: SUMMARY} | null,
             mesh: {pa_mpvpe, pa_mpvpe_mm: SUMMARY} | null,
             silhouette: {iou: SUMMARY, per_view: {camera: SUMMARY}} | null,
             camera: {rotation_deg, translation, translation_mm, fov_deg: SUMMARY,
                      per_view: {camera: {rotation_deg, translation_mm, fov_deg: SUMMARY}}},
             curves: {pck_stored_px, pck_bbox: CURVE, pck_silhouette: CURVE | null}}

    CURVE = {thresholds: [x, …], pck: [f, …]}   (stored px; α of the box; α of √mask area)

    SUMMARY = {mean, median, max, count, count_infinite}   (smil.evaluate.metrics.error_summary)

PCK values are fractions in [0, 1], the mean of per-image PCK (WLDO/BARC); MPJPE-style values are
summaries of per-item means. ``null`` marks what the data cannot give (no 3D keypoints, no masks, no
ground-truth parameters); NaN never appears in the JSON.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from smil.errors import SmilError
from smil.evaluate.metrics import (
    PCK_AUC_ALPHAS,
    error_summary,
    joint_distances,
    keypoint_bbox_size,
    keypoint_distances,
    pa_joint_distances,
    pa_mpvpe,
    pck,
    pck_auc,
    pck_per_joint,
    project_points,
    rotation_error_deg,
    silhouette_iou,
    silhouette_normaliser,
    translation_error,
    units_to_mm,
    vertical_fov,
)
from smil.io_utils import write_json_atomic, write_text_atomic

__all__ = [
    "BBOX_ALPHAS",
    "FORMAT",
    "HEADLINE_ERRORS",
    "PIXEL_THRESHOLDS",
    "SILHOUETTE_ALPHAS",
    "EvalContext",
    "Evaluation",
    "evaluate",
    "evaluate_batches",
    "ground_truth_outputs",
    "item_errors",
    "metrics_json",
    "per_joint_rows",
    "per_sample_rows",
    "resolve_device",
    "restrict_views",
    "summarise",
    "views_ablation",
    "write_evaluation",
]

FORMAT = "smil-evaluation"
FORMAT_VERSION = 1
ABLATION_FORMAT = "smil-views-ablation"

#: PCK thresholds in pixels (network image and stored image alike).
PIXEL_THRESHOLDS = (2.0, 5.0, 10.0)
#: PCK thresholds as fractions of the keypoints' bounding box, max(w, h).
BBOX_ALPHAS = (0.05, 0.1)
#: PCK thresholds as fractions of √(ground-truth mask area).
SILHOUETTE_ALPHAS = (0.1, 0.15)
#: PCK curves in metrics.json: pixel thresholds from 0 to this fraction of the stored image's larger side,
#: bounding-box α from 0 to 0.5, silhouette α on the AUC grid (0 to 1), CURVE_POINTS thresholds each.
CURVE_STORED_PX_FRACTION = 0.25
CURVE_POINTS = 51
CURVE_BBOX_ALPHAS = np.linspace(0.0, 0.5, CURVE_POINTS)
#: Headline errors (lower is better) compared with the baseline in ``ratio_to_baseline``. Camera errors
#: are left out: a multi-view model in ``delta`` camera mode has the calibration itself as its baseline.
HEADLINE_ERRORS = (
    "keypoints2d_mean_px",
    "keypoints2d_median_px",
    "reprojection_mean_px",
    "mpjpe_mm",
    "pa_mpjpe_mm",
    "pa_mpvpe_mm",
)

#: An output dict: ``vertices (B,Nv,3)``, ``joints (B,J,3)``, ``K, R, t (B,V,…)``, numpy.
Outputs = dict[str, np.ndarray]
Predictor = Callable[[dict[str, torch.Tensor]], Outputs]


# ---------------------------------------------------------------------------------------------
# context and helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalContext:
    """What the metric assembly needs to know besides a batch.

    ``camera_names`` names the dataset's view slots; ``faces`` is the body mesh's ``(F, 3)`` triangles;
    ``body`` (a :class:`~smil.body.model.SMILModel`) poses the ground-truth mesh (``None``: no PA-MPVPE).
    """

    image_size: int
    stored_size: tuple[int, int]
    world_unit_m: float
    joint_names: list[str]
    camera_names: list[str]
    faces: np.ndarray
    body: Any = None
    parents: list[int] = field(default_factory=list)


def to_stored_px(points: np.ndarray, image_size: int, stored_size: tuple[int, int]) -> np.ndarray:
    """Network-image pixels ``(..., 2)`` → stored-image pixels (the inverse of the dataset's resize).

    Pixel centres map onto pixel centres: ``x_stored = (x + 0.5) · W / S − 0.5`` (and ``H`` for y).
    """
    W, H = stored_size
    scale = np.array([W / image_size, H / image_size])
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5


def stored_intrinsics(K: np.ndarray, image_size: int, stored_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics ``(..., 3, 3)`` of the network image → the same camera for the stored image."""
    W, H = stored_size
    A = np.array([[W / image_size, 0.0, 0.5 * W / image_size - 0.5],
                  [0.0, H / image_size, 0.5 * H / image_size - 0.5],
                  [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; an unavailable CUDA device is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise SmilError(f"expected cpu, cuda, cuda:N or auto, got {name!r}", field="device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SmilError(f"{name}: CUDA is not available on this machine (use cpu)", field="device")
    return name


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def restrict_views(batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The batch with only the first ``k`` valid views of each sample marked valid (slot order).

    Images of the dropped views are zeroed, as the multi-view dataset does for invalid views. The other
    keys are unchanged, so the ground truth of every valid view stays available for the reprojection.
    """
    vm = batch["view_mask"].bool()
    keep = vm & (vm.long().cumsum(1) <= int(k))
    out = dict(batch)
    out["view_mask"] = keep
    out["image"] = batch["image"] * keep.to(batch["image"].dtype)[..., None, None, None]
    return out


def render_silhouette(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                      size: tuple[int, int]) -> np.ndarray:
    """Hard silhouette ``(H, W)`` bool of a world-frame mesh seen by camera ``K, R, t`` (``size`` = (W, H))."""
    from smil.render.raster import rasterize

    v = np.asarray(vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        return np.zeros((size[1], size[0]), dtype=bool)
    cam = v @ np.asarray(R, np.float64).T + np.asarray(t, np.float64)
    return rasterize(cam, np.asarray(faces), np.asarray(K, np.float64), size).mask


# ---------------------------------------------------------------------------------------------
# predictors
# ---------------------------------------------------------------------------------------------


def ground_truth_outputs(body: Any, batch: dict[str, torch.Tensor]) -> Outputs:
    """Outputs of a perfect predictor: the body posed with the ground-truth parameters, the dataset's cameras.

    Parameters come from ``params/*`` (axis-angle rotations). Samples without ``global_rot`` and
    ``joint_rot`` get NaN vertices and joints (``posed`` False); missing ``betas``, ``log_beta_scales``,
    ``betas_trans`` default to zeros, missing ``trans``/``scale`` to 0/1 (``placed`` False: the mesh is
    right up to its placement in the world). Also returns ``posed`` and ``placed`` ``(B,)`` bool.
    """
    device = next(iter(body.buffers())).device
    B = int(batch["index"].shape[0])
    J, nb = int(body.num_joints), int(body.num_betas)

    def has(name: str) -> torch.Tensor:
        flag = batch.get(f"has_{name}")
        return torch.zeros(B, dtype=torch.bool) if flag is None else flag.bool().cpu()

    def param(name: str, default: torch.Tensor) -> torch.Tensor:
        value = batch.get(f"params/{name}")
        if value is None:
            return default
        value = value.cpu().to(torch.float64)
        flag = has(name).reshape((B,) + (1,) * (value.dim() - 1))
        return torch.where(flag, value, default)

    zeros = torch.zeros
    posed = has("global_rot") & has("joint_rot")
    placed = posed & has("trans") & has("scale")
    p = {
        "global_rot": param("global_rot", zeros(B, 3, dtype=torch.float64)),
        "joint_rot": param("joint_rot", zeros(B, J - 1, 3, dtype=torch.float64)),
        "betas": param("betas", zeros(B, nb, dtype=torch.float64)),
        "trans": param("trans", zeros(B, 3, dtype=torch.float64)),
        "scale": param("scale", torch.ones(B, dtype=torch.float64)),
        "joint_log_scales": param("log_beta_scales", zeros(B, J, 3, dtype=torch.float64)),
        "joint_trans": param("betas_trans", zeros(B, J, 3, dtype=torch.float64)),
    }
    with torch.no_grad():
        out = body(**{k: v.to(device) for k, v in p.items()}, rotation_format="axis_angle")
    nan = ~posed.numpy()
    vertices, joints = _np(out.vertices).astype(np.float64), _np(out.joints).astype(np.float64)
    vertices[nan] = np.nan
    joints[nan] = np.nan
    return {
        "vertices": vertices,
        "joints": joints,
        "K": _np(batch["K"]).astype(np.float64),
        "R": _np(batch["R"]).astype(np.float64),
        "t": _np(batch["t"]).astype(np.float64),
        "posed": posed.numpy(),
        "placed": placed.numpy(),
    }


def model_predictors(trained: Any) -> dict[str, Predictor]:
    """``{"model": …, "baseline": …}`` for a :class:`~smil.evaluate.inference.TrainedModel`."""
    from smil.evaluate.inference import decode, mean_pose_prediction, run_network

    def on_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(trained.device) for k, v in batch.items()}

    return {
        "model": lambda batch: decode(trained, run_network(trained, batch)),
        "baseline": lambda batch: decode(trained, mean_pose_prediction(trained, on_device(batch))),
    }


# ---------------------------------------------------------------------------------------------
# per-item errors
# ---------------------------------------------------------------------------------------------


def item_errors(
    out: Outputs,
    batch: dict[str, torch.Tensor],
    ctx: EvalContext,
    *,
    seen: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    gt_vertices: np.ndarray | None = None,
    silhouettes: bool = True,
) -> dict[str, np.ndarray]:
    """Per-item errors of one batch of outputs (leading axes ``(B, V)`` or ``(B,)``; NaN = not evaluated).

    Args:
        out: predictor outputs (``vertices, joints, K, R, t``).
        batch: the dataset batch (network-image keypoints, cameras and masks).
        seen: ``(B, V)`` views the network was given (default: the batch's ``view_mask``); 2D errors
            through the predicted cameras, IoU and camera errors are evaluated there.
        valid: ``(B, V)`` valid views for the reprojection through the ground-truth cameras (default:
            the batch's ``view_mask``).
        gt_vertices: ``(B, Nv, 3)`` ground-truth mesh (NaN rows = unknown) for PA-MPVPE.
        silhouettes: rasterise the predicted mesh for the IoU (False: IoU is NaN).

    Returns:
        ``kp2d, kp2d_stored, reproj, reproj_stored (B,V,J)`` px; ``bbox, sil_norm (B,V)`` px normalisers;
        ``joint3d, pa_joint3d (B,J)`` and ``pa_mpvpe (B,)`` world units; ``iou, rot_deg, trans, fov_deg
        (B,V)``.
    """
    S, stored = ctx.image_size, ctx.stored_size
    vm = _np(batch["view_mask"]).astype(bool)
    seen = vm if seen is None else np.asarray(seen, dtype=bool)
    valid = vm if valid is None else np.asarray(valid, dtype=bool)
    kp = _np(batch["keypoints2d"]).astype(np.float64)
    vis = _np(batch["visibility"]) > 0
    K_gt, R_gt, t_gt = (_np(batch[k]).astype(np.float64) for k in ("K", "R", "t"))
    joints = np.asarray(out["joints"], dtype=np.float64)
    K, R, t = (np.asarray(out[k], dtype=np.float64) for k in ("K", "R", "t"))
    B, V = vm.shape

    # 2D through the predicted cameras (seen views)
    uv, _ = project_points(joints[:, None], K, R, t)
    vis_seen = vis & seen[..., None]
    kp2d = keypoint_distances(uv, kp, vis_seen)
    kp2d_stored = keypoint_distances(to_stored_px(uv, S, stored), to_stored_px(kp, S, stored), vis_seen)
    bbox = keypoint_bbox_size(kp, vis_seen)
    masks = _np(batch["mask"])
    has_mask = _np(batch["has_mask"]).astype(bool) & seen
    sil_norm = np.where(has_mask, silhouette_normaliser(masks), np.nan)

    # 3D joints through the ground-truth cameras (every valid view)
    uv_gt, _ = project_points(joints[:, None], K_gt, R_gt, t_gt)
    vis_valid = vis & valid[..., None]
    reproj = keypoint_distances(uv_gt, kp, vis_valid)
    reproj_stored = keypoint_distances(to_stored_px(uv_gt, S, stored), to_stored_px(kp, S, stored), vis_valid)

    # 3D in the world frame, and after similarity alignment
    kp3d = _np(batch["keypoints3d"]).astype(np.float64)
    joint3d = joint_distances(joints, kp3d)
    pa_joint3d = np.full(joint3d.shape, np.nan)
    rows = (np.isfinite(kp3d).all(-1) & np.isfinite(joints).all(-1)).sum(-1) >= 3
    if rows.any():
        pa_joint3d[rows] = pa_joint_distances(joints[rows], kp3d[rows])
    mpvpe = np.full(B, np.nan)
    if gt_vertices is not None:
        gv = np.asarray(gt_vertices, dtype=np.float64)
        rows = np.isfinite(gv).all((-1, -2)) & np.isfinite(out["vertices"]).all((-1, -2))
        if rows.any():
            mpvpe[rows] = pa_mpvpe(np.asarray(out["vertices"], np.float64)[rows], gv[rows])

    # silhouettes
    iou = np.full((B, V), np.nan)
    if silhouettes:
        for b, v in zip(*np.nonzero(has_mask)):
            pred = render_silhouette(out["vertices"][b], ctx.faces, K[b, v], R[b, v], t[b, v], (S, S))
            iou[b, v] = silhouette_iou(pred, masks[b, v])

    # cameras
    rot = np.where(seen, rotation_error_deg(R, R_gt), np.nan)
    trans = np.where(seen, translation_error(t, t_gt), np.nan)
    fov = np.where(seen, np.degrees(np.abs(vertical_fov(K, S) - vertical_fov(K_gt, S))), np.nan)
    return {
        "kp2d": kp2d, "kp2d_stored": kp2d_stored, "bbox": bbox, "sil_norm": sil_norm,
        "reproj": reproj, "reproj_stored": reproj_stored,
        "joint3d": joint3d, "pa_joint3d": pa_joint3d, "pa_mpvpe": mpvpe,
        "iou": iou, "rot_deg": rot, "trans": trans, "fov_deg": fov,
    }


# ---------------------------------------------------------------------------------------------
# running over a dataset
# ---------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Per-item errors of every predictor over a dataset split, plus what the outputs need.

    ``errors[name][key]`` are :func:`item_errors` arrays concatenated over items; ``index`` ``(N,)`` the
    sample index in the file; ``camera`` ``(N, V)`` the dataset view slot of each item view; ``seen``
    and ``valid`` ``(N, V)``; ``has_mask`` ``(N, V)``; ``has_gt_mesh`` ``(N,)``; ``overlays``: records
    of the first items for the qualitative figures (model outputs of the seen views).
    """

    ctx: EvalContext
    errors: dict[str, dict[str, np.ndarray]]
    index: np.ndarray
    camera: np.ndarray
    seen: np.ndarray
    valid: np.ndarray
    has_mask: np.ndarray
    has_gt_mesh: np.ndarray
    overlays: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class _Progress:
    """tqdm on a terminal; otherwise a plain line about every 10 % (and at the end) on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.count, self.desc, self.t0 = total, 0, desc, time.monotonic()
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, leave=False)
        self.next = max(1, total // 10)

    def update(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (self.count >= self.next or self.count >= self.total):
            self.next = self.count + max(1, self.total // 10)
            rate = self.count / max(time.monotonic() - self.t0, 1e-9)
            print(f"{self.desc}: {self.count}/{self.total} items ({rate:.1f}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate_batches(
    batches: Iterable[dict[str, torch.Tensor]],
    predictors: dict[str, Predictor],
    ctx: EvalContext,
    *,
    views: int | None = None,
    overlays: int = 0,
    overlay_predictor: str = "model",
    progress: _Progress | None = None,
) -> Evaluation:
    """Run every predictor over the batches and collect :func:`item_errors`.

    ``views``: give the predictors only the first ``views`` valid views of each sample
    (:func:`restrict_views`; multi-view batches). ``overlays``: keep the outputs of the first items'
    seen views (of ``overlay_predictor``) for :func:`write_evaluation`'s figures.
    """
    parts: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in predictors}
    index, camera, seen_all, valid_all, has_mask, has_mesh = [], [], [], [], [], []
    kept: list[dict[str, Any]] = []
    for batch in batches:
        valid = _np(batch["view_mask"]).astype(bool)
        given = restrict_views(batch, views) if views is not None else batch
        seen = _np(given["view_mask"]).astype(bool)
        gt = ground_truth_outputs(ctx.body, batch) if ctx.body is not None else None
        B, V = valid.shape
        view = _np(batch["view"]).astype(np.int64)
        cams = np.where(view[:, None] >= 0, view[:, None], np.arange(V)[None, :])
        for name, predict in predictors.items():
            out = predict(given)
            parts[name].append(item_errors(out, batch, ctx, seen=seen, valid=valid,
                                           gt_vertices=None if gt is None else gt["vertices"]))
            if name == overlay_predictor and len(kept) < overlays:
                for b in range(min(B, overlays - len(kept))):
                    kept.append({
                        "index": int(batch["index"][b]),
                        "cameras": [int(c) for c in cams[b][seen[b]]],
                        "vertices": np.asarray(out["vertices"][b]),
                        "joints": np.asarray(out["joints"][b]),
                        "K": np.asarray(out["K"][b][seen[b]]),
                        "R": np.asarray(out["R"][b][seen[b]]),
                        "t": np.asarray(out["t"][b][seen[b]]),
                    })
        index.append(_np(batch["index"]).astype(np.int64))
        camera.append(cams)
        seen_all.append(seen)
        valid_all.append(valid)
        has_mask.append(_np(batch["has_mask"]).astype(bool) & seen)
        has_mesh.append(np.zeros(B, bool) if gt is None else gt["posed"])
        if progress is not None:
            progress.update(B)
    if progress is not None:
        progress.close()
    if not index:
        raise SmilError("nothing to evaluate: the selected split has no samples with a valid view")
    errors = {name: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for name, ps in parts.items()}
    return Evaluation(
        ctx=ctx, errors=errors, index=np.concatenate(index), camera=np.concatenate(camera),
        seen=np.concatenate(seen_all), valid=np.concatenate(valid_all), has_mask=np.concatenate(has_mask),
        has_gt_mesh=np.concatenate(has_mesh), overlays=kept,
    )


def _item_count(trained: Any, dataset: str | Path, split: str | None) -> int:
    from smil.data.store import open_dataset

    with open_dataset(dataset) as reader:
        rows = np.arange(reader.num_samples) if split is None else reader.split_indices(split)
        vv = reader.view_valid[rows]
        return int(vv.sum()) if trained.mode == "singleview" else int(vv.any(1).sum())


def context_for(trained: Any, dataset: str | Path) -> EvalContext:
    """The :class:`EvalContext` of a trained model on a dataset."""
    from smil.data.store import open_dataset

    with open_dataset(dataset) as reader:
        return EvalContext(
            image_size=int(trained.image_size),
            stored_size=tuple(reader.image_size),
            world_unit_m=float(reader.world_unit_m),
            joint_names=list(reader.joint_names),
            camera_names=list(reader.camera_names),
            faces=_np(trained.body.faces).astype(np.int64),
            body=trained.body,
            parents=list(trained.body.parents),
        )


def _check_views(trained: Any, views: int | None) -> None:
    if views is None:
        return
    if trained.mode != "multiview":
        raise SmilError(f"--views needs a multi-view model; {trained.path} is a single-view model",
                        field="views")
    V = len(trained.spec.rig)
    if not 1 <= int(views) <= V:
        raise SmilError(f"--views must be between 1 and the rig's {V} views, got {views}", field="views")


def evaluate(
    trained: Any,
    dataset: str | Path,
    *,
    split: str | None = "test",
    batch_size: int = 16,
    views: int | None = None,
    overlays: int = 0,
    num_workers: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Evaluate a :class:`~smil.evaluate.inference.TrainedModel` and its mean-pose baseline.

    ``split``: ``"train"``, ``"val"``, ``"test"`` (as stored in the file) or ``None`` for all samples.
    ``views``: multi-view models only, evaluate with the first ``views`` valid views of each sample.
    Raises a :class:`~smil.errors.SmilError` when the model does not fit the dataset (joints, rig).
    """
    from smil.evaluate.inference import iterate_dataset

    _check_views(trained, views)
    if batch_size < 1:
        raise SmilError(f"--batch-size must be ≥ 1, got {batch_size}", field="batch_size")
    batches = iterate_dataset(trained, dataset, split, batch_size=batch_size, num_workers=num_workers)
    first = next(iter(batches), None)  # runs the model/dataset compatibility checks
    ctx = context_for(trained, dataset)
    if first is None:
        raise SmilError(f"the {split or 'whole'} split has no samples with a valid view", path=dataset,
                        field="split")
    label = "evaluate" if views is None else f"evaluate ({views} view{'s' * (views != 1)})"
    bar = _Progress(_item_count(trained, dataset, split), label, progress)

    def chained() -> Iterable[dict[str, torch.Tensor]]:
        yield first
        yield from batches

    result = evaluate_batches(chained(), model_predictors(trained), ctx, views=views, overlays=overlays,
                              progress=bar)
    result.meta = {
        "model_path": str(trained.path),
        "dataset_path": str(dataset),
        "split": split or "all",
        "mode": trained.mode,
        "views": {"requested": views, "rig": len(trained.spec.rig) or 1},
    }
    return result


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------


def _mean(x: np.ndarray) -> float | None:
    v = np.asarray(x, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def _key(x: float) -> str:
    return f"{x:g}"


def _pck_dict(per_image: np.ndarray, thresholds: Iterable[float]) -> dict[str, float | None]:
    """Dataset PCK per threshold: the NaN-ignoring mean of per-image PCK ``(..., T)``."""
    flat = per_image.reshape(-1, per_image.shape[-1])
    return {_key(th): _mean(flat[:, i]) for i, th in enumerate(thresholds)}


def _masked(d: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep[..., None], d, np.nan)


def _per_camera(values: np.ndarray, camera: np.ndarray, names: list[str]) -> dict[str, Any]:
    """:func:`error_summary` of ``values (N, V, …)`` grouped by dataset view slot, for slots with values."""
    out = {}
    for c in np.unique(camera):
        s = error_summary(values[camera == c])
        if s["count"] or s["count_infinite"]:
            out[names[int(c)] if 0 <= c < len(names) else str(int(c))] = s
    return out


def summarise(errors: dict[str, np.ndarray], ctx: EvalContext, camera: np.ndarray) -> dict[str, Any]:
    """The metrics.json block of one predictor (layout in the module docstring)."""
    unit = ctx.world_unit_m
    e = errors
    names = ctx.camera_names
    k2 = {
        "px": error_summary(e["kp2d"]),
        "stored_px": error_summary(e["kp2d_stored"]),
        "pck_px": _pck_dict(pck(e["kp2d"], PIXEL_THRESHOLDS), PIXEL_THRESHOLDS),
        "pck_stored_px": _pck_dict(pck(e["kp2d_stored"], PIXEL_THRESHOLDS), PIXEL_THRESHOLDS),
        "pck_bbox": _pck_dict(pck(e["kp2d"], BBOX_ALPHAS, e["bbox"]), BBOX_ALPHAS),
        "pck_silhouette": None,
        "pck_silhouette_auc": None,
        "per_view": _per_camera(e["kp2d"], camera, names),
    }
    with_mask = ~np.isnan(e["sil_norm"])
    if with_mask.any():
        d = _masked(e["kp2d"], with_mask)
        norm = np.where(with_mask, e["sil_norm"], 0.0)
        k2["pck_silhouette"] = _pck_dict(pck(d, SILHOUETTE_ALPHAS, norm), SILHOUETTE_ALPHAS)
        k2["pck_silhouette_auc"] = _mean(pck_auc(d, norm))
    W, H = ctx.stored_size
    px_grid = np.linspace(0.0, CURVE_STORED_PX_FRACTION * max(W, H), CURVE_POINTS)
    curves: dict[str, Any] = {
        "pck_stored_px": _curve(pck(e["kp2d_stored"], px_grid), px_grid),
        "pck_bbox": _curve(pck(e["kp2d"], CURVE_BBOX_ALPHAS, e["bbox"]), CURVE_BBOX_ALPHAS),
        "pck_silhouette": None,
    }
    if with_mask.any():
        curves["pck_silhouette"] = _curve(pck(d, PCK_AUC_ALPHAS, norm), PCK_AUC_ALPHAS)
    block: dict[str, Any] = {
        "keypoints2d": k2,
        "reprojection": {
            "px": error_summary(e["reproj"]),
            "stored_px": error_summary(e["reproj_stored"]),
            "pck_px": _pck_dict(pck(e["reproj"], PIXEL_THRESHOLDS), PIXEL_THRESHOLDS),
            "per_view": _per_camera(e["reproj"], camera, names),
        },
        "keypoints3d": None,
        "mesh": None,
        "silhouette": None,
    }
    mp = _row_mean(e["joint3d"])
    if (~np.isnan(mp)).any():
        pa = _row_mean(e["pa_joint3d"])
        block["keypoints3d"] = {
            "mpjpe": error_summary(mp), "mpjpe_mm": error_summary(units_to_mm(mp, unit)),
            "pa_mpjpe": error_summary(pa), "pa_mpjpe_mm": error_summary(units_to_mm(pa, unit)),
        }
    if (~np.isnan(e["pa_mpvpe"])).any():
        block["mesh"] = {"pa_mpvpe": error_summary(e["pa_mpvpe"]),
                         "pa_mpvpe_mm": error_summary(units_to_mm(e["pa_mpvpe"], unit))}
    if (~np.isnan(e["iou"])).any():
        block["silhouette"] = {"iou": error_summary(e["iou"]), "per_view": _per_camera(e["iou"], camera, names)}
    trans_mm = units_to_mm(e["trans"], unit)
    per_view = {}
    for c in np.unique(camera):
        sel = camera == c
        if (~np.isnan(e["rot_deg"][sel])).any():
            per_view[names[int(c)]] = {"rotation_deg": error_summary(e["rot_deg"][sel]),
                                       "translation_mm": error_summary(trans_mm[sel]),
                                       "fov_deg": error_summary(e["fov_deg"][sel])}
    block["camera"] = {
        "rotation_deg": error_summary(e["rot_deg"]), "translation": error_summary(e["trans"]),
        "translation_mm": error_summary(trans_mm), "fov_deg": error_summary(e["fov_deg"]),
        "per_view": per_view,
    }
    block["curves"] = curves
    return {"headline": headline(block), **block}


def _curve(per_image: np.ndarray, thresholds: np.ndarray) -> dict[str, list]:
    """Dataset PCK (mean of per-image PCK) at every threshold: ``{thresholds, pck}``."""
    flat = per_image.reshape(-1, per_image.shape[-1])
    ok = ~np.isnan(flat[:, 0])  # an image without evaluated joints is NaN at every threshold
    values = flat[ok].mean(0) if ok.any() else np.full(flat.shape[-1], np.nan)
    return {"thresholds": [float(x) for x in thresholds], "pck": [float(v) for v in values]}


def _row_mean(x: np.ndarray) -> np.ndarray:
    """NaN-ignoring mean over the last axis (``inf`` propagates), NaN where nothing is left."""
    ok = ~np.isnan(x)
    n = ok.sum(-1)
    total = np.where(ok, x, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def headline(block: dict[str, Any]) -> dict[str, float | None]:
    """The flat numbers of a block: what a report aggregates across experiments."""
    k2, rp = block["keypoints2d"], block["reprojection"]
    out: dict[str, float | None] = {
        "keypoints2d_mean_px": k2["px"]["mean"],
        "keypoints2d_median_px": k2["px"]["median"],
        "keypoints2d_mean_stored_px": k2["stored_px"]["mean"],
        "keypoints2d_median_stored_px": k2["stored_px"]["median"],
    }
    out.update({f"pck_{k}px": v for k, v in k2["pck_px"].items()})
    out.update({f"pck_{k}px_stored": v for k, v in k2["pck_stored_px"].items()})
    out.update({f"pck_bbox_{k}": v for k, v in k2["pck_bbox"].items()})
    sil = k2["pck_silhouette"] or {_key(a): None for a in SILHOUETTE_ALPHAS}
    out.update({f"pck_silhouette_{k}": v for k, v in sil.items()})
    out["pck_silhouette_auc"] = k2["pck_silhouette_auc"]
    out["reprojection_mean_px"] = rp["px"]["mean"]
    out["reprojection_median_px"] = rp["px"]["median"]
    k3, mesh, sil_iou, cam = block["keypoints3d"], block["mesh"], block["silhouette"], block["camera"]
    out["mpjpe"] = k3["mpjpe"]["mean"] if k3 else None
    out["mpjpe_mm"] = k3["mpjpe_mm"]["mean"] if k3 else None
    out["pa_mpjpe"] = k3["pa_mpjpe"]["mean"] if k3 else None
    out["pa_mpjpe_mm"] = k3["pa_mpjpe_mm"]["mean"] if k3 else None
    out["pa_mpvpe"] = mesh["pa_mpvpe"]["mean"] if mesh else None
    out["pa_mpvpe_mm"] = mesh["pa_mpvpe_mm"]["mean"] if mesh else None
    out["silhouette_iou"] = sil_iou["iou"]["mean"] if sil_iou else None
    out["camera_rotation_deg"] = cam["rotation_deg"]["mean"]
    out["camera_translation"] = cam["translation"]["mean"]
    out["camera_translation_mm"] = cam["translation_mm"]["mean"]
    out["camera_fov_deg"] = cam["fov_deg"]["mean"]
    return out


def _ratios(model: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    out = {}
    for key in HEADLINE_ERRORS:
        m, b = model.get(key), baseline.get(key)
        out[key] = None if m is None or b is None or b <= 0 else float(m / b)
    return out


def _counts(ev: Evaluation) -> dict[str, int]:
    e = next(iter(ev.errors.values()))
    kp = ~np.isnan(e["kp2d"])
    return {
        "items": int(ev.index.size),
        "samples": int(np.unique(ev.index).size),
        "images": int(ev.seen.sum()),
        "keypoints": int(kp.sum()),
        "samples_with_keypoints3d": int(np.unique(ev.index[(~np.isnan(e["joint3d"])).any(-1)]).size),
        "samples_with_gt_mesh": int(np.unique(ev.index[ev.has_gt_mesh]).size),
        "images_with_mask": int(ev.has_mask.sum()),
    }


def _clean(x: Any) -> Any:
    """JSON-ready: numpy scalars → Python, NaN/inf → None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def metrics_json(ev: Evaluation) -> dict[str, Any]:
    """The metrics.json document (layout in the module docstring)."""
    from smil import __version__

    ctx = ev.ctx
    blocks = {name: summarise(errs, ctx, ev.camera) for name, errs in ev.errors.items()}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "smil_version": __version__,
        **ev.meta,
        "image_size": ctx.image_size,
        "stored_image_size": list(ctx.stored_size),
        "world_unit_m": ctx.world_unit_m,
        "joint_names": ctx.joint_names,
        "camera_names": ctx.camera_names,
        "counts": _counts(ev),
        "thresholds": {
            "pixel": list(PIXEL_THRESHOLDS), "bbox_alpha": list(BBOX_ALPHAS),
            "silhouette_alpha": list(SILHOUETTE_ALPHAS),
            "auc_alpha": [float(PCK_AUC_ALPHAS[0]), float(PCK_AUC_ALPHAS[-1]), int(PCK_AUC_ALPHAS.size)],
        },
        **blocks,
    }
    if "model" in blocks and "baseline" in blocks:
        doc["ratio_to_baseline"] = _ratios(blocks["model"]["headline"], blocks["baseline"]["headline"])
    return _clean(doc)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def per_joint_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per joint: 2D error (px), PCK, reprojection, 3D and PA 3D error (mm), per predictor."""
    unit = ev.ctx.world_unit_m
    J = len(ev.ctx.joint_names)
    rows: list[dict[str, Any]] = [{"joint": name} for name in ev.ctx.joint_names]
    for name, e in ev.errors.items():
        d2 = e["kp2d"].reshape(-1, J)
        d2s = e["kp2d_stored"].reshape(-1, J)
        pck_px = pck_per_joint(d2, PIXEL_THRESHOLDS)
        pck_bb = pck_per_joint(e["kp2d"], BBOX_ALPHAS, e["bbox"])
        rp = e["reproj"].reshape(-1, J)
        d3 = units_to_mm(e["joint3d"], unit)
        pa = units_to_mm(e["pa_joint3d"], unit)
        for j, row in enumerate(rows):
            s2 = error_summary(d2[:, j])
            row[f"{name}_count_2d"] = s2["count"] + s2["count_infinite"]
            row[f"{name}_2d_mean_px"] = s2["mean"]
            row[f"{name}_2d_median_px"] = s2["median"]
            row[f"{name}_2d_mean_stored_px"] = error_summary(d2s[:, j])["mean"]
            for i, th in enumerate(PIXEL_THRESHOLDS):
                row[f"{name}_pck_{_key(th)}px"] = pck_px[i, j]
            for i, a in enumerate(BBOX_ALPHAS):
                row[f"{name}_pck_bbox_{_key(a)}"] = pck_bb[i, j]
            row[f"{name}_reprojection_mean_px"] = error_summary(rp[:, j])["mean"]
            row[f"{name}_3d_mean_mm"] = error_summary(d3[:, j])["mean"]
            row[f"{name}_pa_3d_mean_mm"] = error_summary(pa[:, j])["mean"]
    return rows


def per_sample_rows(ev: Evaluation, sample_ids: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per evaluated item view (valid views): errors of every predictor.

    Sample-level values (MPJPE, PA-MPJPE, PA-MPVPE) repeat on every view row of the sample.
    """
    unit = ev.ctx.world_unit_m
    names = ev.ctx.camera_names
    rows = []
    per = {}
    for name, e in ev.errors.items():
        per[name] = {
            "2d_mean_px": _row_mean(e["kp2d"]),
            "2d_mean_stored_px": _row_mean(e["kp2d_stored"]),
            "pck_bbox_0.1": pck(e["kp2d"], [0.1], e["bbox"])[..., 0],
            "reprojection_mean_px": _row_mean(e["reproj"]),
            "mpjpe_mm": units_to_mm(_row_mean(e["joint3d"]), unit),
            "pa_mpjpe_mm": units_to_mm(_row_mean(e["pa_joint3d"]), unit),
            "pa_mpvpe_mm": units_to_mm(e["pa_mpvpe"], unit),
            "iou": e["iou"],
            "rotation_deg": e["rot_deg"],
            "translation_mm": units_to_mm(e["trans"], unit),
            "fov_deg": e["fov_deg"],
        }
    N, V = ev.valid.shape
    for i in range(N):
        for v in range(V):
            if not ev.valid[i, v]:
                continue
            c = int(ev.camera[i, v])
            row: dict[str, Any] = {
                "index": int(ev.index[i]),
                "sample_id": "" if sample_ids is None else str(sample_ids[ev.index[i]]),
                "camera": names[c] if 0 <= c < len(names) else str(c),
                "seen": bool(ev.seen[i, v]),
                "has_mask": bool(ev.has_mask[i, v]),
            }
            for name, cols in per.items():
                for col, arr in cols.items():
                    row[f"{name}_{col}"] = arr[i] if arr.ndim == 1 else arr[i, v]
            rows.append(row)
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""  # not evaluated
        return "inf" if np.isinf(v) else f"{float(v):.6g}"  # inf: a keypoint behind a camera
    if v is None:
        return ""
    return v


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_evaluation(ev: Evaluation, out_dir: str | Path, dataset: str | Path) -> dict[str, Any]:
    """Write metrics.json, per_joint.csv, per_sample.csv and figures/ (atomically); return metrics.json."""
    from smil.data.store import open_dataset
    from smil.evaluate import figures as F

    out = Path(out_dir)
    doc = metrics_json(ev)
    with open_dataset(dataset) as reader:
        sample_ids = reader.sample_id
        write_text_atomic(out / "per_joint.csv", _csv_text(per_joint_rows(ev)))
        write_text_atomic(out / "per_sample.csv", _csv_text(per_sample_rows(ev, sample_ids)))
        fig_dir = out / "figures"
        _write_summary_figures(ev, doc, fig_dir)
        wanted = {f"overlay_{i:02d}.png" for i in range(len(ev.overlays))}
        for stale in fig_dir.glob("overlay_[0-9][0-9].png"):  # left by an earlier run with more overlays
            if stale.name not in wanted:
                stale.unlink()
        for i, rec in enumerate(ev.overlays):
            panels = _overlay_panels(ev.ctx, rec, reader)
            title = f"{sample_ids[rec['index']]}"
            F.save_figure(F.overlay_figure(panels, title=title), fig_dir / f"overlay_{i:02d}", formats=("png",),
                          dpi=200)
    write_json_atomic(out / "metrics.json", doc)
    return doc


def _write_summary_figures(ev: Evaluation, doc: dict[str, Any], fig_dir: Path) -> None:
    from smil.evaluate import figures as F

    ctx = ev.ctx
    pixel_curves, norm_curves = {}, {}
    sil = all(doc[name]["curves"]["pck_silhouette"] is not None for name in ev.errors)
    for name in ev.errors:
        c = doc[name]["curves"]
        pixel_curves[name] = _xy(c["pck_stored_px"])
        norm_curves[name] = _xy(c["pck_silhouette"] if sil else c["pck_bbox"])
    norm_label = "α (fraction of √mask area)" if sil else "α (fraction of keypoint box size)"
    W, H = ctx.stored_size
    F.save_figure(F.pck_curve_figure(pixel_curves, norm_curves, norm_label=norm_label,
                                     pixel_label=f"threshold (px, {W}×{H} stored image)"),
                  fig_dir / "pck_curve")
    unit = "px, stored image"
    err2d = {name: e["kp2d_stored"] for name, e in ev.errors.items()}
    err3d = {name: units_to_mm(e["joint3d"], ctx.world_unit_m) for name, e in ev.errors.items()}
    if not any((~np.isnan(v)).any() for v in err3d.values()):
        err3d = None
    F.save_figure(F.error_histogram_figure(err2d, err3d, px_unit=unit), fig_dir / "error_histogram")
    J = len(ctx.joint_names)
    per2d = {name: _joint_means(v.reshape(-1, J)) for name, v in err2d.items()}
    per3d = None if err3d is None else {name: _joint_means(v.reshape(-1, J)) for name, v in err3d.items()}
    F.save_figure(F.per_joint_error_figure(ctx.joint_names, per2d, per3d, px_unit=unit),
                  fig_dir / "per_joint_error")


def _xy(curve: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([np.nan if v is None else v for v in curve["pck"]], dtype=np.float64)
    return np.asarray(curve["thresholds"], dtype=np.float64), y


def _joint_means(d: np.ndarray) -> np.ndarray:
    """Per-joint mean over finite values, NaN for joints never evaluated."""
    ok = np.isfinite(d)
    n = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, d, 0.0).sum(0) / np.maximum(n, 1), np.nan)


def _overlay_panels(ctx: EvalContext, rec: dict[str, Any], reader: Any) -> list[Any]:
    """Stored images of a kept item's seen views, with GT and predicted keypoints and predicted silhouette."""
    from smil.evaluate.figures import OverlayPanel

    sample = reader.get_sample(rec["index"])
    W, H = ctx.stored_size
    panels = []
    for j, c in enumerate(rec["cameras"]):
        K = stored_intrinsics(rec["K"][j], ctx.image_size, ctx.stored_size)
        uv, _ = project_points(rec["joints"][None], K, rec["R"][j], rec["t"][j])
        sil = render_silhouette(rec["vertices"], ctx.faces, K, rec["R"][j], rec["t"][j], (W, H))
        panels.append(OverlayPanel(
            image=sample["images"][c],
            gt_keypoints=np.asarray(sample["keypoints2d"][c], dtype=np.float64),
            gt_visible=np.asarray(sample["visibility"][c]) > 0,
            pred_keypoints=uv[0],
            silhouette=sil,
            parents=list(ctx.parents),
            title=ctx.camera_names[c] if 0 <= c < len(ctx.camera_names) else str(c),
        ))
    return panels


# ---------------------------------------------------------------------------------------------
# views ablation
# ---------------------------------------------------------------------------------------------


def views_ablation(
    trained: Any,
    dataset: str | Path,
    *,
    split: str | None = "test",
    batch_size: int = 16,
    num_workers: int = 0,
    reuse: dict[int, Evaluation] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a multi-view model with the first ``K`` valid views, for every ``K`` in ``1..V``.

    Returns the views_ablation.json document: ``{format, format_version, model_path, dataset_path,
    split, rig, entries: [{views: K, counts, model: HEADLINE, baseline: HEADLINE}]}``. 3D errors and the
    reprojection through the ground-truth cameras use every valid view's ground truth whatever ``K``, so
    the entries are comparable. ``reuse`` maps ``K`` to an evaluation already made.
    """
    if trained.mode != "multiview":
        raise SmilError(f"--views-ablation needs a multi-view model; {trained.path} is a single-view model",
                        field="views_ablation")
    reuse = reuse or {}
    entries = []
    for k in range(1, len(trained.spec.rig) + 1):
        ev = reuse.get(k) or evaluate(trained, dataset, split=split, batch_size=batch_size, views=k,
                                      num_workers=num_workers, progress=progress)
        blocks = {name: summarise(errs, ev.ctx, ev.camera) for name, errs in ev.errors.items()}
        entries.append({"views": k, "counts": _counts(ev),
                        **{name: b["headline"] for name, b in blocks.items()}})
    return _clean({
        "format": ABLATION_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_path": str(trained.path),
        "dataset_path": str(dataset),
        "split": split or "all",
        "rig": list(trained.spec.rig),
        "entries": entries,
    })
