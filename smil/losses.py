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
from typing import Any

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
    "heatmap_keypoints2d",
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
    return camera_intrinsics(fov, image_size, pred.get("principal_point")), rot6d_to_matrix(cam_rot), cam_trans


def body_forward(body_model, pred: dict[str, torch.Tensor]):
    """Pose the body model with predicted (6D) parameters."""
    return body_model.forward_params(pred, rotation_format="6d")


# ------------------------------------------------------------------------------------------------
# The terms. Predictions may carry leading dimensions before the batch (the IEF iterations,
# ``(I, B, …)``); each term then returns one value per leading index, ``(I,)``, and a plain scalar
# for ``(B, …)`` predictions. Labels and masks are ``(B, …)`` and broadcast over the iterations.


def keypoints2d_loss(
    joints: torch.Tensor, K, R, t, target: torch.Tensor, visibility: torch.Tensor, jw: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Mean squared pixel error over visible joints, in units of the image size.

    ``joints (…,B,J,3)`` are projected through every view's camera ``(…,B,V,…)``; projections are
    never clamped, so a joint behind the camera still has a gradient that pulls it back.
    """
    proj = project(joints.unsqueeze(-3), K, R, t)  # (…,B,V,J,2)
    w = visibility * jw
    err = ((proj - target) / image_size).pow(2).sum(-1)
    return (err * w).flatten(-3).sum(-1) / w.sum().clamp_min(1.0)


def heatmap_keypoints2d_loss(
    keypoints: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor, jw: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Mean absolute pixel error (x and y summed) of the heatmaps' 2D keypoints ``(B,V,J,2)`` over
    visible joints of valid views, in units of the image size (L1: soft-argmax learns best with it)."""
    w = visibility * jw
    err = ((keypoints - target) / image_size).abs().sum(-1)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def keypoints3d_loss(joints: torch.Tensor, target: torch.Tensor, jw: torch.Tensor, unit: float) -> torch.Tensor:
    """Mean squared 3D error over known joints (NaN = unknown), in units of ``unit`` (body size)."""
    valid = torch.isfinite(target).all(-1).to(joints.dtype) * jw
    diff = (joints - torch.nan_to_num(target)) / unit
    return (diff.pow(2).sum(-1) * valid).flatten(-2).sum(-1) / valid.sum().clamp_min(1.0)


def params_loss(
    pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], image_size: int, unit: float,
    rotations: dict[str, torch.Tensor] | None = None, cache: dict | None = None,
) -> torch.Tensor:
    """Body and camera parameters against ground truth; rotations compared as matrices.

    Body parameters are masked per sample by their has-flags; cameras are supervised in every valid
    view (``K, R, t`` are always known). Translations are measured in units of ``unit``.
    ``rotations``: the predicted ``global_rot``, ``joint_rot`` and ``cam_rot`` as matrices when the
    caller has them already (``cam_rot`` with a view axis); otherwise converted here. ``cache``: a
    dict that keeps the device constants built here between calls.
    """
    if rotations is None:
        rotations = {k: rot6d_to_matrix(pred[k]) for k in ("global_rot", "joint_rot", "cam_rot") if k in pred}
        if "cam_rot" in rotations and pred["fov"].dim() == 2:
            rotations["cam_rot"] = rotations["cam_rot"].unsqueeze(-3)
    names = [n for n in PARAM_TERMS if f"params/{n}" in batch]
    total = _body_params_error(pred, batch, names, rotations, unit, cache) if names else 0.0
    return total + _camera_params_error(pred, batch, rotations["cam_rot"], image_size, unit)


