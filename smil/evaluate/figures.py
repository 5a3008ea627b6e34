"""Evaluation figures: PCK curves, error histograms, per-joint errors and qualitative overlays.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global state, the
Agg canvas), sized for a publication: 3.5 in wide for one column, 7 in for two, 8 pt text.
:func:`save_figure` writes PNG (300 dpi) and PDF atomically. Predictors are drawn in a fixed order and
colour (``model`` blue, ``baseline`` grey), so figures of different experiments read alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from smil.io_utils import atomic_path

__all__ = [
    "OverlayPanel",
    "error_histogram_figure",
    "new_figure",
    "overlay_figure",
    "pck_curve_figure",
    "per_joint_error_figure",
    "save_figure",
]

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
FONT_PT = 8
COLORS = {"model": "#1f77b4", "baseline": "#7f7f7f"}
_EXTRA = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def _color(name: str, i: int) -> str:
    return COLORS.get(name, _EXTRA[i % len(_EXTRA)])


def new_figure(width_in: float, height_in: float) -> Any:
    """A figure on the Agg canvas with the house style (8 pt text, thin lines)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    fig.set_canvas(_agg_canvas(fig))
    return fig


def _agg_canvas(fig: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig)


def _legend(ax: Any, **kw: Any) -> None:
    """A small frameless legend, only when something was drawn with a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=FONT_PT - 1, frameon=False, **kw)


def _style(ax: Any) -> None:
    ax.tick_params(labelsize=FONT_PT - 1, width=0.6, length=2.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_linewidth(0.6)
    ax.xaxis.label.set_size(FONT_PT)
    ax.yaxis.label.set_size(FONT_PT)
    ax.title.set_size(FONT_PT)


def save_figure(fig: Any, path_stem: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 300) -> list[Path]:
    """Write ``path_stem.<fmt>`` for every format, each atomically; returns the paths written.

    PDFs carry no creation date, so the same figure gives the same file.
    """
    stem = Path(path_stem)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
        written.append(path)
    return written


def pck_curve_figure(
    pixel_curves: dict[str, tuple[np.ndarray, np.ndarray]],
    normalised_curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    *,
    pixel_label: str = "threshold (px)",
    norm_label: str = "α",
) -> Any:
    """PCK against a pixel threshold (left) and a normalised threshold α (right, when given).

    Curves are ``{predictor: (thresholds, pck in [0, 1])}``; the legend gives each curve's mean over
    its thresholds (the AUC of that grid).
    """
    panels = [(pixel_curves, pixel_label)] + ([(normalised_curves, norm_label)] if normalised_curves else [])
    fig = new_figure(DOUBLE_COLUMN_IN if len(panels) == 2 else SINGLE_COLUMN_IN, 2.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (curves, xlabel) in zip(axes, panels):
        for i, (name, (x, y)) in enumerate(curves.items()):
            y = np.asarray(y, dtype=np.float64)
            if not np.isfinite(y).any():
                continue
            auc = float(np.nanmean(y))
            ax.plot(x, y, color=_color(name, i), lw=1.2, label=f"{name} (AUC {auc:.3f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PCK")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(float(np.min(next(iter(curves.values()))[0])), float(np.max(next(iter(curves.values()))[0])))
        ax.grid(True, lw=0.3, alpha=0.5)
        _legend(ax, loc="lower right")
        _style(ax)
    return fig


def _finite(x: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def error_histogram_figure(
    errors2d: dict[str, np.ndarray], errors3d_mm: dict[str, np.ndarray] | None = None, *, px_unit: str = "px"
) -> Any:
    """Histograms of per-keypoint 2D errors (px) and, when given, 3D errors (mm), per predictor.

    Only finite values are drawn; the title counts the infinite ones (keypoints behind a camera).
    """
    panels = [(errors2d, f"2D keypoint error ({px_unit})")]
    if errors3d_mm:
        panels.append((errors3d_mm, "3D joint error (mm)"))
    fig = new_figure(DOUBLE_COLUMN_IN if len(panels) == 2 else SINGLE_COLUMN_IN, 2.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (data, xlabel) in zip(axes, panels):
        values = {name: _finite(v) for name, v in data.items()}
        pooled = np.concatenate([v for v in values.values()] or [np.zeros(0)])
        top = float(np.percentile(pooled, 99)) if pooled.size else 1.0
        bins = np.linspace(0.0, max(top, 1e-9), 41)
        n_inf = sum(int(np.isinf(np.asarray(v, dtype=np.float64)).sum()) for v in data.values())
        for i, (name, v) in enumerate(values.items()):
            if v.size:
                ax.hist(np.clip(v, 0, bins[-1]), bins=bins, histtype="step", lw=1.2, color=_color(name, i),
                        label=f"{name} (median {np.median(v):.3g})")
        ax.set_xlabel(xlabel + ("" if not pooled.size or pooled.max() <= bins[-1] else "; last bin ≥ 99th pct."))
        ax.set_ylabel("count")
        if n_inf:
            ax.set_title(f"{n_inf} behind a camera (not drawn)")
        _legend(ax)
        _style(ax)
    return fig


def per_joint_error_figure(
    joint_names: Sequence[str],
    errors2d: dict[str, np.ndarray],
    errors3d_mm: dict[str, np.ndarray] | None = None,
    *,
    px_unit: str = "px",
) -> Any:
    """Horizontal bars of the mean error per joint: 2D (px) and, when given, 3D (mm), per predictor."""
    J = len(joint_names)
    panels = [(errors2d, f"mean 2D error ({px_unit})")]
    if errors3d_mm:
        panels.append((errors3d_mm, "mean 3D error (mm)"))
    height = min(max(2.0, 0.12 * J + 0.8), 9.5)
    fig = new_figure(DOUBLE_COLUMN_IN if len(panels) == 2 else SINGLE_COLUMN_IN, height)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    y = np.arange(J)
    for ax, (data, xlabel) in zip(axes, panels):
        n = max(len(data), 1)
        h = 0.8 / n
        for i, (name, v) in enumerate(data.items()):
            vals = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0, posinf=0.0)
            ax.barh(y - 0.4 + h * (i + 0.5), vals, height=h, color=_color(name, i), label=name)
        ax.set_xlabel(xlabel)
        ax.invert_yaxis()
        ax.grid(True, axis="x", lw=0.3, alpha=0.5)
        _legend(ax, loc="lower right")
        _style(ax)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(list(joint_names), fontsize=max(4, FONT_PT - 2 - J // 40))
    return fig


@dataclass
class OverlayPanel:
    """One view of a qualitative overlay.

    ``image (H,W,3)`` uint8 RGB; keypoints ``(J,2)`` pixels of that image; ``gt_visible (J,)`` bool;
    ``silhouette (H,W)`` bool (predicted) or ``None``; ``parents`` draws the skeleton (``-1`` = root).
    """

    image: np.ndarray
    gt_keypoints: np.ndarray
    gt_visible: np.ndarray
    pred_keypoints: np.ndarray
    silhouette: np.ndarray | None = None
    parents: list[int] = field(default_factory=list)
    title: str = ""


def overlay_figure(panels: Sequence[OverlayPanel], title: str = "") -> Any:
    """Image(s) with the predicted silhouette (translucent blue), ground-truth keypoints (green, visible
    ones) and predicted keypoints (red, with the skeleton); several views form a grid."""
    n = max(len(panels), 1)
    cols = n if n <= 4 else int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    w = min(DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN * cols / 1.5 + 0.2)
    fig = new_figure(w, w / cols * rows + (0.25 if title else 0.0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, p in zip(axes, panels):
        img = np.asarray(p.image)
        H, W = img.shape[:2]
        ax.imshow(img, interpolation="nearest")
        if p.silhouette is not None and np.asarray(p.silhouette).any():
            tint = np.zeros((H, W, 4))
            tint[..., 2] = 1.0
            tint[..., 3] = 0.35 * np.asarray(p.silhouette, dtype=np.float64)
            ax.imshow(tint, interpolation="nearest")
        gt = np.asarray(p.gt_keypoints, dtype=np.float64)
        pr = np.asarray(p.pred_keypoints, dtype=np.float64)
        vis = np.asarray(p.gt_visible, dtype=bool) & np.isfinite(gt).all(-1)
        ms = max(1.0, 6.0 / np.sqrt(n))
        for j, parent in enumerate(p.parents):
            if parent < 0:
                continue
            if vis[j] and vis[parent]:
                ax.plot(gt[[parent, j], 0], gt[[parent, j], 1], color="#2ca02c", lw=0.6, alpha=0.8)
            if np.isfinite(pr[[parent, j]]).all():
                ax.plot(pr[[parent, j], 0], pr[[parent, j], 1], color="#d62728", lw=0.6, alpha=0.8)
        ax.plot(gt[vis, 0], gt[vis, 1], "o", ms=ms, mfc="none", mec="#2ca02c", mew=0.6, label="ground truth")
        ok = np.isfinite(pr).all(-1)
        ax.plot(pr[ok, 0], pr[ok, 1], "x", ms=ms, color="#d62728", mew=0.6, label="predicted")
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        if p.title:
            ax.set_title(p.title, fontsize=FONT_PT - 1)
    if title:
        fig.suptitle(title, fontsize=FONT_PT)
    return fig
