"""``smil check-gt DATASET.h5 --body-model PKL``: do a dataset's ground-truth parameters reproduce its keypoints?"""

from __future__ import annotations

import argparse
import sys

from smil.evaluate.check_gt import SPLIT_CHOICES, check_ground_truth, format_report
from smil.io_utils import write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-gt",
        help="check that a dataset's ground-truth body parameters and cameras reproduce its keypoints",
        description=(
            "Pose the body model with each sample's stored ground-truth parameters, project its joints "
            "through the stored cameras and compare with the stored 2D keypoints (px) and 3D keypoints "
            "(world units and mm). Convention errors in an ingest show up as large errors. Samples "
            "without ground-truth pose are counted, not errors. See docs/metrics.md."
        ),
    )
    p.add_argument("dataset", help="dataset .h5 file")
    p.add_argument("--body-model", required=True, help="SMIL body model file (.pkl) the parameters belong to")
    p.add_argument("--out", default=None, help="write the full report as JSON to this file")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="all", help="samples to check (default all)")
    p.add_argument("--max-mean-px", type=float, default=None,
                   help="exit with code 1 when the mean 2D error exceeds this many pixels, or a keypoint "
                        "lands behind a camera (default: never)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = check_ground_truth(args.dataset, args.body_model, split=args.split)
    if args.out:
        write_json_atomic(args.out, report)
    print(format_report(report))
    if args.max_mean_px is not None and report["keypoints2d"] is not None:
        summary = report["keypoints2d"]["all"]
        mean = summary["mean"]
        if summary["count_infinite"] or (mean is not None and mean > args.max_mean_px):
            print(f"smil check-gt: failed: mean 2D error {mean} px (limit --max-mean-px {args.max_mean_px}), "
                  f"{summary['count_infinite']} keypoint(s) behind a camera", file=sys.stderr)
            return 1
    return 0