def _body_params_error(
    pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], names: list[str],
    rotations: dict[str, torch.Tensor], unit: float, cache: dict | None,
) -> torch.Tensor:
    """Σ over ``names`` of the has-masked batch mean of each sample's mean squared error.

    All parameters go through one subtraction: predictions and labels are flattened side by side,
    and each name's per-sample mean is one column of a product with a block-averaging matrix.
    """
    dtype = pred["betas"].dtype
    lead = pred["betas"].dim() - 2  # leading dims before the batch (IEF iterations)
    rot_names = [n for n in names if n in ("global_rot", "joint_rot")]
    gt_rot = {}
    if rot_names:  # one conversion for every ground-truth rotation
        aa = [batch[f"params/{n}"].reshape(batch[f"params/{n}"].shape[0], -1, 3) for n in rot_names]
        mats = axis_angle_to_matrix(torch.cat(aa, 1).to(dtype)).flatten(-2)
        gt_rot = dict(zip(rot_names, mats.split([a.shape[1] for a in aa], 1)))
    preds, labels, sizes = [], [], []
    for name in names:
        p = rotations[name] if name in gt_rot else pred[name]
        g = gt_rot[name] if name in gt_rot else batch[f"params/{name}"].to(dtype)
        g = g.reshape(g.shape[0], -1)
        preds.append(p.reshape(*p.shape[: lead + 1], -1))
        labels.append(g)
        sizes.append(g.shape[1])
    sq = (torch.cat(preds, -1) - torch.cat(labels, -1)).pow(2)  # (…,B,D)
    key = ("block_means", tuple(names), tuple(sizes), unit, dtype, sq.device)
    means = None if cache is None else cache.get(key)
    if means is None:
        means = _block_means(names, sizes, unit, dtype, sq.device)
        if cache is not None:
            cache[key] = means
    per_sample = sq @ means  # (…,B,n)
    has = torch.stack([batch[f"has_{n}"] for n in names], -1).to(dtype)  # (B,n)
    return ((per_sample * has).sum(-2) / has.sum(0).clamp_min(1.0)).sum(-1)


def _block_means(names: list[str], sizes: list[int], unit: float, dtype, device) -> torch.Tensor:
    """``(D, n)``: column ``k`` averages block ``k`` of a flat ``(…, D)`` row (translations / unit²).
    Made on ``device`` at once: in a compiled graph it is a constant there (built on the host and
    copied, it would split a CUDA-graphed loss around the host's work, or keep it out of CUDA graphs)."""
    return torch.block_diag(*(
        torch.full((size, 1), (1.0 / unit**2 if name == "trans" else 1.0) / size, dtype=dtype, device=device)
        for name, size in zip(names, sizes)
    ))


def _camera_params_error(
    pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], R: torch.Tensor, image_size: int, unit: float
) -> torch.Tensor:
    """Camera rotation, translation (/ unit) and field of view against the labels, over valid views."""
    t = pred["cam_trans"]
    if pred["fov"].dim() == 2:  # single-view predictions: add the view axis
        t = t.unsqueeze(-2)
    vm = batch["view_mask"].to(t.dtype)
    gt_fov = 2.0 * torch.atan(image_size / (2.0 * batch["K"][..., 1, 1]))
    cam = (
        (R - batch["R"]).pow(2).sum((-1, -2))
        + ((t - batch["t"]) / unit).pow(2).sum(-1)
        + (predicted_fov(pred) - gt_fov).pow(2)
    )
    return (cam * vm).flatten(-2).sum(-1) / vm.sum().clamp_min(1.0)


def predicted_fov(pred: dict[str, torch.Tensor]) -> torch.Tensor:
    """Predicted vertical field of view ``(…,B,V)``."""
    fov = pred["fov"][..., 0]
    return fov.unsqueeze(-1) if pred["fov"].dim() == 2 else fov


