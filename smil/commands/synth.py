"""``smil synth``: render a synthetic dataset from a body model (the pipeline's built-in data source)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from smil.data.synth_settings import SynthSettings
from smil.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render a synthetic dataset (images, masks, keypoints, body parameters) from a body model",
        description=(
            "Render NUM_SAMPLES random poses of a SMIL body model seen by VIEWS cameras and write "
            "OUT/manifest.jsonl with OUT/images/*.jpg and OUT/masks/*.png. Deterministic per seed. "
            "See docs/synthetic.md."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--body-model", required=True, type=Path, help="SMIL body model pickle")
    p.add_argument("--num-samples", required=True, type=int, help="number of samples (frames)")
    p.add_argument("--views", type=int, default=1, help="cameras per sample (default 1)")
    p.add_argument("--image-size", type=int, default=256, help="square image size in pixels (default 256)")
    p.add_argument(
        "--rig",
        choices=("fixed", "random"),
        default=None,
        help="'fixed': one calibrated rig shared by all samples; 'random': new cameras per sample "
        "(default: random for one view, fixed for several)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--world-unit-m",
        type=float,
        default=SynthSettings.world_unit_m,
        help=f"metres per world unit (default {SynthSettings.world_unit_m}: 1 unit = 1 cm)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int | None:
    from smil.body.model import SMILModel
    from smil.data.synth import write_synthetic_dataset

    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {args.num_samples}", field="num_samples")
    rig = args.rig if args.rig is not None else ("random" if args.views == 1 else "fixed")
    settings = SynthSettings(
        image_size=args.image_size,
        views=args.views,
        rig=rig,
        seed=args.seed,
        world_unit_m=args.world_unit_m,
    )
    model = SMILModel.from_file(args.body_model)
    progress = _Progress(args.num_samples)
    try:
        path = write_synthetic_dataset(args.out, model, settings, args.num_samples, progress=progress)
    finally:
        progress.close()
    print(f"smil synth: wrote {args.num_samples} samples × {args.views} view(s) to {path}", file=sys.stderr)
    return 0


class _Progress:
    """tqdm on a terminal; otherwise a plain log line about every 10 %."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None
        self.start = time.perf_counter()
        self.next_log = max(1, total // 10)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="synth", unit="sample")

    def __call__(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
        elif done >= self.next_log or done == self.total:
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            print(f"synth: {done}/{self.total} samples ({rate:.1f} samples/s)", file=sys.stderr, flush=True)
            self.next_log = done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
