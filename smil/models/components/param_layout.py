"""The flat parameter vector a head regresses, and how it splits into named outputs.

Rotations are 6D (first two columns of the matrix) and start at the identity ``[1,0,0,0,1,0]``.
``log_scale`` is the log of the global scale; ``fov`` is the vertical field of view in radians.
Initial values can be set from data (the training set's mean parameters), so iteration 0 of the
iterative error feedback starts at the mean pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

BODY_BLOCKS = ("global_rot", "joint_rot", "betas", "trans", "log_scale", "log_beta_scales", "betas_trans")
CAMERA_BLOCKS = ("fov", "cam_rot", "cam_trans")


@dataclass(frozen=True)
class Block:
    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class ParamLayout:
    """Named blocks of a flat vector, with their initial values."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for b in blocks:
            self.offsets[b.name] = (start, start + b.size)
            start += b.size
        self.size = start

    @classmethod
    def body(cls, num_joints: int, num_betas: int) -> "ParamLayout":
        return cls(
            [
                Block("global_rot", (6,)),
                Block("joint_rot", (num_joints - 1, 6)),
                Block("betas", (num_betas,)),
                Block("trans", (3,)),
                Block("log_scale", (1,)),
                Block("log_beta_scales", (num_joints, 3)),
                Block("betas_trans", (num_joints, 3)),
            ]
        )

    @classmethod
    def camera(cls) -> "ParamLayout":
        return cls([Block("fov", (1,)), Block("cam_rot", (6,)), Block("cam_trans", (3,))])

    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def default_init(self) -> torch.Tensor:
        """Identity rotations, zero elsewhere, a 30° field of view and a camera 10 units away."""
        x = torch.zeros(self.size)
        for b in self.blocks:
            lo, hi = self.offsets[b.name]
            if b.name in ("global_rot", "joint_rot", "cam_rot"):
                x[lo:hi] = torch.tensor(IDENTITY_6D).repeat(b.size // 6)
            elif b.name == "fov":
                x[lo:hi] = 0.5236
            elif b.name == "cam_trans":
                x[lo:hi] = torch.tensor([0.0, 0.0, 10.0])
        return x

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat ``(..., size)`` → named blocks of shape ``(..., *block.shape)``."""
        lead = x.shape[:-1]
        return {b.name: x[..., slice(*self.offsets[b.name])].reshape(*lead, *b.shape) for b in self.blocks}

    def join(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """Named blocks → flat vector (inverse of :meth:`split`)."""
        first = parts[self.blocks[0].name]
        lead = first.shape[: first.dim() - len(self.blocks[0].shape)]
        return torch.cat([parts[b.name].reshape(*lead, b.size) for b in self.blocks], dim=-1)
