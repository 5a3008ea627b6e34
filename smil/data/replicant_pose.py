"""Ground-truth body parameters from replicAnt renders: ``shape betas`` and verified joint rotations.

* **Betas** are stored when their count equals the body model's (a different count means the renders
  used another model).
* **Rotations**: a keypoint's ``globalRotation`` (Unreal world ``FQuat``) becomes ``G_j = F · M_j · F``
  in the right-handed world (:func:`smil.data.unreal.quaternions_to_world_matrices`). This assumes that
  the body model's own frame is Unreal's component frame with y flipped and that the rendered bones
  have identity rest orientations (both hold for SMIL models exported by SMILify). The root's
  axis-angle is ``G_root`` and joint ``j``'s is ``G_parent(j)ᵀ · G_j`` with the *model's* parents.
  Because those assumptions cannot be read from the files, every sample is verified
  (:class:`PoseVerifier`) and only verified rotations are stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from smil.data import unreal
from smil.data.manifest import SampleRecord

__all__ = ["BodyTargets", "PoseVerifier", "attach_betas", "attach_rotations", "read_body_targets"]

POSE_RESIDUAL_TOLERANCE = 5e-3  # RMS joint residual after a similarity fit, relative to the keypoints' extent
POSE_ROTATION_TOLERANCE_DEG = 0.5  # the similarity fit's rotation (a wrong global rotation shows here)
_CHUNK = 256


class BodyTargets(NamedTuple):
    """What the ingest needs from a body-model file."""

    path: Path
    joint_names: list[str]
    parents: np.ndarray  # (J,), parents[0] = -1
    num_betas: int
    sha256: str


def read_body_targets(path: str | Path) -> BodyTargets:
    """Joint names, parents, betas count and SHA-256 of a SMIL model file (:mod:`smil.body.io`)."""
    from smil.body.io import load_model, model_sha256, parents_from_kintree

    path = Path(path)
    model = load_model(path)
    shapedirs = np.asarray(model["shapedirs"])
    return BodyTargets(
        path=path,
        joint_names=[str(n) for n in model["J_names"]],
        parents=np.asarray(parents_from_kintree(np.asarray(model["kintree_table"])), dtype=np.int64),
        num_betas=int(shapedirs.shape[-1]) if shapedirs.ndim == 3 else 0,
        sha256=model_sha256(path),
    )


def attach_betas(items: Sequence[tuple[SampleRecord, np.ndarray | None]], num_betas: int) -> tuple[int, str]:
    """Store each sample's betas when the count matches; return ``(stored, what happened)``."""
    counts = sorted({len(b) for _, b in items if b is not None})
    stored = 0
    for sample, betas in items:
        if betas is not None and len(betas) == num_betas:
            sample.params = {**(sample.params or {}), "betas": np.asarray(betas, dtype=np.float64)}
            stored += 1
    if not counts:
        return 0, "not stored: the files have no 'shape betas'"
    if stored == len(items):
        return stored, f"stored for every sample ({num_betas} betas)"
    return stored, (
        f"stored for {stored} of {len(items)} samples: the files give {counts} shape betas, the body model "
        f"has {num_betas} (a different count means the renders used another model)"
    )


def attach_rotations(
    items: Sequence[tuple[SampleRecord, np.ndarray | None]], body: BodyTargets, total: int
) -> tuple[int, str]:
    """Store verified rotations (and, when verified too, ``scale`` and ``trans``).

    ``items`` pairs each sample with its mapped ``globalRotation`` quaternions ``(J, 4)`` in Unreal's
    ``(x, y, z, w)`` order (``None`` when the file has none or a joint is unmapped); ``total`` is the
    number of samples in the ingest. Returns ``(stored, what happened)``.
    """
    todo = [(s, q) for s, q in items if q is not None and s.keypoints3d is not None]
    if not todo:
        return 0, "not stored: the files have no globalRotation for every body-model joint"
    verifier = PoseVerifier(body)
    stored, residuals = 0, []
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        results = verifier.verify(
            np.stack([q for _, q in chunk]),
            np.stack([s.keypoints3d for s, _ in chunk]),
            [None if s.params is None else s.params.get("betas") for s, _ in chunk],
        )
        for (sample, _), (params, residual) in zip(chunk, results, strict=True):
            residuals.append(residual)
            if params is not None:
                sample.params = {**(sample.params or {}), **params}
                stored += 1
    if stored == total:
        return stored, "stored for every sample (verified: the posed body model reproduces 3DPos)"
    return stored, (
        f"stored for {stored} of {total} samples. Left out where the body model posed with the converted "
        f"globalRotation does not reproduce the 3DPos keypoints up to a translation and scale (median RMS "
        f"residual {float(np.median(residuals)):.3g} of the keypoints' extent, tolerance "
        f"{POSE_RESIDUAL_TOLERANCE}), which means the renders used another body model, or where a joint has "
        "no globalRotation"
    )


