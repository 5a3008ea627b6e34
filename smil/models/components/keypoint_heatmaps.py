"""2D keypoints from heatmaps (soft-argmax), fed to the parameter head.

A regressor that must read the animal's heading from a pooled feature learns it slowly from random
initialisation: one global vector has to encode where the head and the abdomen are. A heatmap per joint
over a finer feature map localises each joint with local evidence, and the expected position under the
heatmap's spatial softmax (soft-argmax, "integral regression") is differentiable, so it is trained
directly against the labelled 2D keypoints. The head then receives the joints' image positions (an
embedding of their normalised coordinates, added to the pooled feature), from which the body's heading
and placement are simple geometry.
"""

from __future__ import annotations

import torch
from torch import nn


class KeypointHeatmaps(nn.Module):
    """Feature map ``(B, C, h, w)`` at ``stride`` → keypoints ``(B, J, 2)`` in network-image pixels
    (pixel centres at integer coordinates, as everywhere in smil) and an embedding ``(B, feature_dim)``."""

    def __init__(self, map_dim: int, num_joints: int, feature_dim: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.logits = nn.Conv2d(map_dim, num_joints, kernel_size=1)
        self.embed = nn.Sequential(
            nn.Linear(2 * num_joints, feature_dim), nn.GELU(), nn.Linear(feature_dim, feature_dim)
        )

    def forward(self, fmap: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, h, w = fmap.shape
        prob = self.logits(fmap).float().flatten(2).softmax(-1).view(B, self.num_joints, h, w)
        # cell i covers pixels [i·s, (i+1)·s) measured from the image's edge; its centre in smil's
        # pixel-centre coordinates is (i + 0.5)·s − 0.5
        xs = (torch.arange(w, device=fmap.device, dtype=prob.dtype) + 0.5) * (image_size / w) - 0.5
        ys = (torch.arange(h, device=fmap.device, dtype=prob.dtype) + 0.5) * (image_size / h) - 0.5
        keypoints = torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)
        centred = (keypoints - (image_size - 1) / 2.0) * (2.0 / image_size)  # about [-1, 1]
        return keypoints, self.embed(centred.flatten(1).to(fmap.dtype))
