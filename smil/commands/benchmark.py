"""``smil benchmark MODEL DATASET --out FILE.json``: speed, memory, size and accuracy of a trained model."""

from __future__ import annotations

import argparse

from smil.commands.evaluate import SPLITS


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes ≥ 1, got {text!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="measure a trained model's inference speed, peak memory, size and test accuracy",
        description=(
            "Time inference (network + body model + cameras, batch on the device) per batch size, record "
            "peak memory and parameter counts, and evaluate test-split accuracy (a subset of smil "
            "evaluate's metrics, with the mean-pose baseline). Writes JSON and optionally Markdown."
        ),
    )
    p.add_argument("model", help="trained model (model.pt from smil train)")
    p.add_argument("dataset", help="dataset .h5 file")
    p.add_argument("--out", required=True, help="benchmark JSON file")
    p.add_argument("--markdown", default=None, help="also write a Markdown table to this file")
    p.add_argument("--batch-sizes", type=_sizes, default=[1, 8, 32], help="comma-separated (default 1,8,32)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per batch size (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    p.add_argument("--split", choices=SPLITS, default="test", help="split for inputs and accuracy (default test)")
    p.add_argument("--body-model", default=None,
                   help="SMIL body model (.pkl); default: the file the model was trained with")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smil.evaluate.benchmark import benchmark, markdown_report
    from smil.evaluate.evaluate import resolve_device
    from smil.evaluate.inference import load_trained
    from smil.io_utils import write_json_atomic, write_text_atomic

    trained = load_trained(args.model, args.body_model, device=resolve_device(args.device))
    doc = benchmark(
        trained, args.dataset, split=None if args.split == "all" else args.split, batch_sizes=args.batch_sizes,
        repeats=args.repeats, warmup=args.warmup, progress=not args.quiet,
    )
    write_json_atomic(args.out, doc)
    text = markdown_report(doc)
    if args.markdown:
        write_text_atomic(args.markdown, text)
    if not args.quiet:
        print(text, end="")
    return 0
