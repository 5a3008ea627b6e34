"""``smil report`` and ``smil figures``: the HTML report and the cross-experiment figures.

``smil figures --results results --out results/report/figures`` writes the publication figures
(``NAME.png`` at 300 dpi and ``NAME.pdf``), every one the results have data for or those named with
``--figures``. ``smil report --results results --out results/report`` writes ``OUT/index.html``, one
self-contained page (figures embedded), making the figures into ``OUT/figures`` first unless
``--figure-files`` lists PNGs ``smil figures`` wrote (as the workflow does). See ``docs/report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="the workflow's results folder (default results)")
    p.add_argument("--experiments", nargs="*", metavar="NAME", default=None,
                   help="experiments to include (default: every folder under RESULTS/experiments)")
    p.add_argument("--datasets", nargs="*", metavar="NAME", default=None,
                   help="datasets to include (default: every folder under RESULTS/datasets)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from smil.report import FIGURE_NAMES as FIGURES

    fig = subparsers.add_parser(
        "figures",
        help="cross-experiment figures (PCK curves, per-joint errors, error vs. views) as PNG and PDF",
        description="Write publication-size figures comparing experiments, each as NAME.png (300 dpi) and "
                    "NAME.pdf. Without --figures, every figure the "
                    "results have data for; with it, a named figure without data is an error.",
    )
    _common(fig)
    fig.add_argument("--out", required=True, help="folder for the figures")
    fig.add_argument("--figures", nargs="+", choices=FIGURES, default=None, metavar="NAME",
                     help=f"figures to make, of: {', '.join(FIGURES)}")
    fig.set_defaults(func=run_figures)

    rep = subparsers.add_parser(
        "report",
        help="the HTML report of every experiment and dataset (one self-contained index.html)",
        description="Collect every experiment's training history, evaluation, benchmark and every "
                    "dataset's summary and ground-truth check under RESULTS, and write OUT/index.html "
                    "with all figures embedded. Opens in any browser without a server.",
    )
    _common(rep)
    rep.add_argument("--inference", nargs="*", metavar="NAME", default=None,
                     help="inference runs to include (default: every folder under RESULTS/inference)")
    rep.add_argument("--out", required=True, help="report folder: OUT/index.html (and OUT/figures)")
    rep.add_argument("--figure-files", nargs="*", default=None, metavar="PNG",
                     help="use these figures written by `smil figures` (NAME.png, the PDF beside it) "
                          "instead of making every figure into OUT/figures")
    rep.add_argument("--title", default="SMIL pipeline report", help="page title")
    rep.set_defaults(func=run_report)


def run_figures(args: argparse.Namespace) -> int:
    from smil.report.figures import make_figures
    from smil.report.gather import gather

    results = gather(args.results, experiments=args.experiments, datasets=args.datasets, inference=[])
    for f in make_figures(results, args.out, args.figures):
        print(f"{f.name}: skipped, {f.skipped}" if f.skipped else f"wrote {f.png} and {f.pdf}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from smil.report.figures import existing_figures, make_figures
    from smil.report.gather import gather
    from smil.report.page import write_report

    results = gather(args.results, experiments=args.experiments, datasets=args.datasets, inference=args.inference)
    out = Path(args.out)
    if args.figure_files is not None:
        figures = existing_figures(args.figure_files)
    else:
        figures = make_figures(results, out / "figures")
    path = write_report(results, figures, out / "index.html", title=args.title)
    print(f"wrote {path}")
    return 0
