"""Single-view targets in the frame of the camera that took the image.

A single image fixes the animal's pose *relative to the camera*, not its orientation in a world frame
chosen by a calibration (random cameras, or any camera of a rig, see the same body from anywhere). So
single-view models predict, and are trained and evaluated, in a per-view frame, as HMR-style methods
do: the body is placed in front of a canonical camera ``R = I, t = 0`` whose principal point is the
image centre (the network's camera, :func:`smil.models.regressor.camera_intrinsics`).

The canonical camera is the data's camera rotated about its centre until its optical axis passes
through the image centre (a crop around the animal is rarely centred on the original principal point,
and no image shows where that point was). With ``d`` the ray through the image centre and ``R_v`` the
smallest rotation taking ``d`` to ``+z``, the view frame is ``x_v = R' x + t'`` with ``R' = R_v R``,
``t' = R_v t``; its intrinsics keep the focal lengths and move the principal point to the centre.
The pixel labels are kept as they are: projecting through the rotated camera differs from the stored
one by the homography ``K_v R_v K⁻¹``, which is a shift of the image up to second order in the angle
between ``d`` and the original axis (well under a pixel for the crops of the default data).

Body parameters follow exactly: the root rotation becomes ``R' R_root``, and since the root rotates
about the root joint ``p`` (the posed root joint does not depend on any rotation),
``trans' = trans + (R' p + t') − p``.
"""

from __future__ import annotations

import torch

from smil.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, skew

#: Ground-truth parameters that place the root joint (the rest depend on no frame).
_PLACEMENT = ("betas", "scale", "betas_trans", "log_beta_scales")


def centring_rotation(K: torch.Tensor, image_size: int) -> torch.Tensor:
    """``R_v (…,3,3)``: the smallest rotation taking the ray through the image centre to ``+z``.

    ``K`` is a pinhole's (upper triangular). Nothing is read back from the device: the centre is
    made there, and a triangular solve has no error code to check (``linalg.solve`` reads one)."""
    c = (image_size - 1) / 2.0
    centre = K.new_full((*K.shape[:-2], 3, 1), c)
    centre[..., 2, 0] = 1.0
    d = torch.linalg.solve_triangular(K, centre, upper=True).squeeze(-1)
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    z = torch.zeros_like(d)
    z[..., 2] = 1.0
    v = torch.linalg.cross(d, z, dim=-1)  # axis · sin(angle)
    cos = d[..., 2]
    vx = skew(v)
    eye = torch.eye(3, dtype=K.dtype, device=K.device).expand_as(vx)
    # Rodrigues for unit vectors a → b: I + [v]× + [v]×² / (1 + a·b); a·b > 0 for a ray in front
    return eye + vx + (vx @ vx) / (1.0 + cos)[..., None, None]


def centred_intrinsics(K: torch.Tensor, image_size: int) -> torch.Tensor:
    """``K`` with its principal point moved to the image centre (focal lengths kept, no skew)."""
    c = (image_size - 1) / 2.0
    out = torch.zeros_like(K)
    out[..., 0, 0] = K[..., 0, 0]
    out[..., 1, 1] = K[..., 1, 1]
    out[..., 0, 2] = c
    out[..., 1, 2] = c
    out[..., 2, 2] = 1.0
    return out


def root_positions(body_model, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The posed root joint ``(B,3)`` for ground-truth parameters (rotations play no part in it)."""
    B = params["trans"].shape[0]
    ref = next(b for b in body_model.buffers() if b.is_floating_point())
    device, dtype = ref.device, ref.dtype
    given = {k: params[k].to(device=device, dtype=dtype) for k in (*_PLACEMENT, "trans") if k in params}
    given["global_rot"] = torch.zeros(B, 3, device=device, dtype=dtype)
    with torch.no_grad():
        joints = body_model.forward_params(given, rotation_format="axis_angle").joints
    out = joints[:, 0]
    return out.reshape(B, 3).to(device=params["trans"].device, dtype=params["trans"].dtype)


def to_view_frame(batch: dict[str, torch.Tensor], body_model, image_size: int) -> dict[str, torch.Tensor]:
    """A single-view batch (``V = 1``) with its targets in the view frame (see the module docstring).

    Changes ``K`` (centred), ``R`` (identity), ``t`` (zero), ``keypoints3d`` and, where present,
    ``params/global_rot`` and ``params/trans``; every other key is passed through. Missing 3D
    keypoints stay NaN.
    """
    K, R, t = batch["K"], batch["R"], batch["t"]
    if K.shape[1] != 1:
        raise ValueError(f"to_view_frame expects single-view batches (V = 1), got V = {K.shape[1]}")
    work = torch.float64
    K64, R64, t64 = K[:, 0].to(work), R[:, 0].to(work), t[:, 0].to(work)
    Rv = centring_rotation(K64, image_size)
    Rn = Rv @ R64  # world → view frame
    tn = (Rv @ t64.unsqueeze(-1)).squeeze(-1)
    out = dict(batch)
    out["K"] = centred_intrinsics(K64, image_size).to(K.dtype).unsqueeze(1)
    out["R"] = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R).clone()
    out["t"] = torch.zeros_like(t)
    kp = batch["keypoints3d"].to(work)
    out["keypoints3d"] = (kp @ Rn.transpose(-1, -2) + tn.unsqueeze(1)).to(batch["keypoints3d"].dtype)
    if "params/global_rot" in batch:
        g = batch["params/global_rot"]
        out["params/global_rot"] = matrix_to_axis_angle(Rn @ axis_angle_to_matrix(g.to(work))).to(g.dtype)
    if "params/trans" in batch:
        trans = batch["params/trans"]
        params = {k[len("params/"):]: v for k, v in batch.items() if k.startswith("params/")}
        p = root_positions(body_model, params).to(work)
        moved = (Rn @ p.unsqueeze(-1)).squeeze(-1) + tn
        out["params/trans"] = (trans.to(work) + moved - p).to(trans.dtype)
    return out
