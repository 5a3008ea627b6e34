"""``smil infer MODEL INPUT --out PREFIX``: run a trained model over images, a video, a session or a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from smil.evaluate.boxes import CROP_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer",
        help="predict body-model parameters for images, a video, a multi-view session or an HDF5 dataset",
        description=(
            "Run a trained model (model.pt) over INPUT: a folder of images (natural name order), a single "
            "image, a video file, a session folder with one video per camera (file stem = camera name), or an "
            "HDF5 dataset. Writes PREFIX.npz (per-frame parameters, 3D joints, 2D keypoints and cameras in the "
            "original frame's pixels) and PREFIX.json (joint names, fps, source, cameras, model and body-model "
            "SHA-256, smoothing). The network works best on crops like its training data: use --crop bbox "
            "with boxes around the animal when the animal is small in the frame. See docs/inference.md."
        ),
    )
    p.add_argument("model", help="trained model file (model.pt)")
    p.add_argument("input", help="image folder, image, video, session folder of videos, or dataset .h5")
    p.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX.npz and PREFIX.json")
    p.add_argument("--crop", choices=CROP_MODES, default=None,
                   help="full: whole frame padded to a square (default); center: central square; bbox: a square "
                        "around each box of --bboxes (default when --bboxes is given)")
    p.add_argument("--bboxes", type=Path, default=None, metavar="FILE.json",
                   help="boxes [xmin, ymin, xmax, ymax] in frame pixels: a list (one per frame, null = full frame) "
                        "or an object keyed by frame number or image file name; for a session an object "
                        "{camera: boxes}")
    p.add_argument("--bbox-padding", type=float, default=1.2,
                   help="crop side = padding × the box's longer side (default 1.2, as smil preprocess)")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="HDF5 input: only this split (default: all samples)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE.toml",
                   help="aniposelib calibration: undistorts frames, and gives the base cameras a multi-view model "
                        "with camera_mode 'delta' refines or 'calibrated' uses (required for those)")
    p.add_argument("--smooth", type=float, default=None, metavar="SIGMA_FRAMES",
                   help="temporal smoothing: Gaussian window of this many frames (rotations averaged on SO(3)); "
                        "applied to the parameters before joints and keypoints are computed")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second for image folders and datasets (videos: read from the file; this "
                        "overrides it)")
    p.add_argument("--overlay-video", type=Path, default=None, metavar="PATH.mp4",
                   help="also write a video with keypoints, skeleton and silhouette outline drawn on the frames")
    p.add_argument("--batch-size", type=int, default=16, help="frames per network batch (default 16)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1, …")
    p.add_argument("--body-model", type=Path, default=None,
                   help="body model file (default: the one the model was trained with; must have the same SHA-256)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from smil.evaluate.infer import InferOptions, infer

    from smil.errors import ConfigError

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available", field="device")
    options = InferOptions(
        crop=args.crop,
        bboxes=args.bboxes,
        bbox_padding=args.bbox_padding,
        split=args.split,
        calibration=args.calibration,
        smooth=args.smooth,
        fps=args.fps,
        batch_size=args.batch_size,
        overlay_video=args.overlay_video,
        device=device,
        body_model=args.body_model,
        progress=False if args.quiet else None,
    )
    result = infer(args.model, args.input, args.out, options)
    written = [str(result.npz), str(result.sidecar)] + ([str(result.overlay)] if result.overlay else [])
    print(f"wrote {', '.join(written)}: {result.num_frames} frame(s) × {result.num_views} view(s)")
    return 0
