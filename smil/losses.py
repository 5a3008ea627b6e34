"""Every loss term, shared by the single- and multi-view trainers.

Both modes go through the same code: a single-view batch is a multi-view batch with ``V = 1``.
Predictions come from a regressor (:mod:`smil.models.regressor`); the batch follows the torch
datasets' contract (:mod:`smil.data.datasets`):

- ``keypoints2d (B,V,J,2)`` pixels in the network input image, ``visibility (B,V,J)``;
- ``keypoints3d (B,J,3)`` world units, NaN = missing;
- ``K, R, t`` ground-truth cameras ``(B,V,…)``; ``view_mask (B,V)``;
- ``mask (B,V,H,W)`` and ``has_mask (B,V)`` when silhouettes are available;
- ``params/<name>`` and ``has_<name>`` for ground-truth body parameters (axis-angle rotations).

Label availability is always a mask, so datasets with different labels mix in one batch. Each term is
zero at the ground truth and positive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smil.errors import ConfigError
from smil.geometry.camera import project, projection_matrix
from smil.geometry.rotations import axis_angle_to_matrix, rot6d_to_matrix
from smil.geometry.triangulation import triangulate_dlt

#: The loss terms a config may weight (``loss.weights``, ``loss.curriculum``).
LOSS_TERMS = (
    "keypoints2d",
    "keypoints3d",
    "params",
    "silhouette",
    "triangulation",
    "joint_angle_prior",
    "limb_scale_prior",
    "limb_trans_prior",
)

#: Ground-truth parameters compared by the ``params`` term; rotations are compared as matrices.
PARAM_TERMS = ("global_rot", "joint_rot", "betas", "trans", "scale", "log_beta_scales", "betas_trans")


def curriculum_weights(
    weights: dict[str, float], curriculum: dict[int, dict[str, float]], epoch: int
) -> dict[str, float]:
    """Loss weights at ``epoch``: the defaults, replaced term by term by every stage that started."""
    out = dict(weights)
    for start in sorted(curriculum):
        if epoch >= start:
            out.update(curriculum[start])
    return out


def joint_weights(
    joint_names: list[str], importance: dict[str, float], ignored: list[str]
) -> torch.Tensor:
    """Per-joint weights for keypoint losses; unknown names are errors."""
    index = {n: i for i, n in enumerate(joint_names)}
    for name in list(importance) + list(ignored):
        if name not in index:
            raise ConfigError(
                f"unknown joint '{name}'; the body model's joints are: {', '.join(joint_names)}",
                field="loss.joint_importance" if name in importance else "loss.ignored_joints",
            )
    w = torch.ones(len(joint_names))
    for name, value in importance.items():
        w[index[name]] = float(value)
    for name in ignored:
        w[index[name]] = 0.0
    return w


def predicted_cameras(pred: dict[str, torch.Tensor], image_size: int) -> tuple[torch.Tensor, ...]:
    """Predicted ``K, R, t`` as ``(B,V,…)`` (single-view predictions get ``V = 1``)."""
    from smil.models.regressor import camera_intrinsics

    fov, cam_rot, cam_trans = pred["fov"], pred["cam_rot"], pred["cam_trans"]
    if fov.dim() == 2:
        fov, cam_rot, cam_trans = fov.unsqueeze(1), cam_rot.unsqueeze(1), cam_trans.unsqueeze(1)
    return camera_intrinsics(fov, image_size), rot6d_to_matrix(cam_rot), cam_trans


def body_forward(body_model, pred: dict[str, torch.Tensor]):
    """Pose the body model with predicted (6D) parameters."""
    return body_model.forward_params(pred, rotation_format="6d")


def keypoints2d_loss(
    joints: torch.Tensor, K, R, t, target: torch.Tensor, visibility: torch.Tensor, jw: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Mean squared pixel error over visible joints, in units of the image size.

    ``joints (B,J,3)`` are projected through every view's camera ``(B,V,…)``; projections are never
    clamped, so a joint behind the camera still has a gradient that pulls it back.
    """
    proj = project(joints.unsqueeze(1), K, R, t)  # (B,V,J,2)
    w = visibility * jw
    err = ((proj - target) / image_size).pow(2).sum(-1)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def keypoints3d_loss(joints: torch.Tensor, target: torch.Tensor, jw: torch.Tensor, unit: float) -> torch.Tensor:
    """Mean squared 3D error over known joints (NaN = unknown), in units of ``unit`` (body size)."""
    valid = torch.isfinite(target).all(-1).to(joints.dtype) * jw
    diff = (joints - torch.nan_to_num(target)) / unit
    return (diff.pow(2).sum(-1) * valid).sum() / valid.sum().clamp_min(1.0)


