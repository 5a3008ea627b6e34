"""The ground-truth check: do a dataset's stored body parameters and cameras reproduce its keypoints?

For every sample with ground-truth pose parameters, the body model is posed with the stored
parameters (``params/*``, axis-angle rotations) and its joints are

* projected through the stored cameras (``K, R, t`` per valid view) and compared with the stored 2D
  keypoints (pixels, where ``visibility > 0``), and
* compared with the stored 3D keypoints (world units and millimetres, where finite), directly and after
  a similarity Procrustes alignment.

An ingest that gets a convention wrong (a transposed rotation, a flipped axis, centimetres read as
metres, a joint order that differs from the model's) shows up here as large numbers, before anything
is trained on it. Definitions of the statistics are in ``docs/metrics.md``.

Which samples count:

* **posed**: ``global_rot`` and ``joint_rot`` are present (``params/has_*`` true). Missing ``betas``,
  ``log_beta_scales`` and ``betas_trans`` default to zeros (the report counts how often).
* **placed**: posed, and ``trans`` and ``scale`` are present. Only placed samples have absolute
  errors (2D reprojection and 3D in the world frame); every posed sample with 3D keypoints gets the
  Procrustes-aligned 3D error, which needs no placement.
* Samples without ground-truth pose are counted and reported, not errors. A dataset without any gives a
  report that says so.

The dataset's joint names must equal the body model's, in order; otherwise this is a
:class:`~smil.errors.DataError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from smil.data import schema as S
from smil.data.store import DatasetReader, open_dataset
from smil.errors import DataError
from smil.evaluate.metrics import (
    error_summary,
    joint_distances,
    pa_joint_distances,
    reprojection_distances,
    summaries_along,
    units_to_mm,
)

__all__ = ["POSE_PARAMS", "PLACEMENT_PARAMS", "DEFAULTED_PARAMS", "check_ground_truth", "format_report"]

#: Parameters a sample needs to be checked at all.
POSE_PARAMS = ("global_rot", "joint_rot")
#: Parameters that place the body in the world; absolute errors need both.
PLACEMENT_PARAMS = ("trans", "scale")
#: Parameters that default to zeros when a posed sample lacks them.
DEFAULTED_PARAMS = ("betas", "log_beta_scales", "betas_trans")

SPLIT_CHOICES = ("all", *S.SPLIT_NAMES)


def _check_joint_names(reader: DatasetReader, model_names: list[str], model_label: str) -> None:
    ds_names = list(reader.joint_names)
    if ds_names == model_names:
        return
    if len(ds_names) != len(model_names):
        detail = f"the dataset has {len(ds_names)} joints, the body model {model_label} has {len(model_names)}"
    else:
        i = next(k for k, (a, b) in enumerate(zip(ds_names, model_names)) if a != b)
        detail = f"joint {i} is {ds_names[i]!r} in the dataset but {model_names[i]!r} in the body model {model_label}"
    raise DataError(
        f"{detail}; expected the body model's joint names in its order "
        f"({', '.join(model_names[:6])}{', …' if len(model_names) > 6 else ''})",
        path=reader.path, field=S.ATTR_JOINT_NAMES,
    )


def _check_param_shapes(reader: DatasetReader, model: Any) -> None:
    J, nb = model.num_joints, model.num_betas
    expect = {
        "global_rot": (3,), "joint_rot": (J - 1, 3), "betas": (nb,), "trans": (3,), "scale": (),
        "log_beta_scales": (J, 3), "betas_trans": (J, 3),
    }
    for name in reader.param_names:
        got = tuple(reader.param_shapes[name])
        if name in expect and got != expect[name]:
            raise DataError(
                f"per-sample shape {got} does not match the body model {model.name} (expected {expect[name]})",
                path=reader.path, field=S.param_path(name),
            )


def _has(reader: DatasetReader, name: str) -> np.ndarray:
    flags = reader.has_params.get(name)
    return np.zeros(reader.num_samples, dtype=bool) if flags is None else np.asarray(flags, dtype=bool)


def _read_params(reader: DatasetReader, lo: int, hi: int, rows: np.ndarray, model: Any) -> dict[str, np.ndarray]:
    """Body parameters of samples ``rows`` (absolute indices in ``[lo, hi)``), defaults filled in."""
    import torch

    J, nb, n = model.num_joints, model.num_betas, len(rows)
    defaults = {
        "betas": np.zeros((n, nb)), "log_beta_scales": np.zeros((n, J, 3)), "betas_trans": np.zeros((n, J, 3)),
        "trans": np.zeros((n, 3)), "scale": np.ones(n),
    }
    out: dict[str, Any] = {}
    h5 = reader.h5
    for name in (*POSE_PARAMS, *DEFAULTED_PARAMS, *PLACEMENT_PARAMS):
        if name in reader.param_names:
            values = np.asarray(h5[S.param_path(name)][lo:hi], dtype=np.float64)[rows - lo]
            if name in defaults:
                has = _has(reader, name)[rows]
                values = np.where(has.reshape((n,) + (1,) * (values.ndim - 1)), values, defaults[name])
        else:
            values = defaults[name]
        out[name] = torch.from_numpy(np.ascontiguousarray(values))
    return out


def check_ground_truth(
    dataset: str | Path,
    body_model: str | Path,
    *,
    split: str = "all",
    batch_size: int = 64,
    worst: int = 10,
) -> dict[str, Any]:
    """Run the ground-truth check and return a JSON-ready report (see the module docstring).

    Args:
        dataset: an HDF5 dataset written by ``smil preprocess`` (or ``smil synth``).
        body_model: the SMIL model file the dataset's parameters belong to.
        split: ``"all"`` or one of ``train``, ``val``, ``test``.
        batch_size: samples per body-model forward.
        worst: how many of the worst samples (largest mean 2D error) to list.

    Raises:
        DataError: unreadable dataset, joint names that differ from the model's, parameter shapes that
            do not fit the model, or an unknown split.
        ModelFileError: an unreadable body model file.
    """
    import torch

    from smil.body.model import SMILModel

    if split not in SPLIT_CHOICES:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLIT_CHOICES)}", field="split")
    model = SMILModel.from_file(body_model, dtype=torch.float64).eval()
    with open_dataset(dataset) as reader:
        _check_joint_names(reader, list(model.joint_names), model.name)
        _check_param_shapes(reader, model)
        selected = (np.arange(reader.num_samples, dtype=np.int64) if split == "all"
                    else reader.split_indices(split))
        in_split = np.zeros(reader.num_samples, dtype=bool)
        in_split[selected] = True
        posed = in_split & _has(reader, POSE_PARAMS[0]) & _has(reader, POSE_PARAMS[1])
        placed = posed & _has(reader, PLACEMENT_PARAMS[0]) & _has(reader, PLACEMENT_PARAMS[1])

        V, J = reader.num_views, reader.num_joints
        err2d = np.full((reader.num_samples, V, J), np.nan)
        err3d = np.full((reader.num_samples, J), np.nan)
        err3d_pa = np.full((reader.num_samples, J), np.nan)
        h5 = reader.h5
        step = max(int(batch_size), 1)
        for lo in range(0, reader.num_samples, step):
            hi = min(lo + step, reader.num_samples)
            rows = np.flatnonzero(posed[lo:hi]) + lo
            if rows.size == 0:
                continue
            p = _read_params(reader, lo, hi, rows, model)
            with torch.no_grad():
                joints = model.forward_params(p).joints.numpy()
            kp3d = np.asarray(h5[S.KEYPOINTS3D][lo:hi], dtype=np.float64)[rows - lo]
            err3d_pa[rows] = pa_joint_distances(joints, kp3d)
            sel = placed[rows]
            if sel.any():
                r = rows[sel]
                K = np.asarray(h5[S.K][lo:hi], dtype=np.float64)[r - lo]
                R = np.asarray(h5[S.R][lo:hi], dtype=np.float64)[r - lo]
                t = np.asarray(h5[S.T][lo:hi], dtype=np.float64)[r - lo]
                kp2d = np.asarray(h5[S.KEYPOINTS2D][lo:hi], dtype=np.float64)[r - lo]
                vis = np.asarray(h5[S.VISIBILITY][lo:hi], dtype=np.float64)[r - lo] > 0
                vis &= reader.view_valid[r][:, :, None]
                err2d[r] = reprojection_distances(joints[sel], K, R, t, kp2d, vis)
                err3d[r] = joint_distances(joints[sel], kp3d[sel])

        report = _build_report(reader, model, split, selected, posed, placed, err2d, err3d, err3d_pa, worst)
    report["dataset"] = str(dataset)
    report["body_model"] = str(body_model)
    return report


def _build_report(
    reader: DatasetReader, model: Any, split: str, selected: np.ndarray, posed: np.ndarray,
    placed: np.ndarray, err2d: np.ndarray, err3d: np.ndarray, err3d_pa: np.ndarray, worst: int,
) -> dict[str, Any]:
    unit = reader.world_unit_m
    n_posed, n_placed = int(posed.sum()), int(placed.sum())
    defaulted = {name: int((posed & ~_has(reader, name)).sum()) for name in DEFAULTED_PARAMS}
    ds_sha = reader.body_model_sha256 or None
    report: dict[str, Any] = {
        "split": split,
        "world_unit_m": unit,
        "body_model_sha256": model.sha256,
        "dataset_body_model_sha256": ds_sha,
        "body_model_matches_dataset": None if ds_sha is None else ds_sha == model.sha256,
        "samples": {
            "selected": int(selected.size),
            "with_gt_pose": n_posed,
            "with_gt_placement": n_placed,
            "without_gt_pose": int(selected.size) - n_posed,
            "posed_without_placement": n_posed - n_placed,
            "defaulted_to_zero": defaulted,
        },
        "keypoints2d": None,
        "keypoints3d": None,
        "keypoints3d_procrustes": None,
        "worst_samples": [],
    }
    if n_posed == 0:
        report["message"] = (
            f"no ground-truth body parameters to check: none of the {selected.size} selected samples has "
            f"{' and '.join(POSE_PARAMS)}"
        )
        return report
    joint_names = list(model.joint_names)
    e2 = err2d[placed]
    if n_placed and (~np.isnan(e2)).any():
        report["keypoints2d"] = {
            "unit": "px",
            "all": error_summary(e2),
            "per_view": summaries_along(e2, 1, reader.camera_names),
            "per_joint": summaries_along(e2, 2, joint_names),
        }
    e3 = err3d[placed]
    if n_placed and (~np.isnan(e3)).any():
        report["keypoints3d"] = {
            "world_units": error_summary(e3),
            "mm": error_summary(units_to_mm(e3, unit)),
            "per_joint_mm": summaries_along(units_to_mm(e3, unit), 1, joint_names),
        }
    ep = err3d_pa[posed]
    if (~np.isnan(ep)).any():
        report["keypoints3d_procrustes"] = {
            "world_units": error_summary(ep),
            "mm": error_summary(units_to_mm(ep, unit)),
        }
    report["worst_samples"] = _worst(reader, placed, err2d, err3d, unit, worst)
    report["message"] = _message(report)
    return report


def _worst(reader: DatasetReader, placed: np.ndarray, err2d: np.ndarray, err3d: np.ndarray,
           unit: float, k: int) -> list[dict[str, Any]]:
    rows = np.flatnonzero(placed)
    if rows.size == 0 or k <= 0:
        return []
    flat = err2d[rows].reshape(rows.size, -1)
    behind = np.isinf(flat).sum(1)
    mean2d = np.array([error_summary(f)["mean"] or 0.0 for f in flat])
    order = np.lexsort((-mean2d, -behind))[:k]  # points behind a camera first, then the largest mean
    out = []
    for i in order:
        s3 = error_summary(units_to_mm(err3d[rows[i]], unit))
        s2 = error_summary(flat[i])
        out.append({
            "sample_id": str(reader.sample_id[rows[i]]),
            "index": int(rows[i]),
            "mean_px": s2["mean"],
            "max_px": s2["max"],
            "points_behind_camera": int(behind[i]),
            "mean_3d_mm": s3["mean"],
        })
    return out


def _message(report: dict[str, Any]) -> str:
    s = report["samples"]
    parts = [f"checked {s['with_gt_pose']} of {s['selected']} samples with ground-truth pose"]
    if s["without_gt_pose"]:
        parts.append(f"{s['without_gt_pose']} without")
    if s["posed_without_placement"]:
        parts.append(f"{s['posed_without_placement']} without trans/scale (Procrustes-aligned 3D only)")
    return "; ".join(parts)


def _fmt(x: float | None) -> str:
    """Four significant digits, so an exact ground truth shows its 1e-6 px residual instead of 0.000."""
    return "n/a" if x is None else f"{x:.4g}"


def format_report(report: dict[str, Any]) -> str:
    """A short plain-text summary of :func:`check_ground_truth`'s report."""
    lines = [f"{report['dataset']} ({report['split']}): {report['message']}"]
    k2 = report.get("keypoints2d")
    if k2:
        a = k2["all"]
        line = (f"  2D keypoints  mean {_fmt(a['mean'])} px, median {_fmt(a['median'])} px, "
                f"max {_fmt(a['max'])} px over {a['count']} points")
        if a["count_infinite"]:
            line += f"; {a['count_infinite']} behind a camera"
        lines.append(line)
        for view, v in k2["per_view"].items():
            lines.append(f"    {view:<12} mean {_fmt(v['mean'])} px, max {_fmt(v['max'])} px")
    k3 = report.get("keypoints3d")
    if k3:
        a = k3["mm"]
        lines.append(f"  3D keypoints  mean {_fmt(a['mean'])} mm, median {_fmt(a['median'])} mm, "
                     f"max {_fmt(a['max'])} mm ({_fmt(k3['world_units']['mean'])} world units mean)")
    kp = report.get("keypoints3d_procrustes")
    if kp:
        lines.append(f"  3D after Procrustes  mean {_fmt(kp['mm']['mean'])} mm")
    if report.get("body_model_matches_dataset") is False:
        lines.append("  note: the body model's SHA-256 differs from the one recorded in the dataset")
    return "\n".join(lines)
