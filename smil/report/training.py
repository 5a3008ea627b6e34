"""The report's training part of an experiment: its settings, its history and its loss curves."""

from __future__ import annotations

from typing import Any

from smil.report import html as H
from smil.report.gather import ExperimentResults, finite, lookup

#: (label, dotted key in resolved_config.json) shown for every experiment.
CONFIG_ROWS = (
    ("mode", "mode"),
    ("description", "description"),
    ("backbone", "model.backbone"),
    ("head", "model.head"),
    ("IEF iterations", "model.ief_iterations"),
    ("keypoint heatmaps", "model.keypoint_heatmaps"),
    ("camera mode (multi-view)", "model.camera_mode"),
    ("triangulated keypoints (multi-view)", "model.triangulate_keypoints"),
    ("input size (px)", "data.image_size"),
    ("batch size", "data.batch_size"),
    ("epochs", "optim.epochs"),
    ("learning rate", "optim.lr"),
    ("seed", "seed"),
    ("dataset", "data.dataset"),
    ("body model", "body_model"),
)


def best_epoch(exp: ExperimentResults) -> tuple[int | None, float | None, str]:
    """The epoch with the lowest value of the config's ``best_metric`` in ``history.csv``."""
    metric = (exp.config or {}).get("best_metric") or "val/keypoints2d_px"
    best: tuple[int | None, float | None] = (None, None)
    for row in exp.history:
        value = finite(row.get(metric))
        if value is not None and (best[1] is None or value < best[1]):
            best = (row.get("epoch"), value)
    return best[0], best[1], metric


def config_table(exp: ExperimentResults) -> str:
    cfg = exp.config or {}
    rows = [(label, lookup(cfg, key)) for label, key in CONFIG_ROWS if lookup(cfg, key) not in (None, "")]
    return H.key_value_table(rows)


def history_table(history: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    return H.table(keys, [[row.get(k) for k in keys] for row in history])


def training_part(exp: ExperimentResults) -> str:
    parts = []
    if exp.config:
        parts += ["<h4>Settings (resolved_config.json)</h4>", config_table(exp)]
    if exp.history:
        epoch, value, metric = best_epoch(exp)
        last = exp.history[-1]
        text = f"{len(exp.history)} epochs trained"
        if epoch is not None:
            text += f"; best {metric} = {H.fmt(value)} at epoch {epoch} (the weights in model.pt)"
        if finite(last.get("seconds")) is not None:
            total = sum(finite(r.get("seconds")) or 0.0 for r in exp.history)
            text += f"; {H.fmt(total, 3)} s of training in all"
        parts.append(H.paragraph(text))
    if exp.loss_curves:
        parts.append(H.figure(exp.loss_curves, f"{exp.name}: training and validation losses (log scale) "
                              "and the validation 2D keypoint error per epoch."))
    if exp.history:
        parts.append(H.details("every epoch (history.csv)", history_table(exp.history)))
    if not parts:
        parts.append(H.paragraph("No training outputs (resolved_config.json, history.csv) were found.", "note"))
    return "\n".join(parts)