def params_loss(
    pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], image_size: int, unit: float
) -> torch.Tensor:
    """Body and camera parameters against ground truth; rotations compared as matrices.

    Body parameters are masked per sample by their has-flags; cameras are supervised in every valid
    view (``K, R, t`` are always known). Translations are measured in units of ``unit``.
    """
    total = pred["betas"].new_zeros(())
    for name in PARAM_TERMS:
        key = f"params/{name}"
        if key not in batch:
            continue
        has = batch[f"has_{name}"].to(total.dtype)
        if name in ("global_rot", "joint_rot"):
            p = rot6d_to_matrix(pred[name])
            g = axis_angle_to_matrix(batch[key].to(p.dtype))
        else:
            p, g = pred[name], batch[key].to(pred[name].dtype)
            if name == "trans":
                p, g = p / unit, g / unit
        per_sample = (p - g).pow(2).reshape(p.shape[0], -1).mean(-1)
        total = total + (per_sample * has).sum() / has.sum().clamp_min(1.0)
    K, R, t = predicted_cameras(pred, image_size)
    vm = batch["view_mask"].to(total.dtype)
    gt_fov = 2.0 * torch.atan(image_size / (2.0 * batch["K"][..., 1, 1]))
    cam = (
        (R - batch["R"]).pow(2).sum((-1, -2))
        + ((t - batch["t"]) / unit).pow(2).sum(-1)
        + (predicted_fov(pred) - gt_fov).pow(2)
    )
    return total + (cam * vm).sum() / vm.sum().clamp_min(1.0)


def predicted_fov(pred: dict[str, torch.Tensor]) -> torch.Tensor:
    """Predicted vertical field of view ``(B,V)``."""
    fov = pred["fov"][..., 0]
    return fov.unsqueeze(1) if fov.dim() == 1 else fov


def silhouette_loss(
    vertices: torch.Tensor, faces: torch.Tensor, K, R, t, masks: torch.Tensor, has_mask: torch.Tensor,
    image_size: int, render_size: int, sigma: float,
) -> torch.Tensor:
    """Mean squared difference between the soft silhouette and the ground-truth mask, per view."""
    from smil.render.soft import soft_silhouette

    B, V = has_mask.shape
    sel = has_mask.bool()
    if not bool(sel.any()):
        return vertices.new_zeros(())
    s = render_size / image_size
    Ks = K.clone()
    Ks[..., :2, :] = Ks[..., :2, :] * s
    Ks[..., 0, 2] = (K[..., 0, 2] + 0.5) * s - 0.5
    Ks[..., 1, 2] = (K[..., 1, 2] + 0.5) * s - 0.5
    verts = vertices.unsqueeze(1).expand(B, V, *vertices.shape[1:])[sel]
    sil = soft_silhouette(verts, faces, Ks[sel], R[sel], t[sel], (render_size, render_size), sigma=sigma)
    target = masks[sel].to(sil.dtype)
    if target.shape[-1] != render_size:
        target = torch.nn.functional.interpolate(
            target.unsqueeze(1), size=(render_size, render_size), mode="area"
        ).squeeze(1)
    return (sil - target).pow(2).mean()


def triangulation_loss(
    joints: torch.Tensor, K, R, t, keypoints2d: torch.Tensor, visibility: torch.Tensor, view_mask: torch.Tensor,
    jw: torch.Tensor, unit: float,
) -> torch.Tensor:
    """DLT of the ground-truth 2D keypoints through the *predicted* cameras vs the predicted 3D joints.

    Gradients reach the camera heads through the triangulation; joints seen by fewer than two views
    are left out.
    """
    P = projection_matrix(K, R, t)  # (B,V,3,4)
    X = triangulate_dlt(keypoints2d, P, weights=visibility, view_mask=view_mask)  # (B,J,3)
    seen = ((visibility > 0) & view_mask.unsqueeze(-1)).sum(1) >= 2
    valid = (seen & torch.isfinite(X).all(-1)).to(joints.dtype) * jw
    diff = (torch.nan_to_num(X) - joints) / unit
    return (diff.pow(2).sum(-1) * valid).sum() / valid.sum().clamp_min(1.0)


