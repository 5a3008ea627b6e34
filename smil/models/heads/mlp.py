"""MLP head: fully connected layers with dropout on [pooled feature, current estimate] (HMR-style IEF)."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        param_dim: int,
        hidden_dim: int = 256,
        depth: int = 2,
        dropout: float = 0.1,
        iterations: int = 3,
        **_: object,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = feature_dim + param_dim
        for _ in range(max(depth, 1)):
            layers += [nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(hidden_dim, param_dim)
        nn.init.zeros_(self.out.bias)
        nn.init.normal_(self.out.weight, std=1e-3)
        self.iterations = iterations

    def forward(
        self, tokens: torch.Tensor, pooled: torch.Tensor, init: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Return the estimate after every iteration (the last is the prediction)."""
        x = init.expand(pooled.shape[0], -1)
        outs = []
        for _ in range(self.iterations):
            x = x + self.out(self.mlp(torch.cat([pooled, x], dim=-1)))
            outs.append(x)
        return outs
