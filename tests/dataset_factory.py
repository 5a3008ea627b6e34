"""Small HDF5 datasets with exact, known geometry, written through the real store."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from smil.data.images import encode_jpeg, encode_png_mask
from smil.data.store import DatasetWriter, StoredSample


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3)) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world→camera (R, t) for a camera at ``eye`` looking at ``target`` with world +z up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(x) < 1e-6:
        x = np.array([1.0, 0.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def project_np(X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    c = X @ R.T + t
    uv = c @ K.T
    return uv[:, :2] / uv[:, 2:3]


def make_dataset(
    path: Path,
    num_samples: int = 6,
    num_views: int = 1,
    num_joints: int = 5,
    size: int = 96,
    invalid: dict[int, list[int]] | None = None,
    seed: int = 0,
    params: bool = True,
) -> Path:
    """Random 3D keypoints seen by ``num_views`` cameras; each keypoint is drawn as a coloured dot."""
    rng = np.random.default_rng(seed)
    f = size * 1.2
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    cams = [look_at(np.array([4 * np.cos(a), 4 * np.sin(a), 2.0])) for a in np.linspace(0, 2 * np.pi, num_views, endpoint=False)]
    names = [f"j{i}" for i in range(num_joints)]
    writer = DatasetWriter(
        path, joint_names=names, camera_names=[f"cam{v}" for v in range(num_views)], image_size=(size, size),
        world_unit_m=0.01, source_kind="synthetic",
    )
    with writer:
        for n in range(num_samples):
            X = rng.normal(scale=0.4, size=(num_joints, 3))
            images, masks, kps, vis, valid = [], [], [], [], []
            for v, (R, t) in enumerate(cams):
                ok = v not in (invalid or {}).get(n, [])
                uv = project_np(X, K, R, t)
                img = np.full((size, size, 3), 40, np.uint8)
                mask = np.zeros((size, size), np.uint8)
                for j, (x, y) in enumerate(uv):
                    cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 0, 0) if j == 0 else (0, 200, 0), -1)
                    cv2.circle(mask, (int(round(x)), int(round(y))), 3, 255, -1)
                images.append(encode_jpeg(img, 95) if ok else b"")
                masks.append(encode_png_mask(mask) if ok else b"")
                kps.append(uv)
                vis.append(np.ones(num_joints))
                valid.append(ok)
            writer.append(
                StoredSample(
                    sample_id=f"s{n}", group=f"g{n}", images=images, masks=masks, view_valid=np.array(valid),
                    K=np.stack([K] * num_views), R=np.stack([c[0] for c in cams]), t=np.stack([c[1] for c in cams]),
                    keypoints2d=np.stack(kps), visibility=np.stack(vis), keypoints3d=X,
                    params={"betas": rng.normal(size=3), "trans": X.mean(0)} if params else {},
                )
            )
        split = np.array([n % 3 for n in range(num_samples)], dtype=np.uint8)
        split[: max(num_samples - 2, 1)] = 0
        writer.finish(split, split_seed=seed)
    return path
