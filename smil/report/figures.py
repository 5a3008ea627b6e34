"""Cross-experiment figures at publication size, each written as ``NAME.png`` (300 dpi) and ``NAME.pdf``.

* ``pck_curves``: PCK against the pixel threshold (stored-image pixels) and against α of the
  keypoints' bounding box, every experiment (solid) with its mean-pose baseline (dashed, same colour),
  at the thresholds ``smil evaluate`` records in ``metrics.json``;
* ``per_joint_errors``: the mean 2D error (stored-image px) and, where there is 3D ground truth, the
  Procrustes-aligned 3D error (mm) of every joint, joints in body-model order, one line per experiment;
* ``error_vs_views``: MPJPE and PA-MPJPE (mm) and the reprojection error (px) of every multi-view
  experiment given its first 1, 2, …, V views (``views_ablation.json``).

Figures are built like the per-experiment ones (:mod:`smil.evaluate.figures`: Agg canvas, no
``pyplot`` state, 8 pt text, 3.5 in for one column and 7 in for two; PDFs without a creation date).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from smil.errors import DataError
from smil.report import FIGURE_NAMES
from smil.report import series as S
from smil.report.gather import Results

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
FONT_PT = 8
#: One colour per experiment, in the order experiments are listed (colour-blind safe, Okabe–Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

FIGURES = FIGURE_NAMES


@dataclass
class FigureResult:
    """A figure written (``png``, ``pdf``) or skipped (``skipped`` says why)."""

    name: str
    png: Path | None = None
    pdf: Path | None = None
    skipped: str | None = None
    experiments: list[str] = field(default_factory=list)


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _style(ax: Any) -> None:
    """The evaluation figures' axis style, plus a light grid for comparing experiments."""
    from smil.evaluate.figures import _style as base_style

    base_style(ax)
    ax.grid(True, lw=0.3, alpha=0.5)


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=FONT_PT - 1, frameon=False, **kw)


def _save(fig: Any, out_dir: Path, name: str) -> tuple[Path, Path]:
    from smil.evaluate.figures import save_figure

    png, pdf = save_figure(fig, Path(out_dir) / name, formats=("png", "pdf"), dpi=300)
    return png, pdf


def plot_pck_curves(curves: Sequence[S.PckCurve], out_dir: Path) -> tuple[Path, Path]:
    """Two panels: PCK (%) against the pixel threshold and against the bounding-box α."""
    from smil.evaluate.figures import new_figure

    fig = new_figure(DOUBLE_COLUMN_IN, 2.5)
    ax_px, ax_bb = fig.subplots(1, 2)
    for i, c in enumerate(curves):
        colour = _colour(i)
        for ax, x, model, base in ((ax_px, c.pixel_thresholds, c.pixel_model, c.pixel_baseline),
                                   (ax_bb, c.bbox_alphas, c.bbox_model, c.bbox_baseline)):
            if not x:
                continue
            # PCK is 0 at a zero threshold (strict inequality, docs/metrics.md): the curves start at the origin.
            ax.plot([0.0, *x], [0.0, *(100 * v for v in model)], color=colour, marker="o", ms=3, lw=1.2,
                    label=c.experiment)
            if base is not None:
                ax.plot([0.0, *x], [0.0, *(100 * v for v in base)], color=colour, marker="o", ms=2, lw=0.8,
                        ls="--", mfc="white", label=f"{c.experiment}, mean pose")
    ax_px.set_xlabel("threshold (px of the stored image)")
    ax_bb.set_xlabel("α (fraction of the keypoints' bounding box)")
    for ax in (ax_px, ax_bb):
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 102)
        ax.set_xlim(left=0)
        _style(ax)
    _legend(ax_bb, loc="upper left")
    return _save(fig, out_dir, "pck_curves")


