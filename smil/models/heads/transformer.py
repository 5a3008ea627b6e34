"""Transformer-decoder head with iterative error feedback.

At every iteration the current estimate is encoded into the query token, the query cross-attends over
the image's spatial tokens (all valid views' tokens for multi-view, with a padding mask), and a linear
layer predicts a correction that is added to the estimate. Every intermediate estimate is returned so
the loss can supervise them.
"""

from __future__ import annotations

import torch
from torch import nn


class TransformerIEFHead(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        param_dim: int,
        hidden_dim: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        iterations: int = 3,
        **_: object,
    ) -> None:
        super().__init__()
        self.iterations = iterations
        self.token_proj = nn.Linear(feature_dim, hidden_dim)
        self.query_base = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.param_embed = nn.Linear(param_dim, hidden_dim)
        self.pooled_embed = nn.Linear(feature_dim, hidden_dim)
        layer = nn.TransformerDecoderLayer(
            d_model=hidden_dim,
            nhead=num_heads,
            dim_feedforward=hidden_dim * 2,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=max(depth, 1))
        self.norm = nn.LayerNorm(hidden_dim)
        self.out = nn.Linear(hidden_dim, param_dim)
        nn.init.zeros_(self.out.bias)
        nn.init.normal_(self.out.weight, std=1e-3)

    def forward(
        self, tokens: torch.Tensor, pooled: torch.Tensor, init: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``tokens`` (B,N,D); ``token_mask`` (B,N) True where a token is padding and must be ignored."""
        memory = self.token_proj(tokens)
        x = init.expand(tokens.shape[0], -1)
        context = self.pooled_embed(pooled).unsqueeze(1)
        outs = []
        for _ in range(self.iterations):
            query = self.query_base + context + self.param_embed(x).unsqueeze(1)
            h = self.decoder(query, memory, memory_key_padding_mask=token_mask)
            x = x + self.out(self.norm(h[:, 0]))
            outs.append(x)
        return outs
