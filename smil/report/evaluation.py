"""The report's evaluation part of an experiment: ``smil evaluate`` and ``smil benchmark`` outputs.

Reads the ``metrics.json`` layout documented in :mod:`smil.evaluate.evaluate` (``headline`` numbers
of the model and of the mean-pose baseline, per-view summaries), ``per_joint.csv``,
``views_ablation.json`` and the figures ``smil evaluate`` draws, and ``benchmark.json``.
"""

from __future__ import annotations

import re
from typing import Any

from smil.report import html as H
from smil.report.gather import ExperimentResults, finite

#: Headline key → (label, unit, True when higher is better). Keys not listed are shown by name.
HEADLINE_LABELS: dict[str, tuple[str, str]] = {
    "keypoints2d_mean_px": ("2D keypoint error, mean", "px (network input)"),
    "keypoints2d_median_px": ("2D keypoint error, median", "px (network input)"),
    "keypoints2d_mean_stored_px": ("2D keypoint error, mean", "px (stored image)"),
    "keypoints2d_median_stored_px": ("2D keypoint error, median", "px (stored image)"),
    "pck_silhouette_auc": ("PCK AUC, √(mask area), α ∈ [0, 1]", "fraction"),
    "reprojection_mean_px": ("reprojection error through the true cameras, mean", "px (network input)"),
    "reprojection_median_px": ("reprojection error through the true cameras, median", "px (network input)"),
    "mpjpe": ("MPJPE", "world units"),
    "mpjpe_mm": ("MPJPE", "mm"),
    "pa_mpjpe": ("PA-MPJPE", "world units"),
    "pa_mpjpe_mm": ("PA-MPJPE", "mm"),
    "pa_mpvpe": ("PA-MPVPE (mesh)", "world units"),
    "pa_mpvpe_mm": ("PA-MPVPE (mesh)", "mm"),
    "silhouette_iou": ("silhouette IoU", "fraction"),
    "camera_rotation_deg": ("camera rotation error", "degrees"),
    "camera_translation": ("camera translation error", "world units"),
    "camera_translation_mm": ("camera translation error", "mm"),
    "camera_fov_deg": ("field-of-view error", "degrees"),
}

_PCK = re.compile(r"^pck_(?:(?P<px>[\d.]+)px(?P<stored>_stored)?|bbox_(?P<bbox>[\d.]+)|silhouette_(?P<sil>[\d.]+))$")


def headline_label(key: str) -> tuple[str, str]:
    """A headline key as (label, unit)."""
    if key in HEADLINE_LABELS:
        return HEADLINE_LABELS[key]
    m = _PCK.match(key)
    if m:
        if m["px"]:
            return f"PCK@{m['px']} px", "fraction (stored image)" if m["stored"] else "fraction (network input)"
        if m["bbox"]:
            return f"PCK@{m['bbox']} × keypoint box", "fraction"
        return f"PCK@{m['sil']} × √(mask area)", "fraction"
    return key, ""


def headline_table(metrics: dict[str, Any]) -> str:
    model = (metrics.get("model") or {}).get("headline") or {}
    base = (metrics.get("baseline") or {}).get("headline") or {}
    ratio = metrics.get("ratio_to_baseline") or {}
    rows = []
    for key, value in model.items():
        if value is None and base.get(key) is None:
            continue
        label, unit = headline_label(key)
        rows.append([label, unit, value, base.get(key), ratio.get(key) if key in ratio else ""])
    return H.table(["metric", "unit", "model", "mean-pose baseline", "model / baseline (errors)"], rows)


def per_view_table(metrics: dict[str, Any]) -> str | None:
    model = metrics.get("model") or {}
    k2 = (model.get("keypoints2d") or {}).get("per_view") or {}
    rp = (model.get("reprojection") or {}).get("per_view") or {}
    cams = list(dict.fromkeys([*k2, *rp]))
    if len(cams) < 2:
        return None
    rows = [[c, (k2.get(c) or {}).get("mean"), (rp.get(c) or {}).get("mean"), (k2.get(c) or {}).get("count")]
            for c in cams]
    return H.table(["camera", "2D error, mean (px, network input)", "reprojection, mean (px)", "keypoints"], rows)


def views_table(doc: dict[str, Any]) -> str:
    rows = []
    for e in sorted(doc.get("entries") or [], key=lambda e: e.get("views", 0)):
        m, b = e.get("model") or {}, e.get("baseline") or {}
        rows.append([e.get("views"), m.get("keypoints2d_mean_px"), m.get("reprojection_mean_px"), m.get("mpjpe_mm"),
                     m.get("pa_mpjpe_mm"), b.get("mpjpe_mm"), (e.get("counts") or {}).get("samples")])
    return H.table(["views", "2D error (px)", "reprojection (px)", "MPJPE (mm)", "PA-MPJPE (mm)",
                    "baseline MPJPE (mm)", "samples"], rows)


PER_JOINT_COLUMNS = (
    ("model_2d_mean_px", "2D mean (px, network input)"),
    ("model_pck_bbox_0.1", "PCK@0.1 box"),
    ("model_reprojection_mean_px", "reprojection (px)"),
    ("model_3d_mean_mm", "3D (mm)"),
    ("model_pa_3d_mean_mm", "PA 3D (mm)"),
    ("baseline_2d_mean_px", "baseline 2D (px)"),
    ("baseline_pa_3d_mean_mm", "baseline PA 3D (mm)"),
)


def per_joint_table(rows: list[dict[str, Any]]) -> str:
    cols = [(k, label) for k, label in PER_JOINT_COLUMNS if k in rows[0]]
    return H.table(["joint", *(label for _, label in cols)], [[r.get("joint"), *(r.get(k) for k, _ in cols)]
                                                               for r in rows])


