"""Every loss term, shared by the single- and multi-view trainers."""

from __future__ import annotations

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
