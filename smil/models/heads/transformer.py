"""Transformer-decoder head with iterative error feedback.

At every iteration the current estimate is encoded into the query token, the query cross-attends over
the image's spatial tokens (all valid views' tokens for multi-view, with a padding mask), and a linear
layer predicts a correction that is added to the estimate. Every intermediate estimate is returned so
the loss can supervise them.

The layers are ``nn.TransformerDecoderLayer`` (pre-norm) and hold the parameters, but the head runs
them itself (:func:`_decode`), with the same result, in fewer operations: the image tokens do not
change between iterations, so each layer's cross-attention keys and values are projected once per
forward instead of once per iteration; and self-attention over the single query token is the value
projection followed by the output projection (its softmax over one key is 1), so it skips the
attention machinery. Launches, not arithmetic, bound this head on a GPU (see docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        layers = list(self.decoder.layers)
        keys_values = [_keys_values(layer, memory) for layer in layers]
        # SDPA's boolean mask: True = the key takes part; (B, 1, 1, N) broadcasts over heads and the query
        keep = None if token_mask is None else (~token_mask.bool())[:, None, None, :]
        x = init.expand(tokens.shape[0], -1)
        context = self.pooled_embed(pooled).unsqueeze(1)
        outs = []
        for _ in range(self.iterations):
            h = self.query_base + context + self.param_embed(x).unsqueeze(1)
            for layer, (k, v) in zip(layers, keys_values):
                h = _decode(layer, h, k, v, keep)
            x = x + self.out(self.norm(h[:, 0]))
            outs.append(x)
        return outs


def _keys_values(layer: nn.TransformerDecoderLayer, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's cross-attention keys and values of ``memory (B, N, d)``, each ``(B, heads, N, d/heads)``."""
    attn = layer.multihead_attn
    d, H = memory.shape[-1], attn.num_heads
    kv = F.linear(memory, attn.in_proj_weight[d:], attn.in_proj_bias[d:])
    B, N = memory.shape[:2]
    k, v = kv.view(B, N, 2, H, d // H).permute(2, 0, 3, 1, 4).unbind(0)
    return k, v


def _decode(
    layer: nn.TransformerDecoderLayer, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """One pre-norm decoder layer on a single query ``x (B, 1, d)``, as ``layer(x, memory)`` computes it."""
    B, _, d = x.shape
    sa, ca = layer.self_attn, layer.multihead_attn
    H = ca.num_heads
    # self-attention over one token: softmax = 1, so the output is out_proj(value); dropout on that one
    # attention weight drops a whole head's value, as nn.MultiheadAttention's dropout would
    value = F.linear(layer.norm1(x), sa.in_proj_weight[2 * d:], sa.in_proj_bias[2 * d:])
    if sa.dropout > 0 and layer.training:
        value = (value.view(B, 1, H, d // H) * F.dropout(value.new_ones(B, 1, H, 1), sa.dropout)).view(B, 1, d)
    x = x + layer.dropout1(sa.out_proj(value))
    q = F.linear(layer.norm2(x), ca.in_proj_weight[:d], ca.in_proj_bias[:d]).view(B, 1, H, d // H).transpose(1, 2)
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=ca.dropout if layer.training else 0.0)
    x = x + layer.dropout2(ca.out_proj(att.transpose(1, 2).reshape(B, 1, d)))
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x)))))
    return x + layer.dropout3(ff)