def joint_angle_prior(pred: dict[str, torch.Tensor]) -> torch.Tensor:
    """Penalises joint rotations far from rest (squared Frobenius distance to identity)."""
    R = rot6d_to_matrix(pred["joint_rot"])
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return (R - eye).pow(2).sum((-1, -2)).mean()


@dataclass
class LossSettings:
    weights: dict[str, float]
    curriculum: dict[int, dict[str, float]]
    ief_intermediate_weight: float
    joint_weights: torch.Tensor
    image_size: int
    body_unit: float  # a typical body size in world units: normalises 3D errors
    silhouette_size: int = 64
    silhouette_sigma: float = 1.0


class SmilLoss(torch.nn.Module):
    """All loss terms for one batch, weighted for the current epoch."""

    def __init__(self, body_model, settings: LossSettings) -> None:
        super().__init__()
        self.body_model = body_model
        self.s = settings
        self.register_buffer("jw", settings.joint_weights.clone())

    def forward(
        self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = curriculum_weights(self.s.weights, self.s.curriculum, epoch)
        terms = self.terms(pred, batch, weights)
        total = sum(weights[k] * v for k, v in terms.items())
        iterations = pred.get("iterations") or []
        if self.s.ief_intermediate_weight > 0 and len(iterations) > 1:
            for inter in iterations[:-1]:
                inter_pred = {**pred, **inter}
                inter_terms = self.terms(inter_pred, batch, weights, skip=("silhouette", "triangulation"))
                total = total + self.s.ief_intermediate_weight * sum(
                    weights[k] * v for k, v in inter_terms.items()
                )
        terms = {k: v.detach() for k, v in terms.items()}
        return total, terms

    def terms(
        self,
        pred: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        weights: dict[str, float],
        skip: tuple[str, ...] = (),
    ) -> dict[str, torch.Tensor]:
        active = {k for k, w in weights.items() if w != 0 and k not in skip}
        out: dict[str, torch.Tensor] = {}
        needs_body = active & {"keypoints2d", "keypoints3d", "silhouette", "triangulation"}
        body = body_forward(self.body_model, pred) if needs_body else None
        cams = predicted_cameras(pred, self.s.image_size) if active & {"keypoints2d", "silhouette", "triangulation"} else None
        view_mask = batch["view_mask"].bool()
        if "keypoints2d" in active:
            vis = batch["visibility"] * view_mask.unsqueeze(-1)
            out["keypoints2d"] = keypoints2d_loss(
                body.joints, *cams, batch["keypoints2d"], vis, self.jw, self.s.image_size
            )
        if "keypoints3d" in active:
            out["keypoints3d"] = keypoints3d_loss(body.joints, batch["keypoints3d"], self.jw, self.s.body_unit)
        if "params" in active:
            out["params"] = params_loss(pred, batch, self.s.image_size, self.s.body_unit)
        if "silhouette" in active and "mask" in batch:
            has = batch["has_mask"].bool() & view_mask
            out["silhouette"] = silhouette_loss(
                body.vertices, self.body_model.faces, *cams, batch["mask"], has,
                self.s.image_size, self.s.silhouette_size, self.s.silhouette_sigma,
            )
        if "triangulation" in active and view_mask.shape[1] > 1:
            out["triangulation"] = triangulation_loss(
                body.joints, *cams, batch["keypoints2d"], batch["visibility"], view_mask, self.jw, self.s.body_unit
            )
        if "joint_angle_prior" in active:
            out["joint_angle_prior"] = joint_angle_prior(pred)
        if "limb_scale_prior" in active:
            out["limb_scale_prior"] = pred["log_beta_scales"].pow(2).mean()
        if "limb_trans_prior" in active:
            out["limb_trans_prior"] = pred["betas_trans"].pow(2).mean()
        return out
