"""The transformer IEF head as shipped vs the same modules run by torch's ``nn.TransformerDecoder``.

Usage::

    python benchmarks/bench_head.py [--config config/experiments/vitb_singleview.json] [--tokens 197]
        [--feature-dim 768] [--batch 32] [--repeats 5] [--device auto|cpu|cuda]

``TransformerIEFHead`` keeps its layers as ``nn.TransformerDecoderLayer`` modules but runs them itself:
each layer's cross-attention keys and values are projected once per forward (the image tokens do
not change between IEF iterations), and self-attention over the single query is the value and
output projections. The reference is the straightforward loop over the same modules through
``nn.TransformerDecoder`` (what the head did before), on the same weights and inputs. Both run
forward + backward of the sum of every iteration's estimate, in training mode (dropout as
configured), timed interleaved, best of ``--repeats``; plus the operator census of one pass
(non-view ATen operators ≈ kernel launches on a GPU, see ``bench_train.op_census``) and the largest
difference between the two outputs in evaluation mode. Head sizes come from the config's ``model``
section; the body-parameter vector has ``--param-dim`` entries. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import op_census  # noqa: E402

from smil.config import load_config  # noqa: E402
from smil.models.heads import TransformerIEFHead  # noqa: E402


def reference_forward(head: TransformerIEFHead, tokens: torch.Tensor, pooled: torch.Tensor,
                      init: torch.Tensor) -> list[torch.Tensor]:
    """The head's computation through ``nn.TransformerDecoder`` (keys and values every iteration)."""
    memory = head.token_proj(tokens)
    x, context, outs = init.expand(tokens.shape[0], -1), head.pooled_embed(pooled).unsqueeze(1), []
    for _ in range(head.iterations):
        query = head.query_base + context + head.param_embed(x).unsqueeze(1)
        h = head.decoder(query, memory)
        x = x + head.out(head.norm(h[:, 0]))
        outs.append(x)
    return outs


def _step(head: TransformerIEFHead, fn: Callable[[], list[torch.Tensor]]) -> None:
    head.zero_grad(set_to_none=True)
    sum(o.sum() for o in fn()).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/experiments/vitb_singleview.json")
    ap.add_argument("--tokens", type=int, default=197, help="image tokens (ViT-B/16 at 224²: 197)")
    ap.add_argument("--feature-dim", type=int, default=768, help="backbone feature width (ViT-B: 768)")
    ap.add_argument("--param-dim", type=int, default=512, help="length of the regressed parameter vector")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    m = load_config(args.config).model
    torch.manual_seed(0)
    head = TransformerIEFHead(feature_dim=args.feature_dim, param_dim=args.param_dim, hidden_dim=m.hidden_dim,
                              depth=m.head_depth, num_heads=m.num_heads, dropout=m.dropout,
                              iterations=m.ief_iterations).to(device)
    tokens = torch.randn(args.batch, args.tokens, args.feature_dim, device=device)
    pooled = torch.randn(args.batch, args.feature_dim, device=device)
    init = torch.zeros(1, args.param_dim, device=device)
    runs = {"head": lambda: head(tokens, pooled, init), "reference": lambda: reference_forward(head, tokens, pooled, init)}

    head.eval()
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(runs["head"](), runs["reference"]()))
    head.train()
    census = {name: op_census(lambda fn=fn: _step(head, fn)) for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        _step(head, fn)
    for _ in range(args.repeats):
        for name, fn in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            _step(head, fn)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "benchmark": "transformer IEF head, forward + backward",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "head": {"hidden_dim": m.hidden_dim, "depth": m.head_depth, "num_heads": m.num_heads, "dropout": m.dropout,
                 "iterations": m.ief_iterations, "tokens": args.tokens, "feature_dim": args.feature_dim,
                 "param_dim": args.param_dim, "batch": args.batch},
        "ms_best": {k: round(1e3 * v, 2) for k, v in best.items()},
        "speedup": round(best["reference"] / best["head"], 3),
        "non_view_ops": {k: c["non_view_ops"] for k, c in census.items()},
        "sync_ops": {k: c["sync_ops"] for k, c in census.items()},
        "max_abs_output_difference_eval": diff,
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