def plot_per_joint_errors(errors: Sequence[S.PerJointErrors], out_dir: Path) -> tuple[Path, Path]:
    """2D (px) and, when any experiment has it, PA-3D (mm) error per joint; joints along x."""
    from smil.evaluate.figures import new_figure

    joints: list[str] = []
    for e in errors:
        joints += [j for j in e.joints if j not in joints]
    with_3d = [e for e in errors if e.pa_mm is not None]
    panels = 2 if with_3d else 1
    width = min(max(DOUBLE_COLUMN_IN, 0.11 * len(joints) + 1.0), 14.0)
    fig = new_figure(width, 1.9 * panels + 0.9)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    x_of = {j: k for k, j in enumerate(joints)}
    for i, e in enumerate(errors):
        xs = [x_of[j] for j in e.joints]
        axes[0].plot(xs, e.px, color=_colour(i), marker="o", ms=2.5, lw=0.8, label=e.experiment)
        if panels == 2 and e.pa_mm is not None:
            axes[1].plot(xs, e.pa_mm, color=_colour(i), marker="o", ms=2.5, lw=0.8, label=e.experiment)
    axes[0].set_ylabel("mean 2D error (px)")
    if panels == 2:
        axes[1].set_ylabel("PA 3D error (mm)")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.set_xlim(-0.5, len(joints) - 0.5)
        _style(ax)
    axes[-1].set_xticks(range(len(joints)))
    axes[-1].set_xticklabels(joints, rotation=90, fontsize=max(4, FONT_PT - 2 - len(joints) // 60))
    _legend(axes[0], loc="upper left", ncol=min(len(errors), 4))
    return _save(fig, out_dir, "per_joint_errors")


def plot_error_vs_views(series: Sequence[S.ViewsSeries], out_dir: Path) -> tuple[Path, Path]:
    """3D error (MPJPE solid, PA-MPJPE dashed, mm) and reprojection error (px) against the view count."""
    from smil.evaluate.figures import new_figure

    fig = new_figure(DOUBLE_COLUMN_IN, 2.4)
    ax3d, ax2d = fig.subplots(1, 2)

    def pts(views: list[int], values: list[float | None]) -> tuple[list[int], list[float]]:
        keep = [(v, y) for v, y in zip(views, values) if y is not None and math.isfinite(y)]
        return [k[0] for k in keep], [k[1] for k in keep]

    for i, s in enumerate(series):
        colour = _colour(i)
        x, y = pts(s.views, s.mpjpe_mm)
        if x:
            ax3d.plot(x, y, color=colour, marker="o", ms=3, lw=1.2, label=f"{s.experiment} MPJPE")
        x, y = pts(s.views, s.pa_mpjpe_mm)
        if x:
            ax3d.plot(x, y, color=colour, marker="s", ms=3, lw=1.0, ls="--", label=f"{s.experiment} PA-MPJPE")
        x, y = pts(s.views, s.reprojection_px)
        if x:
            ax2d.plot(x, y, color=colour, marker="o", ms=3, lw=1.2, label=s.experiment)
    ticks = sorted({v for s in series for v in s.views})
    ax3d.set_ylabel("3D joint error (mm)")
    ax2d.set_ylabel("reprojection error (px, network image)")
    for ax in (ax3d, ax2d):
        ax.set_xlabel("views given to the model")
        ax.set_xticks(ticks)
        ax.set_ylim(bottom=0)
        _style(ax)
    _legend(ax3d)
    _legend(ax2d)
    return _save(fig, out_dir, "error_vs_views")


EXTRACTORS = {
    "pck_curves": (S.pck_curves, plot_pck_curves),
    "per_joint_errors": (S.per_joint_errors, plot_per_joint_errors),
    "error_vs_views": (S.views_series, plot_error_vs_views),
}


def missing_reason(results: Results, name: str) -> str | None:
    """Why figure ``name`` cannot be drawn from ``results`` (``None``: it can)."""
    data, why = EXTRACTORS[name][0](results)
    return None if data else why


def make_figures(results: Results, out_dir: str | Path, names: Sequence[str] | None = None) -> list[FigureResult]:
    """Write the cross-experiment figures into ``out_dir``.

    Args:
        results: from :func:`smil.report.gather.gather`.
        names: figures to make (of :data:`FIGURES`). ``None``: every figure the results have data for;
            the others come back as skipped, with the reason. A figure named here without data is an
            error.

    Raises:
        DataError: a named figure has no data, or an unknown name.
    """
    wanted = list(FIGURES if names is None else names)
    unknown = [n for n in wanted if n not in FIGURES]
    if unknown:
        raise DataError(f"unknown figure(s) {', '.join(unknown)}; expected some of {', '.join(FIGURES)}",
                        field="figures")
    out: list[FigureResult] = []
    for name in wanted:
        extract, plot = EXTRACTORS[name]
        data, why = extract(results)
        if not data:
            if names is not None:
                raise DataError(f"figure {name}: {why}", path=results.root)
            out.append(FigureResult(name=name, skipped=why))
            continue
        png, pdf = plot(data, Path(out_dir))
        out.append(FigureResult(name=name, png=png, pdf=pdf, experiments=[d.experiment for d in data]))
    return out


def existing_figures(paths: Sequence[str | Path]) -> list[FigureResult]:
    """Figures ``smil figures`` wrote, given as their PNG files (the PDF beside each is optional).

    Raises:
        DataError: a file is missing or its name is not ``NAME.png`` for a known figure.
    """
    out = []
    for p in map(Path, paths):
        if p.suffix.lower() != ".png" or p.stem not in FIGURES:
            raise DataError(f"expected a figure written by smil figures, one of "
                            f"{', '.join(f + '.png' for f in FIGURES)}", path=p)
        if not p.is_file():
            raise DataError("figure file not found", path=p)
        pdf = p.with_suffix(".pdf")
        out.append(FigureResult(name=p.stem, png=p, pdf=pdf if pdf.is_file() else None))
    return out