def silhouette_loss(
    vertices: torch.Tensor, faces: torch.Tensor, K, R, t, masks: torch.Tensor, has_mask: torch.Tensor,
    render_size: int, sigma: float, compile_options: dict[str, Any] | None = None,
    backface_culling: bool = False,
) -> torch.Tensor:
    """Mean squared difference between the soft silhouette and the ground-truth mask, per view.

    ``vertices (B,N,3)``; ``K, R, t (B,V,…)`` cameras at the render size (:func:`render_intrinsics`);
    ``masks (B,V,H,W)``; ``has_mask (B,V)``: the views compared. Every view is drawn in one call,
    those without a mask with no faces and no gradient, so nothing depends on how many there are
    (no host-device synchronisation); the result is the mean over the compared views' pixels.
    ``compile_options`` and ``backface_culling``: the renderer's (:func:`smil.render.soft.soft_silhouette`).
    """
    from smil.render.soft import soft_silhouette

    B, V = has_mask.shape
    verts = vertices.unsqueeze(1).expand(B, V, *vertices.shape[1:]).reshape(B * V, *vertices.shape[1:])
    draw = has_mask.reshape(B * V).bool()
    sil = soft_silhouette(
        verts, faces, K.reshape(-1, 3, 3), R.reshape(-1, 3, 3), t.reshape(-1, 3), (render_size, render_size),
        sigma=sigma, image_mask=draw, check_faces=False, compile_options=compile_options,
        backface_culling=backface_culling,
    )
    target = masks.reshape(B * V, *masks.shape[2:]).to(sil.dtype)
    if target.shape[-1] != render_size:
        target = torch.nn.functional.interpolate(
            target.unsqueeze(1), size=(render_size, render_size), mode="area"
        ).squeeze(1)
    w = draw.to(sil.dtype)
    per_view = (sil - target).pow(2).flatten(1).sum(-1)
    return (per_view * w).sum() / (w.sum().clamp_min(1.0) * (render_size * render_size))


def render_intrinsics(K: torch.Tensor, image_size: int, render_size: int) -> torch.Tensor:
    """``K`` of the network input image rescaled to a ``render_size`` image of the same view
    (pixel centres stay pixel centres: ``c' = (c + ½)·s − ½``)."""
    s = render_size / image_size
    rows = K.new_tensor([[s], [s], [1.0]])
    shift = K.new_tensor([[0.0, 0.0, 0.5 * s - 0.5], [0.0, 0.0, 0.5 * s - 0.5], [0.0, 0.0, 0.0]])
    return K * rows + shift


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


def joint_angle_prior(pred: dict[str, torch.Tensor], R: torch.Tensor | None = None) -> torch.Tensor:
    """Penalises joint rotations far from rest (squared Frobenius distance to identity).

    ``R``: the joint rotations as matrices when the caller has them already.
    """
    R = rot6d_to_matrix(pred["joint_rot"]) if R is None else R
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return (R - eye).pow(2).sum((-1, -2)).flatten(-2).mean(-1)


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
    silhouette_backface_culling: bool = False


#: Terms evaluated on the final IEF estimate only (not on the intermediate ones).
FINAL_ONLY = ("silhouette", "triangulation")
CAMERA_KEYS = ("fov", "cam_rot", "cam_trans")
BODY_KEYS = ("betas", "trans", "scale", "log_beta_scales", "betas_trans")


