"""The training set's mean parameters: the IEF starting point and the mean-pose baseline.

Body parameters are averaged where the data has them (rotations as rotations: the chordal mean
projected back onto SO(3)). Without ground-truth body parameters the global scale is estimated from
the ratio of the data's 3D keypoint extent to the body model's rest extent, and the translation from
the keypoints' centroid. Multi-view: cameras are averaged per camera slot. Single-view models work
in the view frame (:mod:`smil.train.view_frame`): the root rotation and translation are averaged over
every valid (sample, view) pair after moving them into that view's frame, and the camera is the
canonical one (identity rotation, zero translation) with the mean field of view. The field of view
does not depend on the image size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from smil.data import schema as S
from smil.geometry.rotations import average_rotations, axis_angle_to_matrix, matrix_to_rot6d
from smil.models.components.param_layout import IDENTITY_6D


def _mean_rotation_6d(aa: np.ndarray) -> torch.Tensor:
    """Mean of axis-angle rotations (..., N, 3) over N → 6D (..., 6)."""
    R = axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64))
    return matrix_to_rot6d(average_rotations(R, dim=-3)).float()


def _extent(points: np.ndarray) -> np.ndarray:
    """Per-sample size of a keypoint set (N, J, 3): the diagonal of its bounding box."""
    lo = np.nanmin(points, axis=1)
    hi = np.nanmax(points, axis=1)
    return np.linalg.norm(hi - lo, axis=-1)


def body_unit(reader, indices: np.ndarray) -> float:
    """A typical body size in world units (median keypoint extent), for normalising 3D losses."""
    kp = reader.h5[S.KEYPOINTS3D][np.sort(indices)] if len(indices) else np.zeros((0, 1, 3))
    if kp.size == 0 or not np.isfinite(kp).any():
        return 1.0
    with np.errstate(invalid="ignore"):
        ext = _extent(kp)
    ext = ext[np.isfinite(ext) & (ext > 0)]
    return float(np.median(ext)) if len(ext) else 1.0


def mean_parameters(reader, indices: np.ndarray, body_model, multiview: bool) -> dict[str, torch.Tensor]:
    """Mean body and camera parameters over the given samples (see the module docstring)."""
    f = reader.h5
    idx = np.sort(np.asarray(indices))
    out: dict[str, torch.Tensor] = {}
    for name in reader.param_names:
        has = reader.has_params[name][idx]
        if not has.any():
            continue
        values = f[S.param_path(name)][idx[has]].astype(np.float64)
        if name == "global_rot":
            out[name] = _mean_rotation_6d(values)
        elif name == "joint_rot":
            out[name] = _mean_rotation_6d(np.swapaxes(values, 0, 1))
        elif name == "scale":
            out["log_scale"] = torch.tensor([math.log(max(float(np.mean(values)), 1e-8))])
        else:
            out[name] = torch.as_tensor(values.mean(0), dtype=torch.float32)
    kp3 = f[S.KEYPOINTS3D][idx].astype(np.float64)
    if np.isfinite(kp3).any():
        if "trans" not in out:
            out["trans"] = torch.as_tensor(np.nanmean(kp3.reshape(-1, 3), axis=0), dtype=torch.float32)
        if "log_scale" not in out:
            rest = body_model.rest_joints.detach().cpu().double().numpy()[None]
            ratio = body_unit(reader, idx) / max(float(_extent(rest)[0]), 1e-8)
            out["log_scale"] = torch.tensor([math.log(max(ratio, 1e-8))])
    valid = reader.view_valid[idx]
    if not multiview:
        out.update(view_frame_placement(reader, idx, body_model))
        return out
    K = f[S.K][idx].astype(np.float64)
    R = f[S.R][idx].astype(np.float64)
    t = f[S.T][idx].astype(np.float64)
    H = reader.image_size[1]
    fov = 2.0 * np.arctan(H / (2.0 * K[..., 1, 1]))  # (N, V)
    fovs, rots, trans = [], [], []
    for v in range(valid.shape[1]):
        m = valid[:, v]
        if not m.any():
            m = np.ones_like(m)
        fovs.append([float(np.mean(fov[m, v]))])
        rots.append(matrix_to_rot6d(average_rotations(torch.as_tensor(R[m, v]), dim=-3)).float())
        trans.append(t[m, v].mean(0))
    out["fov"] = torch.tensor(fovs, dtype=torch.float32)
    out["cam_rot"] = torch.stack(rots)
    out["cam_trans"] = torch.as_tensor(np.stack(trans), dtype=torch.float32)
    return out


def view_frame_placement(reader, idx: np.ndarray, body_model, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Mean root rotation and translation in the view frame over every valid (sample, view) pair,
    the canonical camera and the mean field of view (single-view models)."""
    from smil.train.view_frame import to_view_frame

    f = reader.h5
    valid = reader.view_valid[idx]
    rows, views = np.nonzero(valid)
    size = int(reader.image_size[1])
    names = [n for n in reader.param_names if n in ("global_rot", "trans", "betas", "scale", "betas_trans",
                                                     "log_beta_scales")]
    columns = {n: f[S.param_path(n)][:][idx] for n in names}
    has = {n: reader.has_params[n][idx] for n in names}
    K_all, R_all, t_all = f[S.K][:][idx], f[S.R][:][idx], f[S.T][:][idx]
    kp_all = f[S.KEYPOINTS3D][:][idx]
    rots, trans, centroids, fovs = [], [], [], []
    for start in range(0, len(rows), chunk):
        r, v = rows[start:start + chunk], views[start:start + chunk]
        batch = {
            "K": torch.as_tensor(K_all[r, v][:, None], dtype=torch.float64),
            "R": torch.as_tensor(R_all[r, v][:, None], dtype=torch.float64),
            "t": torch.as_tensor(t_all[r, v][:, None], dtype=torch.float64),
            "keypoints3d": torch.as_tensor(kp_all[r], dtype=torch.float64),
        }
        batch.update({f"params/{n}": torch.as_tensor(columns[n][r], dtype=torch.float64) for n in names})
        moved = to_view_frame(batch, body_model, size)
        fovs.append(2.0 * np.arctan(size / (2.0 * K_all[r, v][:, 1, 1].astype(np.float64))))
        if "global_rot" in names:
            rots.append(moved["params/global_rot"].numpy()[has["global_rot"][r]])
        if "trans" in names:
            trans.append(moved["params/trans"].numpy()[has["trans"][r]])
        centroids.append(moved["keypoints3d"].numpy())
    out: dict[str, torch.Tensor] = {}
    if rots and sum(len(x) for x in rots):
        out["global_rot"] = _mean_rotation_6d(np.concatenate(rots))
    if trans and sum(len(x) for x in trans):
        out["trans"] = torch.as_tensor(np.concatenate(trans).mean(0), dtype=torch.float32)
    else:
        kp = np.concatenate(centroids).reshape(-1, 3) if centroids else np.zeros((0, 3))
        if np.isfinite(kp).any():
            out["trans"] = torch.as_tensor(np.nanmean(kp, axis=0), dtype=torch.float32)
    fov = np.concatenate(fovs) if fovs else np.array([math.radians(40.0)])
    out["fov"] = torch.tensor([float(np.mean(fov))])
    out["cam_rot"] = matrix_to_rot6d(torch.eye(3, dtype=torch.float64)).float()
    out["cam_trans"] = torch.zeros(3)
    return out


def mean_body_joints(body_model, mean: dict[str, torch.Tensor]) -> torch.Tensor:
    """Joints ``(J, 3)`` of the body at the mean parameters with identity root rotation and zero
    translation (the rest skeleton that :class:`smil.models.components.triangulated_keypoints.
    TriangulatedKeypoints` aligns to triangulated points)."""
    ref = body_model.rest_joints
    params = {k: v.to(ref)[None] for k, v in mean.items() if k not in ("trans", "log_scale")}
    params["global_rot"] = torch.tensor([IDENTITY_6D]).to(ref)
    if "log_scale" in mean:
        params["scale"] = torch.exp(mean["log_scale"].to(ref))
    with torch.no_grad():
        return body_model.forward_params(params, rotation_format="6d").joints[0]