class PoseVerifier:
    """Convert ``globalRotation`` quaternions to axis-angle body parameters and verify them.

    Per sample, the model posed with the converted rotations (betas as stored, else zero) must
    reproduce the ``3DPos`` keypoints after the best similarity transform, with an RMS residual
    ≤ :data:`POSE_RESIDUAL_TOLERANCE` of the keypoints' extent and a similarity rotation
    ≤ :data:`POSE_ROTATION_TOLERANCE_DEG` (so the global rotation is right too). The similarity's scale
    and translation are returned as ``scale`` and ``trans`` only when the model posed with them puts
    its joints on the keypoints directly. Rotations of leaf joints move no joint; they are covered by
    the same conversion, not checked one by one.
    """

    def __init__(self, body: BodyTargets):
        import torch

        from smil.body.model import SMILModel

        self.body = body
        self.model = SMILModel.from_file(body.path, dtype=torch.float64)

    def convert(self, quats_xyzw: np.ndarray) -> np.ndarray:
        """``(N, J, 4)`` Unreal world quaternions → ``(N, J, 3)`` axis-angle (root global, others local)."""
        import torch

        from smil.geometry.rotations import matrix_to_axis_angle

        G = torch.as_tensor(unreal.quaternions_to_world_matrices(quats_xyzw))
        local = G.clone()
        par = torch.as_tensor(self.body.parents[1:])
        local[:, 1:] = G[:, par].transpose(-1, -2) @ G[:, 1:]
        return matrix_to_axis_angle(local).numpy()

    def verify(
        self, quats_xyzw: np.ndarray, keypoints3d: np.ndarray, betas: Sequence[np.ndarray | None]
    ) -> list[tuple[dict[str, np.ndarray] | None, float]]:
        """Per sample: ``(params or None, RMS residual / extent)``."""
        import torch

        from smil.geometry.procrustes import similarity_procrustes

        aa = self.convert(quats_xyzw)
        nb = self.model.num_betas
        B = np.stack([np.zeros(nb) if b is None else np.asarray(b) for b in betas])
        dtype = torch.float64
        t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        Y = torch.as_tensor(keypoints3d, dtype=torch.float64)
        with torch.no_grad():
            joints = self.model(t(B), t(aa[:, 0]), t(aa[:, 1:])).joints.to(torch.float64)
            aligned, s, Rs, ts = similarity_procrustes(joints, Y)
            extent = (Y.amax(1) - Y.amin(1)).norm(dim=-1).clamp_min(1e-12)
            rms = ((aligned - Y) ** 2).sum(-1).mean(-1).sqrt() / extent
            cos = ((Rs.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
            angle = torch.rad2deg(torch.arccos(cos))
            direct = self.model(t(B), t(aa[:, 0]), t(aa[:, 1:]), trans=t(ts), scale=t(s)).joints.to(
                torch.float64
            )
            direct_rms = ((direct - Y) ** 2).sum(-1).mean(-1).sqrt() / extent
        out: list[tuple[dict[str, np.ndarray] | None, float]] = []
        for k in range(len(aa)):
            if not (rms[k] <= POSE_RESIDUAL_TOLERANCE and angle[k] <= POSE_ROTATION_TOLERANCE_DEG):
                out.append((None, float(rms[k])))
                continue
            params = {"global_rot": aa[k, 0], "joint_rot": aa[k, 1:]}
            if direct_rms[k] <= POSE_RESIDUAL_TOLERANCE:
                params["scale"] = np.asarray(float(s[k]))
                params["trans"] = ts[k].numpy()
            out.append((params, float(rms[k])))
        return out
