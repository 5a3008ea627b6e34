"""The data behind the cross-experiment figures, pulled out of the gathered results.

Each extractor returns ``(series, reason)``: the series of every experiment that has the data, and,
when there is none, a sentence saying what is missing (shown in the report and raised when a figure
is asked for by name).

Units. 2D errors are compared in pixels of the **stored** image (``metrics.json``'s ``stored_px``
values), not of the network input, so experiments with different input sizes line up. 3D errors are
millimetres. The layouts read are ``metrics.json`` (``smil-evaluation`` format 1), ``per_joint.csv``
and ``views_ablation.json`` (``smil-views-ablation``), documented in ``smil/evaluate/evaluate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from smil.report.gather import ExperimentResults, Results, finite


@dataclass
class PckCurve:
    """PCK of one experiment at the evaluated thresholds: pixels of the stored image, and α of the
    keypoints' bounding box. ``None`` entries: the baseline was not evaluated."""

    experiment: str
    pixel_thresholds: list[float]
    pixel_model: list[float]
    pixel_baseline: list[float] | None
    bbox_alphas: list[float]
    bbox_model: list[float]
    bbox_baseline: list[float] | None


@dataclass
class PerJointErrors:
    """Mean error per joint (NaN = never evaluated), 2D in stored-image pixels and PA-3D in mm."""

    experiment: str
    joints: list[str]
    px: list[float]
    pa_mm: list[float] | None


@dataclass
class ViewsSeries:
    """Errors of a multi-view model given its first ``views`` valid views."""

    experiment: str
    views: list[int]
    mpjpe_mm: list[float | None]
    pa_mpjpe_mm: list[float | None]
    reprojection_px: list[float | None]


def _thresholds(block: dict | None) -> tuple[list[float], list[float]]:
    """``{"2": 0.1, "5": 0.4}`` → sorted thresholds and values (entries without a value dropped)."""
    pairs = []
    for key, value in (block or {}).items():
        try:
            x = float(key)
        except ValueError:
            continue
        v = finite(value)
        if v is not None:
            pairs.append((x, v))
    pairs.sort()
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _pck(exp: ExperimentResults) -> PckCurve | None:
    m = exp.metrics or {}
    model = (m.get("model") or {}).get("keypoints2d") or {}
    base = (m.get("baseline") or {}).get("keypoints2d") or {}
    px, px_m = _thresholds(model.get("pck_stored_px"))
    bb, bb_m = _thresholds(model.get("pck_bbox"))
    if not px and not bb:
        return None
    px_b = _thresholds(base.get("pck_stored_px"))
    bb_b = _thresholds(base.get("pck_bbox"))
    return PckCurve(
        experiment=exp.name,
        pixel_thresholds=px, pixel_model=px_m, pixel_baseline=px_b[1] if px_b[0] == px else None,
        bbox_alphas=bb, bbox_model=bb_m, bbox_baseline=bb_b[1] if bb_b[0] == bb else None,
    )


def pck_curves(results: Results) -> tuple[list[PckCurve], str]:
    curves = [c for c in (_pck(e) for e in results.experiments) if c is not None]
    return curves, "no experiment has eval/metrics.json with PCK values (run smil evaluate)"


def _stored_px_factor(metrics: dict | None) -> float | None:
    """Network-image px → stored-image px: ``W / S`` for square stored images (distances scale with it)."""
    if not metrics:
        return None
    size = metrics.get("stored_image_size") or []
    s = finite(metrics.get("image_size"))
    if len(size) != 2 or s is None or s <= 0 or size[0] != size[1]:
        return None
    return float(size[0]) / s


def _per_joint(exp: ExperimentResults) -> PerJointErrors | None:
    rows = exp.per_joint
    if not rows or "joint" not in rows[0] or "model_2d_mean_px" not in rows[0]:
        return None
    factor = _stored_px_factor(exp.metrics)
    if factor is None:
        return None
    nan = float("nan")

    def column(key: str, scale: float = 1.0) -> list[float]:
        return [(finite(r.get(key)) * scale) if finite(r.get(key)) is not None else nan for r in rows]

    pa = column("model_pa_3d_mean_mm") if "model_pa_3d_mean_mm" in rows[0] else None
    if pa is not None and all(v != v for v in pa):
        pa = None
    return PerJointErrors(experiment=exp.name, joints=[str(r["joint"]) for r in rows],
                          px=column("model_2d_mean_px", factor), pa_mm=pa)


def per_joint_errors(results: Results) -> tuple[list[PerJointErrors], str]:
    errors = [e for e in (_per_joint(x) for x in results.experiments) if e is not None]
    return errors, ("no experiment has eval/per_joint.csv and eval/metrics.json with square stored images "
                    "(run smil evaluate)")


def _views(exp: ExperimentResults) -> ViewsSeries | None:
    doc = exp.views_ablation or {}
    entries = sorted((e for e in doc.get("entries") or [] if isinstance(e, dict) and "views" in e),
                     key=lambda e: e["views"])
    if not entries:
        return None

    def col(key: str) -> list[float | None]:
        return [finite((e.get("model") or {}).get(key)) for e in entries]

    return ViewsSeries(experiment=exp.name, views=[int(e["views"]) for e in entries], mpjpe_mm=col("mpjpe_mm"),
                       pa_mpjpe_mm=col("pa_mpjpe_mm"), reprojection_px=col("reprojection_mean_px"))


def views_series(results: Results) -> tuple[list[ViewsSeries], str]:
    series = [s for s in (_views(e) for e in results.experiments) if s is not None]
    return series, ("no multi-view experiment has eval/views_ablation.json "
                    "(smil evaluate --views-ablation on a multi-view model)")
