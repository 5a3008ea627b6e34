"""Collect what the workflow wrote under a results folder, for the report and the figures.

The layout read here is the one the workflow writes (``workflow/rules/*.smk``)::

    results/experiments/{exp}/resolved_config.json     smil train
    results/experiments/{exp}/history.csv              smil train (one row per epoch)
    results/experiments/{exp}/loss_curves.png          smil train
    results/experiments/{exp}/eval/metrics.json        smil evaluate (model and mean-pose baseline)
    results/experiments/{exp}/eval/per_joint.csv       smil evaluate
    results/experiments/{exp}/eval/per_sample.csv      smil evaluate
    results/experiments/{exp}/eval/figures/*.png       smil evaluate
    results/experiments/{exp}/eval/views_ablation.json smil evaluate --views-ablation (multi-view)
    results/experiments/{exp}/eval/benchmark.json      smil benchmark
    results/datasets/{ds}/dataset.h5                   smil preprocess (read for `smil dataset info`)
    results/datasets/{ds}/preprocess_summary.json      smil preprocess
    results/datasets/{ds}/check_gt.json                smil check-gt
    results/inference/{run}/predictions.json, .npz      smil infer (overlay.mp4 optional)

Every file is optional except that an experiment or dataset named explicitly must have its folder.
A file that exists but cannot be read (invalid JSON, a CSV without a header) is a
:class:`~smil.errors.DataError` naming it: a report that silently drops a broken result would hide it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from smil.errors import DataError

EXPERIMENTS_DIR = "experiments"
DATASETS_DIR = "datasets"
INFERENCE_DIR = "inference"
#: The ``format`` of the JSON file ``smil infer`` writes beside its arrays (``PREFIX.json``).
INFERENCE_FORMAT = "smil-inference"


@dataclass
class ExperimentResults:
    """One experiment's training and evaluation outputs (``None`` / empty where not written)."""

    name: str
    path: Path
    config: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_curves: Path | None = None
    metrics: dict[str, Any] | None = None
    per_joint: list[dict[str, Any]] = field(default_factory=list)
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    eval_figures: list[Path] = field(default_factory=list)
    views_ablation: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None

    @property
    def mode(self) -> str | None:
        for source in (self.metrics, self.config):
            if source and isinstance(source.get("mode"), str):
                return source["mode"]
        return None


@dataclass
class DatasetResults:
    """One dataset's summaries: ``smil dataset info``, the preprocess summary and the GT check."""

    name: str
    path: Path
    info: dict[str, Any] | None = None
    preprocess_summary: dict[str, Any] | None = None
    check_gt: dict[str, Any] | None = None


@dataclass
class InferenceResults:
    """One inference run's folder: the JSON ``smil infer`` wrote (``summary``) and the files it holds."""

    name: str
    path: Path
    summary: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)


@dataclass
class Results:
    root: Path
    experiments: list[ExperimentResults]
    datasets: list[DatasetResults]
    inference: list[InferenceResults]


def read_json(path: Path) -> Any:
    """JSON from ``path``; ``NaN``/``Infinity`` literals are accepted (Python's json writes them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path=path) from None


def _optional_json(path: Path, expect: type = dict) -> Any:
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, expect):
        raise DataError(f"expected a JSON {expect.__name__}, got {type(data).__name__}", path=path)
    return data


def _cell(text: str | None) -> Any:
    """A CSV cell as int, float or str (empty = ``None``)."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV file with a header, values converted to numbers where they are numbers."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DataError("empty CSV file; expected a header row", path=path)
        rows = [{k: _cell(v) for k, v in row.items() if k is not None} for row in reader]
    return rows


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def gather_experiment(path: Path, name: str | None = None) -> ExperimentResults:
    exp = ExperimentResults(name=name or path.name, path=path)
    exp.config = _optional_json(path / "resolved_config.json")
    exp.history = read_csv_rows(path / "history.csv")
    exp.loss_curves = _existing(path / "loss_curves.png")
    ev = path / "eval"
    exp.metrics = _optional_json(ev / "metrics.json")
    exp.per_joint = read_csv_rows(ev / "per_joint.csv")
    exp.per_sample = read_csv_rows(ev / "per_sample.csv")
    if (ev / "figures").is_dir():
        exp.eval_figures = sorted((ev / "figures").glob("*.png"))
    exp.views_ablation = _optional_json(ev / "views_ablation.json")
    exp.benchmark = _optional_json(ev / "benchmark.json")
    return exp


def dataset_info(h5: Path) -> dict[str, Any] | None:
    """What ``smil dataset info --json`` prints for ``h5``, or ``None`` when the file is absent."""
    if not h5.is_file():
        return None
    from smil.data.store import open_dataset

    with open_dataset(h5) as ds:
        return ds.info()


def gather_dataset(path: Path, name: str | None = None) -> DatasetResults:
    ds = DatasetResults(name=name or path.name, path=path)
    ds.info = dataset_info(path / "dataset.h5")
    ds.preprocess_summary = _optional_json(path / "preprocess_summary.json")
    ds.check_gt = _optional_json(path / "check_gt.json")
    return ds


def gather_inference(path: Path) -> InferenceResults:
    run = InferenceResults(name=path.name, path=path)
    run.files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for candidate in sorted(path.glob("*.json")):
        doc = _optional_json(candidate)
        if doc.get("format") == INFERENCE_FORMAT:
            run.summary = doc
            break
    return run


def _select(parent: Path, names: Sequence[str] | None, what: str) -> list[tuple[str, Path]]:
    if names is None:
        if not parent.is_dir():
            return []
        return [(p.name, p) for p in sorted(parent.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    missing = [n for n in names if not (parent / n).is_dir()]
    if missing:
        raise DataError(f"no results for {what} {', '.join(missing)} (expected folder(s) {parent}/NAME)",
                        path=parent)
    return [(n, parent / n) for n in names]


def gather(
    root: str | Path,
    *,
    experiments: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    inference: Sequence[str] | None = None,
) -> Results:
    """Everything under ``root`` (a results folder); ``None`` for a list = every folder found there.

    Raises:
        DataError: ``root`` is not a folder, a named experiment or dataset has no folder, a file is
            unreadable, or there is nothing at all to report.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder; expected the workflow's results folder", path=root)
    exps = [gather_experiment(p, n) for n, p in _select(root / EXPERIMENTS_DIR, experiments, "experiment")]
    dss = [gather_dataset(p, n) for n, p in _select(root / DATASETS_DIR, datasets, "dataset")]
    runs = [gather_inference(p) for _, p in _select(root / INFERENCE_DIR, inference, "inference run")]
    if not exps and not dss:
        raise DataError(
            f"nothing to report: no {EXPERIMENTS_DIR}/NAME or {DATASETS_DIR}/NAME folders", path=root
        )
    return Results(root=root, experiments=exps, datasets=dss, inference=runs)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def lookup(data: Any, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``None`` where a key is missing."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
