"""``smil preprocess MANIFEST OUT.h5``: crop, resize and encode a manifest into an HDF5 dataset."""

from __future__ import annotations

import argparse

from smil.data.preprocess import SUMMARY_NAME, PreprocessSettings, format_summary, preprocess
from smil.data.splits import parse_fractions
from smil.errors import ConfigError


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        return parse_fractions(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="build an HDF5 dataset from a sample manifest",
        description=(
            "Crop a square around the animal in every view, resize it, encode it as JPEG, adjust the "
            "cameras and keypoints, split by group, and write the dataset atomically. A summary is "
            f"printed and written as {SUMMARY_NAME} beside the output (see docs/dataset-format.md)."
        ),
    )
    p.add_argument("manifest", help="manifest.jsonl written by an ingest command")
    p.add_argument("output", help="dataset file to write (.h5)")
    p.add_argument("--image-size", type=int, default=256, help="stored image side in pixels (default 256)")
    p.add_argument("--padding", type=float, default=1.2,
                   help="crop side as a multiple of the animal's bounding box side (default 1.2)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--split", type=_fractions, default="0.8,0.1,0.1",
                   help="train,val,test fractions of the samples, split by group (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--border", choices=("shift", "pad"), default="shift",
                   help="near an image edge, shift the crop inside the image (default) or pad it with black")
    p.add_argument("--no-reduced-decode", dest="reduced_decode", action="store_false",
                   help="always decode JPEGs at full size (default: decode at 1/2, 1/4 or 1/8 when the "
                        "crop is that much larger than --image-size)")
    p.add_argument("--skip-bad", action="store_true",
                   help="count and skip bad samples (unreadable images, no keypoints) instead of failing")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes (default 0: one per available CPU, at most 4, on Linux for "
                        "image files; otherwise threads; 1: none)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads in this process instead of worker processes (default 0: one per "
                        "available CPU, at most 4, where worker processes are not used)")
    p.add_argument("--summary", default=None, help=f"summary JSON path (default: {SUMMARY_NAME} beside OUTPUT)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = PreprocessSettings(
        image_size=args.image_size,
        padding=args.padding,
        jpeg_quality=args.jpeg_quality,
        split=args.split,
        seed=args.seed,
        skip_bad=args.skip_bad,
        border=args.border,
        reduced_decode=args.reduced_decode,
        workers=args.workers,
        threads=args.threads,
    )
    summary = preprocess(args.manifest, args.output, settings, progress=False if args.quiet else None,
                         summary_path=args.summary)
    print(format_summary(summary))
    return 0
