"""Assemble the report page (``index.html``) from gathered results and the cross-experiment figures.

Order of the page: overview (one row per experiment, one per dataset), the cross-experiment figures,
one section per experiment (settings, training curves, evaluation against the mean-pose baseline,
evaluation figures, per-joint errors, speed), one section per dataset (contents, preprocessing,
ground-truth check), inference runs, and the list of files the page was built from.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

from smil import __version__
from smil.io_utils import write_text_atomic
from smil.report import FIGURE_NAMES
from smil.report import html as H
from smil.report.datasets import check_gt_overview, dataset_section
from smil.report.evaluation import OVERVIEW_HEADERS, evaluation_part, overview_row
from smil.report.figures import FigureResult, missing_reason
from smil.report.gather import ExperimentResults, InferenceResults, Results
from smil.report.training import training_part

FIGURE_TEXT = {
    "pck_curves": "PCK of every experiment (solid) and its mean-pose baseline (dashed), against a threshold in "
                  "pixels of the stored image (left) and a fraction α of the keypoints' bounding box (right), "
                  "at the thresholds smil evaluate records.",
    "per_joint_errors": "Mean 2D error per joint in pixels of the stored image (top) and, where the data has 3D "
                        "keypoints, the Procrustes-aligned 3D error in mm (bottom); joints in body-model order.",
    "error_vs_views": "Multi-view models given only their first 1, 2, …, V views: 3D joint error (MPJPE solid, "
                      "PA-MPJPE dashed, mm) and reprojection error through the true cameras (px).",
}
FIGURE_TITLES = {
    "pck_curves": "PCK curves",
    "per_joint_errors": "Per-joint errors",
    "error_vs_views": "3D error against the number of views",
}


def _experiment_section(exp: ExperimentResults) -> str:
    body = [H.paragraph(f"Folder: {exp.path}", "meta"), "<h4>Training</h4>", training_part(exp),
            "<h4>Evaluation</h4>", evaluation_part(exp)]
    return H.section(f"experiment-{exp.name}", f"Experiment {exp.name}", "\n".join(body), level=3)


def _inference_section(runs: Sequence[InferenceResults]) -> str:
    rows = []
    for run in runs:
        s = run.summary or {}
        model = s.get("model") or {}
        source = s.get("source") or {}
        smoothing = s.get("smoothing")
        rows.append([run.name, model.get("mode"), Path(str(model.get("path", ""))).parent.name or None,
                     f"{source.get('kind', '')} {source.get('path', '')}".strip() or None, s.get("num_frames"),
                     s.get("num_views"), "yes" if smoothing else "no",
                     ", ".join(p.name for p in run.files)])
    return H.table(["run", "mode", "experiment", "input", "frames", "views", "smoothed", "files"], rows)


def _figures_section(results: Results, figures: Sequence[FigureResult]) -> str:
    by_name = {f.name: f for f in figures}
    parts = []
    for name in FIGURE_NAMES:
        f = by_name.get(name)
        if f is not None and f.png is not None:
            files = f.png.name + (f" and {f.pdf.name}" if f.pdf is not None else "")
            parts.append(H.figure(f.png, f"{FIGURE_TITLES[name]}. {FIGURE_TEXT[name]} ({files})"))
        else:
            why = f.skipped if f is not None and f.skipped else missing_reason(results, name) or "not drawn"
            parts.append(H.paragraph(f"{FIGURE_TITLES[name]}: not drawn, {why}.", "note"))
    return "\n".join(parts)


def _sources(results: Results) -> list[str]:
    files = []
    for exp in results.experiments:
        for rel in ("resolved_config.json", "history.csv", "loss_curves.png", "eval/metrics.json",
                    "eval/per_joint.csv", "eval/per_sample.csv", "eval/views_ablation.json", "eval/benchmark.json"):
            if (exp.path / rel).is_file():
                files.append(str(exp.path / rel))
        files += [str(p) for p in exp.eval_figures]
    for ds in results.datasets:
        for rel in ("dataset.h5", "preprocess_summary.json", "check_gt.json"):
            if (ds.path / rel).is_file():
                files.append(str(ds.path / rel))
    for run in results.inference:
        files += [str(p) for p in run.files]
    return files


def render(results: Results, figures: Sequence[FigureResult], title: str = "SMIL pipeline report",
           generated: _dt.datetime | None = None) -> str:
    """The report page as one HTML string (every figure embedded)."""
    when = (generated or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    nav = ['<li><a href="#overview">Overview</a></li>']
    if results.experiments:
        nav.append('<li><a href="#figures">Figures across experiments</a></li>')
    nav += [f'<li><a href="#experiment-{H.esc(e.name)}">Experiment {H.esc(e.name)}</a></li>' for e in results.experiments]
    nav += [f'<li><a href="#dataset-{H.esc(d.name)}">Dataset {H.esc(d.name)}</a></li>' for d in results.datasets]
    if results.inference:
        nav.append('<li><a href="#inference">Inference</a></li>')
    body = [
        f"<h1>{H.esc(title)}</h1>",
        H.paragraph(f"Results folder {results.root.resolve()}; generated {when} by smil {__version__}: "
                    f"{len(results.experiments)} experiment(s), {len(results.datasets)} dataset(s), "
                    f"{len(results.inference)} inference run(s).", "meta"),
        "<nav><ul>" + "".join(nav) + "</ul></nav>",
    ]
    overview: list[str] = []
    if results.experiments:
        overview += ["<h3>Experiments (model on the evaluated split)</h3>",
                     H.table(OVERVIEW_HEADERS, [overview_row(e) for e in results.experiments]),
                     H.paragraph("Errors are means over the evaluated samples; PCK values are fractions; "
                                 "definitions in docs/metrics.md.", "note")]
    if results.datasets:
        overview += ["<h3>Datasets</h3>", check_gt_overview(results.datasets)]
    body.append(H.section("overview", "Overview", "\n".join(overview)))
    if results.experiments:
        body.append(H.section("figures", "Figures across experiments", _figures_section(results, figures)))
        body.append(H.section("experiments", "Experiments",
                              "\n".join(_experiment_section(e) for e in results.experiments)))
    if results.datasets:
        body.append(H.section("datasets", "Datasets", "\n".join(dataset_section(d) for d in results.datasets)))
    if results.inference:
        body.append(H.section("inference", "Inference runs (smil infer)", _inference_section(results.inference)))
    files = _sources(results)
    body.append(H.section("sources", "Files this report was built from",
                          H.details(f"{len(files)} files", "<ul>" + "".join(f"<li><code>{H.esc(f)}</code></li>"
                                                                              for f in files) + "</ul>")))
    return H.page(title, "\n".join(body))


def write_report(results: Results, figures: Sequence[FigureResult], path: str | Path, **kw: Any) -> Path:
    """Render and write the page atomically; returns its path."""
    path = Path(path)
    write_text_atomic(path, render(results, figures, **kw))
    return path