def stack_iterations(pred: dict[str, Any], intermediates: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Predictions as ``(I, B, …)``: the intermediate IEF estimates first, the final one last.

    An intermediate estimate without a key uses the final prediction's (multi-view cameras are not
    refined by IEF); cameras get a view axis, ``(I, B, V, …)``, also for single-view predictions.
    """
    single_view = pred["fov"].dim() == 2
    out: dict[str, torch.Tensor] = {}
    for key, final in pred.items():
        if key == "iterations":
            continue
        values = [it.get(key, final) for it in intermediates]
        if all(v is final for v in values):  # the same tensor for every iteration: a view
            x = final.unsqueeze(0).expand(len(values) + 1, *final.shape)
        else:
            x = torch.stack([*values, final])
        out[key] = x.unsqueeze(-2) if single_view and key in CAMERA_KEYS else x
    return out


class SmilLoss(torch.nn.Module):
    """All loss terms for one batch, weighted for the current epoch.

    The IEF estimates are evaluated together: every prediction is stacked along a leading iteration
    axis, the body model runs once on ``I·B`` samples, and each term gives one value per iteration,
    weighted 1 for the final estimate and ``ief_intermediate_weight`` for the intermediate ones
    (silhouette and triangulation: final estimate only). The returned terms are the final estimate's.
    """

    def __init__(self, body_model, settings: LossSettings) -> None:
        super().__init__()
        self.body_model = body_model
        self.s = settings
        self.register_buffer("jw", settings.joint_weights.clone())
        self._constants: dict[tuple, torch.Tensor] = {}  # device tensors built once, by key
        self._evaluate = self.evaluate  # or its compiled form (compile_terms)
        self._render_options: dict[str, Any] | None = None  # the renderer's chunks compiled

    def compile_terms(self, **options: Any) -> None:
        """Evaluate the terms through ``torch.compile(**options)``: the stacking of the IEF estimates,
        the body model and every term in fused kernels. The weighting stays outside, so changing
        weights never recompiles; a curriculum stage that switches a term on or off compiles once
        more.

        The silhouette renderer, planned on the host and run between graphs, evaluates its chunks
        through ``torch.compile`` too: with dynamic shapes and without CUDA graphs, whatever ``mode``
        (``docs/rendering.md``)."""
        self._evaluate = torch.compile(self.evaluate, **options)
        self._render_options = {k: v for k, v in options.items() if k != "mode"}

    def render_compile_options(self) -> dict[str, Any] | None:
        """What the silhouette renderer's chunks are compiled with: ``None`` (eager) without
        ``compile_terms``."""
        return self._render_options

    def forward(
        self, pred: dict[str, Any], batch: dict[str, torch.Tensor], epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = curriculum_weights(self.s.weights, self.s.curriculum, epoch)
        active = [k for k in LOSS_TERMS if weights.get(k, 0) != 0]
        iterations = pred.get("iterations") or []
        use_inter = self.s.ief_intermediate_weight > 0 and len(iterations) > 1
        per_iter, final = self._evaluate(pred, list(iterations[:-1]) if use_inter else [], batch, active)
        parts: list[torch.Tensor] = []
        values: dict[str, torch.Tensor] = {}
        if per_iter:
            table = torch.stack(list(per_iter.values()))  # (T, I): one row per term
            parts.append((table * self._coefficient_table(list(per_iter), weights, table)).sum())
            values.update(zip(per_iter, table[:, -1].detach().unbind(0)))
        for k, v in final.items():
            parts.append(weights[k] * v)
            values[k] = v.detach()
        total = sum(parts[1:], parts[0]) if parts else pred["betas"].new_zeros(())
        return total, {k: values[k] for k in LOSS_TERMS if k in values}

    def _coefficient_table(self, names: list[str], weights: dict[str, float], values: torch.Tensor) -> torch.Tensor:
        """``(T, I)`` weights: term weight × (1 for the final estimate, the IEF weight before it).
        Cached per device and weights, so the step copies nothing from the host."""
        n_iter = values.shape[1]
        key = ("coefficients", tuple((k, weights[k]) for k in names), n_iter, values.dtype, values.device)
        table = self._constants.get(key)
        if table is None:
            per_iter = [self.s.ief_intermediate_weight] * (n_iter - 1) + [1.0]
            table = torch.tensor([[weights[k] * c for c in per_iter] for k in names], dtype=values.dtype)
            if len(self._constants) > 32:  # a few per curriculum stage; never grows without bound
                self._constants.clear()
            table = self._constants[key] = table.to(values.device)
        return table

    def _cameras(self, p: dict[str, torch.Tensor], R: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
        """``K, R, t`` ``(I,B,V,…)`` for an image of ``size`` pixels: the network's or the renderer's
        (the same view, scaled about pixel centres; see :func:`render_intrinsics`)."""
        from smil.models.regressor import camera_intrinsics

        principal = p.get("principal_point")
        if principal is not None and size != self.s.image_size:
            principal = (principal + 0.5) * (size / self.s.image_size) - 0.5
        return camera_intrinsics(p["fov"], size, principal), R, p["cam_trans"]

    def evaluate(
        self, pred: dict[str, Any], intermediates: list[dict[str, torch.Tensor]], batch: dict[str, torch.Tensor],
        active: list[str],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`terms` of the prediction stacked with the ``intermediates`` IEF estimates before it."""
        return self.terms(stack_iterations(pred, intermediates), batch, active)

    def terms(
        self, p: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], active: list[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-iteration terms ``(I,)`` and final-estimate terms (scalars) of stacked predictions."""
        n_iter, B = p["betas"].shape[:2]
        J = self.body_model.num_joints
        rot = self._rotations(p)
        per_iter: dict[str, torch.Tensor] = {}
        final: dict[str, torch.Tensor] = {}
        view_mask = batch["view_mask"].bool()
        body = None
        if set(active) & {"keypoints2d", "keypoints3d", "silhouette", "triangulation"}:
            flat = {k: p[k].flatten(0, 1) for k in BODY_KEYS if k in p}
            body = self.body_model(
                betas=flat.get("betas"), global_rot=rot["global_rot"].flatten(0, 1),
                joint_rot=rot["joint_rot"].flatten(0, 1), trans=flat.get("trans"), scale=flat.get("scale"),
                joint_log_scales=flat.get("log_beta_scales"), joint_trans=flat.get("betas_trans"),
                rotation_format="matrix",
            )
            joints = body.joints.view(n_iter, B, J, 3)
        if set(active) & {"keypoints2d", "triangulation"}:
            cams = self._cameras(p, rot["cam_rot"], self.s.image_size)
        if "keypoints2d" in active:
            vis = batch["visibility"] * view_mask.unsqueeze(-1)
            per_iter["keypoints2d"] = keypoints2d_loss(
                joints, *cams, batch["keypoints2d"], vis, self.jw, self.s.image_size
            )
        if "keypoints3d" in active:
            per_iter["keypoints3d"] = keypoints3d_loss(joints, batch["keypoints3d"], self.jw, self.s.body_unit)
        if "params" in active:
            # compiled, the constants are part of the graph: no cache (its filling would recompile)
            cache = None if torch.compiler.is_compiling() else self._constants
            per_iter["params"] = params_loss(p, batch, self.s.image_size, self.s.body_unit, rot, cache)
        if "silhouette" in active and "mask" in batch:
            K, R, t = self._cameras(p, rot["cam_rot"], self.s.silhouette_size)
            verts = body.vertices.view(n_iter, B, *body.vertices.shape[1:])[-1]
            final["silhouette"] = silhouette_loss(
                verts, self.body_model.faces, K[-1], R[-1], t[-1], batch["mask"],
                batch["has_mask"].bool() & view_mask, self.s.silhouette_size, self.s.silhouette_sigma,
                self.render_compile_options(), self.s.silhouette_backface_culling,
            )
        if "triangulation" in active and view_mask.shape[1] > 1:
            final["triangulation"] = triangulation_loss(
                joints[-1], *(c[-1] for c in cams), batch["keypoints2d"], batch["visibility"], view_mask,
                self.jw, self.s.body_unit,
            )
        if "heatmap_keypoints2d" in active:
            if "heatmap_keypoints2d" not in p:
                raise ConfigError("loss term heatmap_keypoints2d needs a model with keypoint_heatmaps",
                                  field="loss.weights.heatmap_keypoints2d")
            final["heatmap_keypoints2d"] = heatmap_keypoints2d_loss(
                p["heatmap_keypoints2d"][-1], batch["keypoints2d"], batch["visibility"] * view_mask.unsqueeze(-1),
                self.jw, self.s.image_size,
            )
        if "joint_angle_prior" in active:
            per_iter["joint_angle_prior"] = joint_angle_prior(p, rot["joint_rot"])
        if "limb_scale_prior" in active:
            per_iter["limb_scale_prior"] = p["log_beta_scales"].pow(2).flatten(-3).mean(-1)
        if "limb_trans_prior" in active:
            per_iter["limb_trans_prior"] = p["betas_trans"].pow(2).flatten(-3).mean(-1)
        return per_iter, final

    @staticmethod
    def _rotations(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every predicted rotation as a matrix, from one 6D conversion: ``global_rot (I,B,3,3)``,
        ``joint_rot (I,B,J-1,3,3)``, ``cam_rot (I,B,V,3,3)``."""
        parts = [p["global_rot"].unsqueeze(-2), p["joint_rot"], p["cam_rot"]]
        R = rot6d_to_matrix(torch.cat(parts, -2))
        g, j, c = R.split([1, parts[1].shape[-2], parts[2].shape[-2]], -3)
        return {"global_rot": g.squeeze(-3), "joint_rot": j, "cam_rot": c}
