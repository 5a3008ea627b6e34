"""The training set's mean parameters: the IEF starting point and the mean-pose baseline.

Body parameters are averaged where the data has them (rotations as rotations: the chordal mean
projected back onto SO(3)). Without ground-truth body parameters the global scale is estimated from
the ratio of the data's 3D keypoint extent to the body model's rest extent, and the translation from
the keypoints' centroid. Cameras are averaged per camera slot (multi-view) or over all views
(single-view); the field of view does not depend on the image size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from smil.data import schema as S
from smil.geometry.rotations import average_rotations, axis_angle_to_matrix, matrix_to_rot6d


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
    K = f[S.K][idx].astype(np.float64)
    R = f[S.R][idx].astype(np.float64)
    t = f[S.T][idx].astype(np.float64)
    H = reader.image_size[1]
    fov = 2.0 * np.arctan(H / (2.0 * K[..., 1, 1]))  # (N, V)
    if multiview:
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
    else:
        out["fov"] = torch.tensor([float(np.mean(fov[valid]))])
        out["cam_rot"] = matrix_to_rot6d(average_rotations(torch.as_tensor(R[valid]), dim=-3)).float()
        out["cam_trans"] = torch.as_tensor(t[valid].mean(0), dtype=torch.float32)
    return out