FIGURE_CAPTIONS = {
    "pck_curve": "PCK against a pixel threshold (network input) and a normalised threshold α, model and "
                 "mean-pose baseline; the legend gives each curve's AUC.",
    "error_histogram": "Distribution of per-keypoint 2D errors (px) and 3D joint errors (mm).",
    "per_joint_error": "Mean error per joint, 2D (px) and 3D (mm), model and baseline.",
}


def figure_caption(exp: str, stem: str) -> str:
    if stem.startswith("overlay_"):
        return (f"{exp}: evaluated image {stem.split('_')[-1]} with the predicted silhouette (blue), ground-truth "
                "keypoints (green) and predicted keypoints and skeleton (red).")
    return f"{exp}: " + FIGURE_CAPTIONS.get(stem, stem.replace("_", " ") + ".")


def benchmark_part(bench: dict[str, Any]) -> str:
    """Speed table from benchmark.json (``smil-benchmark`` format 1): one row per batch size."""
    params = bench.get("parameters") or {}
    meta = [
        ("device", f"{bench.get('device')} ({bench.get('device_name')})"),
        ("torch", bench.get("torch_version")),
        ("CPU threads", bench.get("cpu_threads")),
        ("network input (px)", bench.get("image_size")),
        ("parameters", params.get("total")),
        ("timed", bench.get("timed")),
        ("memory", (bench.get("memory") or {}).get("method")),
    ]
    rows = []
    for r in bench.get("throughput") or []:
        lat = r.get("latency_ms") or {}
        mem = finite(r.get("peak_memory_bytes"))
        rows.append([r.get("batch_size"), lat.get("median"), lat.get("p90"), r.get("samples_per_s"),
                     r.get("images_per_s"), None if mem is None else mem / 2**20])
    return "\n".join([
        H.key_value_table([(k, v) for k, v in meta if v is not None]),
        H.table(["batch size", "latency median (ms)", "latency p90 (ms)", "samples/s", "images/s",
                 "peak memory (MiB)"], rows),
    ])


def evaluation_part(exp: ExperimentResults) -> str:
    parts = []
    m = exp.metrics
    if m:
        counts = m.get("counts") or {}
        parts.append(H.paragraph(
            f"Split {m.get('split')} of {m.get('dataset_path')}: {counts.get('samples')} samples, "
            f"{counts.get('images')} images, {counts.get('keypoints')} keypoints; network input "
            f"{m.get('image_size')} px, stored images {'×'.join(str(s) for s in m.get('stored_image_size') or [])} px.",
            "meta"))
        parts.append(headline_table(m))
        pv = per_view_table(m)
        if pv:
            parts += ["<h4>Per camera</h4>", pv]
    if exp.views_ablation:
        parts += ["<h4>Error against the number of views</h4>", views_table(exp.views_ablation)]
    if exp.eval_figures:
        # Side by side: the compact figures, then the overlays; the tall per-joint figure alone.
        figs = sorted(exp.eval_figures, key=lambda p: (p.stem not in ("pck_curve", "error_histogram"), p.stem))
        pair = [p for p in figs if p.stem in ("pck_curve", "error_histogram")]
        alone = [p for p in figs if p not in pair and not p.stem.startswith("overlay_")]
        overlays = [p for p in figs if p.stem.startswith("overlay_")]
        if pair:
            parts.append('<div class="figures">' + "\n".join(H.figure(p, figure_caption(exp.name, p.stem))
                                                             for p in pair) + "</div>")
        parts += [H.figure(p, figure_caption(exp.name, p.stem)) for p in alone]
        if overlays:
            parts.append("<h4>Qualitative results</h4>")
            parts.append('<div class="figures">' + "\n".join(H.figure(p, figure_caption(exp.name, p.stem))
                                                             for p in overlays) + "</div>")
    if exp.per_joint:
        parts.append(H.details(f"per-joint errors ({len(exp.per_joint)} joints, per_joint.csv)",
                               per_joint_table(exp.per_joint)))
    if exp.benchmark:
        parts += ["<h4>Speed (smil benchmark)</h4>", benchmark_part(exp.benchmark)]
    if not parts:
        parts.append(H.paragraph("Not evaluated yet (no eval/metrics.json).", "note"))
    return "\n".join(parts)


def overview_row(exp: ExperimentResults) -> list[Any]:
    m = exp.metrics or {}
    h = (m.get("model") or {}).get("headline") or {}
    b = (m.get("baseline") or {}).get("headline") or {}
    return [
        exp.name, exp.mode, (exp.config or {}).get("model", {}).get("backbone"), m.get("split"),
        (m.get("counts") or {}).get("samples"), h.get("keypoints2d_mean_stored_px"), h.get("pck_bbox_0.1"),
        h.get("pck_silhouette_auc"), h.get("mpjpe_mm"), h.get("pa_mpjpe_mm"), b.get("pa_mpjpe_mm"),
        h.get("silhouette_iou"), best_throughput(exp.benchmark),
    ]


OVERVIEW_HEADERS = [
    "experiment", "mode", "backbone", "split", "samples", "2D error (px, stored)", "PCK@0.1 box",
    "PCK AUC (mask)", "MPJPE (mm)", "PA-MPJPE (mm)", "baseline PA-MPJPE (mm)", "IoU", "best throughput (samples/s)",
]


def best_throughput(bench: dict[str, Any] | None) -> float | None:
    """The highest ``samples_per_s`` over the batch sizes of benchmark.json (``None`` when there is none)."""
    values = [finite(r.get("samples_per_s")) for r in (bench or {}).get("throughput") or [] if isinstance(r, dict)]
    values = [v for v in values if v is not None]
    return max(values) if values else None
