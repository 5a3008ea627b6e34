"""3D keypoints triangulated from the views' heatmap keypoints, fed to the multi-view body head.

With a calibrated rig, the heatmap keypoints of two or more views fix each joint in world
coordinates by linear triangulation (:func:`smil.geometry.triangulation.triangulate_dlt`). The body
head then reads the joints' 3D layout — from which the world-frame heading, placement and size of
the animal are simple geometry — instead of inferring them from per-view image positions whose
meaning changes with every crop. The triangulated points are a measurement, not a trained path:
no gradient flows back through the triangulation into the heatmaps (their own loss trains them).

Features per sample: the points relative to their centroid divided by their RMS spread (shape and
orientation, about unit size), the centroid and the log spread relative to the rig (camera centres'
centroid and spread: independent of the world unit), and a found-flag per joint. A joint seen in
fewer than two valid views has zero features and flag 0.

Placement: once the trainer has set the mean body's rest skeleton (:meth:`set_template`), the
triangulated points also give each sample a closed-form root rotation, translation and size — the
similarity alignment (Umeyama) of that skeleton to the points found — which the regressor uses as the
starting estimate of its iterative error feedback instead of the training set's mean. The head then
corrects an estimate that already faces the right way, rather than learning the heading from scratch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smil.geometry.camera import camera_center, projection_matrix
from smil.geometry.procrustes import similarity_procrustes
from smil.geometry.triangulation import triangulate_dlt


class TriangulatedKeypoints(nn.Module):
    """Keypoints ``(B, V, J, 2)`` in network-image pixels, the view mask ``(B, V)`` and the cameras
    of those images (``K``, ``R``, ``t``) → world points ``(B, J, 3)`` (NaN where not found) and an
    embedding ``(B, feature_dim)``."""

    def __init__(self, num_joints: int, feature_dim: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.embed = nn.Sequential(
            nn.Linear(4 * num_joints + 4, feature_dim), nn.GELU(), nn.Linear(feature_dim, feature_dim)
        )
        # the mean body's joints with identity root rotation relative to its root joint, and the root
        # joint's position (the root rotation turns the body about it); unset until set_template
        self.register_buffer("template", torch.zeros(num_joints, 3))
        self.register_buffer("template_root", torch.zeros(3))
        self.register_buffer("has_template", torch.tensor(False))

    def set_template(self, joints: torch.Tensor, root: int = 0) -> None:
        """Joints ``(J, 3)`` of the body posed at the mean parameters with identity root rotation and
        zero translation; ``root`` is the root joint's index."""
        joints = joints.detach().to(self.template)
        self.template_root.copy_(joints[root])
        self.template.copy_(joints - joints[root])
        self.has_template.fill_(True)

    def forward(
        self, keypoints: torch.Tensor, view_mask: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Points ``(B, J, 3)``, embedding ``(B, feature_dim)`` and the placement (:meth:`place`; its
        ``ok`` is False everywhere until a template is set — decided on the device, never read back)."""
        with torch.no_grad():
            points, features = self.measure(keypoints, view_mask, K, R, t)
            placement = self.place(points)
        return points, self.embed(features.to(self.embed[0].weight.dtype)), placement

    def place(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Root rotation ``(B, 3, 3)``, body translation ``(B, 3)`` and log size factor ``(B,)`` that carry
        the template onto ``points (B, J, 3)``, and ``ok (B,)`` (a template is set, ≥ 3 joints found).

        Least squares over the finite points (:func:`smil.geometry.procrustes.similarity_procrustes`:
        rotation, translation and one scale factor); the rotation turns the body about its root joint
        and the global scale scales about the origin, as the body model poses it. The size factor is
        clamped to [1/2, 2] of the mean body's size.
        """
        A = self.template.to(points.dtype).expand_as(points)
        _, size, rot, _ = similarity_procrustes(A, points)
        log_size = size.clamp_min(1e-30).log().clamp(-math.log(2.0), math.log(2.0))
        found = torch.isfinite(points).all(-1)
        w = found.to(points.dtype)[..., None]
        n = w.sum(1).clamp_min(1.0)
        mean_points = (w * torch.nan_to_num(points)).sum(1) / n
        mean_template = (w * A).sum(1) / n
        # points ≈ k·(rot·A + root) + trans, A relative to the root joint (k: the clamped size)
        root = self.template_root.to(points.dtype)
        trans = mean_points - log_size.exp()[:, None] * ((rot @ mean_template[..., None])[..., 0] + root)
        ok = (found.sum(1) >= 3) & self.has_template
        return rot, trans, log_size, ok

    @staticmethod
    def measure(
        keypoints: torch.Tensor, view_mask: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World points ``(B, J, 3)`` and features ``(B, 4J + 4)`` (see the module docstring)."""
        K, R, t = K.float(), R.float(), t.float()
        view_mask = view_mask.bool()
        points = triangulate_dlt(keypoints.float(), projection_matrix(K, R, t), view_mask=view_mask)
        found = torch.isfinite(points).all(-1)  # (B, J)
        w = view_mask.float()
        n = w.sum(1).clamp_min(1.0)
        centres = camera_center(R, t)  # (B, V, 3); a padded view's camera may be anything, even NaN
        centres = torch.where(view_mask[..., None], centres, torch.zeros_like(centres))
        rig_c = (w[..., None] * centres).sum(1) / n[:, None]
        rig_s = ((w * (centres - rig_c[:, None]).pow(2).sum(-1)).sum(1) / n).sqrt()
        rig_s = torch.where(rig_s > 0, rig_s, torch.ones_like(rig_s))
        f = found.float()
        m = f.sum(1).clamp_min(1.0)
        safe = torch.where(found[..., None], points, torch.zeros_like(points))
        centroid = (f[..., None] * safe).sum(1) / m[:, None]  # (B, 3)
        spread = ((f * (safe - centroid[:, None]).pow(2).sum(-1)).sum(1) / m).sqrt()
        any_found = f.sum(1) > 1
        spread = torch.where(any_found & (spread > 0), spread, rig_s)
        shape = (safe - centroid[:, None]) / spread[:, None, None] * f[..., None]
        place = torch.where(any_found[:, None], (centroid - rig_c) / rig_s[:, None], torch.zeros_like(centroid))
        size = torch.where(any_found, (spread / rig_s).log(), torch.zeros_like(spread))
        features = torch.cat([shape.flatten(1), f, place, size[:, None]], dim=1)
        return points, features.clamp(-10.0, 10.0)
