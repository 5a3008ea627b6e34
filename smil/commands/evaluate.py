"""``smil evaluate MODEL DATASET --out DIR``: accuracy of a trained model and of the mean-pose baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

SPLITS = ("train", "val", "test", "all")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained model and the mean-pose baseline on a dataset split",
        description=(
            "Run a trained model and the mean-pose baseline over a dataset split (as stored in the file) "
            "and write DIR/metrics.json, DIR/per_joint.csv, DIR/per_sample.csv and DIR/figures/. "
            "Metrics and file layout: docs/metrics.md."
        ),
    )
    p.add_argument("model", help="trained model (model.pt from smil train)")
    p.add_argument("dataset", help="dataset .h5 file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default test)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per forward pass (default 16)")
    p.add_argument("--body-model", default=None,
                   help="SMIL body model (.pkl); default: the file the model was trained with")
    p.add_argument("--overlays", type=int, default=8,
                   help="qualitative overlay figures of the first N items (default 8; 0 = none)")
    p.add_argument("--views", type=int, default=None, metavar="K",
                   help="multi-view models: give the network only the first K valid views of each sample")
    p.add_argument("--views-ablation", action="store_true",
                   help="multi-view models: also evaluate with K = 1..V views and write DIR/views_ablation.json")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smil.errors import SmilError
    from smil.evaluate.evaluate import evaluate, resolve_device, views_ablation, write_evaluation
    from smil.evaluate.inference import load_trained
    from smil.io_utils import write_json_atomic

    if args.overlays < 0:
        raise SmilError(f"--overlays must be ≥ 0, got {args.overlays}", field="overlays")
    trained = load_trained(args.model, args.body_model, device=resolve_device(args.device))
    if args.views_ablation and trained.mode != "multiview":
        raise SmilError(f"--views-ablation needs a multi-view model; {args.model} is a single-view model",
                        field="views_ablation")
    split = None if args.split == "all" else args.split
    common = dict(split=split, batch_size=args.batch_size, num_workers=args.num_workers, progress=not args.quiet)
    ev = evaluate(trained, args.dataset, views=args.views, overlays=args.overlays, **common)
    out = Path(args.out)
    doc = write_evaluation(ev, out, args.dataset)
    if args.views_ablation:
        k = args.views if args.views is not None else len(trained.spec.rig)
        ablation = views_ablation(trained, args.dataset, reuse={k: ev}, **common)
        write_json_atomic(out / "views_ablation.json", ablation)
    if not args.quiet:
        print(_summary_line(doc))
    return 0


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def _summary_line(doc: dict) -> str:
    lines = [f"{doc['dataset_path']} ({doc['split']}, {doc['counts']['items']} items):"]
    for name in ("model", "baseline"):
        h = doc[name]["headline"]
        lines.append(
            f"  {name:<8} 2D {_fmt(h['keypoints2d_mean_px'])} px mean, PCK@0.1 box {_fmt(h['pck_bbox_0.1'])}, "
            f"MPJPE {_fmt(h['mpjpe_mm'])} mm, PA-MPJPE {_fmt(h['pa_mpjpe_mm'])} mm, IoU {_fmt(h['silhouette_iou'])}"
        )
    return "\n".join(lines)
