"""The report's dataset section: ``smil dataset info``, the preprocess summary and ``smil check-gt``."""

from __future__ import annotations

from typing import Any

from smil.report import html as H
from smil.report.gather import DatasetResults


def _info(info: dict[str, Any]) -> str:
    attrs = info.get("attrs") or {}
    w, h = (info.get("image_size") or [None, None])[:2]
    splits = info.get("split_sizes") or {}
    cams = info.get("camera_names") or []
    rows = [
        ("samples (N)", info.get("num_samples")),
        ("views (V)", f"{info.get('num_views')}: {', '.join(cams)}" if cams else info.get("num_views")),
        ("joints (J)", info.get("num_joints")),
        ("stored image size (px)", f"{w}×{h}"),
        ("valid views", info.get("valid_views")),
        ("views with a mask", info.get("views_with_mask")),
        ("splits", ", ".join(f"{k} {v}" for k, v in splits.items())),
        ("source", attrs.get("source_kind")),
        ("world unit (m)", attrs.get("world_unit_m")),
        ("body model SHA-256", attrs.get("body_model_sha256") or "(none)"),
        ("written by smil", attrs.get("smil_version")),
    ]
    params = info.get("params") or {}
    if params:
        rows.append(("ground-truth parameters",
                     ", ".join(f"{n} in {p.get('present')}" for n, p in params.items())))
    return H.key_value_table(rows)


def _preprocess(summary: dict[str, Any]) -> str:
    rows = [
        ("samples in the manifest", summary.get("samples_in_manifest")),
        ("samples written", summary.get("samples_written")),
        ("samples skipped", summary.get("samples_skipped")),
        ("views written", summary.get("views_written")),
        ("masks written", summary.get("masks_written")),
        ("split groups", summary.get("groups")),
        ("seconds", summary.get("seconds")),
        ("samples per second", summary.get("samples_per_second")),
    ]
    body = H.key_value_table(rows)
    reasons = summary.get("skipped_by_reason") or {}
    if reasons:
        body += H.table(["reason a sample was skipped", "samples"], sorted(reasons.items()))
    return body


def _summary_row(label: str, s: dict[str, Any] | None, unit: str) -> list[Any]:
    s = s or {}
    return [label, unit, s.get("mean"), s.get("median"), s.get("max"), s.get("count"), s.get("count_infinite")]


def _check_gt(report: dict[str, Any]) -> str:
    parts = []
    if report.get("message"):
        parts.append(H.paragraph(report["message"], "note"))
    if report.get("body_model_matches_dataset") is False:
        parts.append(H.paragraph("The body model's SHA-256 differs from the one recorded in the dataset.", "warn"))
    rows = []
    k2 = report.get("keypoints2d")
    if k2:
        rows.append(_summary_row("2D reprojection", k2.get("all"), "px"))
    k3 = report.get("keypoints3d")
    if k3:
        rows.append(_summary_row("3D keypoints", k3.get("mm"), "mm"))
    kp = report.get("keypoints3d_procrustes")
    if kp:
        rows.append(_summary_row("3D after Procrustes", kp.get("mm"), "mm"))
    if rows:
        parts.append(H.table(["ground truth vs. stored keypoints", "unit", "mean", "median", "max", "points",
                              "behind a camera"], rows))
    if k2 and k2.get("per_view"):
        parts.append(H.table(["camera", "mean px", "max px", "points"],
                             [[v, s.get("mean"), s.get("max"), s.get("count")] for v, s in k2["per_view"].items()]))
    worst = report.get("worst_samples") or []
    if worst:
        parts.append(H.details(
            f"the {len(worst)} worst samples",
            H.table(["sample", "mean px", "max px", "behind a camera", "mean 3D mm"],
                    [[w.get("sample_id"), w.get("mean_px"), w.get("max_px"), w.get("points_behind_camera"),
                      w.get("mean_3d_mm")] for w in worst]),
        ))
    return "\n".join(parts)


def dataset_section(ds: DatasetResults) -> str:
    parts = [H.paragraph(f"Folder: {ds.path}", "meta")]
    if ds.info:
        parts += ["<h4>Contents (smil dataset info)</h4>", _info(ds.info)]
    if ds.preprocess_summary:
        parts += ["<h4>Preprocessing (smil preprocess)</h4>", _preprocess(ds.preprocess_summary)]
    if ds.check_gt:
        parts += ["<h4>Ground-truth check (smil check-gt)</h4>", _check_gt(ds.check_gt)]
    if len(parts) == 1:
        parts.append(H.paragraph("No dataset file, preprocess summary or ground-truth check was found.", "note"))
    return H.section(f"dataset-{ds.name}", f"Dataset {ds.name}", "\n".join(parts), level=3)


def check_gt_overview(datasets: list[DatasetResults]) -> str:
    """One row per dataset: size and the ground-truth check's headline numbers."""
    rows = []
    for ds in datasets:
        info, gt = ds.info or {}, ds.check_gt or {}
        k2 = (gt.get("keypoints2d") or {}).get("all") or {}
        k3 = (gt.get("keypoints3d") or {}).get("mm") or {}
        rows.append([ds.name, (info.get("attrs") or {}).get("source_kind"), info.get("num_samples"),
                     info.get("num_views"), info.get("num_joints"), k2.get("mean"), k3.get("mean")])
    return H.table(["dataset", "source", "samples", "views", "joints", "GT check 2D mean (px)",
                    "GT check 3D mean (mm)"], rows)
