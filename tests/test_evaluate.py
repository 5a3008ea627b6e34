"""``smil evaluate``: the files a user reads after training, the baseline beside the model, the views
ablation, clear refusals, and a perfect predictor that scores a perfect score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from smil.cli import main

FAST = {
    "seed": 0,
    "deterministic": False,
    "data": {"image_size": 32, "batch_size": 4, "num_workers": 0, "augment": False, "epoch_fraction": 0.3},
    "model": {"backbone": "vit_tiny_patch16_224", "head": "transformer", "hidden_dim": 32, "head_depth": 1,
              "num_heads": 2, "dropout": 0.0, "ief_iterations": 2, "freeze_backbone": True},
    "optim": {"epochs": 1, "lr": 1e-3},
}


def trained_model(tmp_path_factory: pytest.TempPathFactory, tiny_data: dict, mode: str) -> Path:
    """A tiny model trained for one short epoch on the tiny dataset of its mode (trained once per session)."""
    from smil.config import load_config
    from smil.train.loop import Trainer

    root = tmp_path_factory.getbasetemp() / "evaluate_models"
    model = root / mode / "model.pt"
    if not model.is_file():
        cfg = json.loads(json.dumps(FAST))
        cfg["mode"] = mode
        cfg["body_model"] = str(tiny_data["body_model"])
        cfg["data"]["dataset"] = str(tiny_data["single" if mode == "singleview" else "multi"])
        path = root / f"{mode}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg))
        Trainer(load_config(path), root / mode).fit()
    return model


@pytest.fixture(scope="module")
def single_model(tmp_path_factory, tiny_data) -> Path:
    return trained_model(tmp_path_factory, tiny_data, "singleview")


@pytest.fixture(scope="module")
def multi_model(tmp_path_factory, tiny_data) -> Path:
    return trained_model(tmp_path_factory, tiny_data, "multiview")


def split_size(h5: Path, split: str = "test") -> int:
    from smil.data.store import open_dataset

    with open_dataset(h5) as r:
        return int(r.split_sizes()[split])


def assert_sane_block(block: dict) -> None:
    h = block["headline"]
    for key, value in h.items():
        if value is None:
            continue
        assert np.isfinite(value), key
        if key.startswith("pck") or key == "silhouette_iou":
            assert 0.0 <= value <= 1.0, key
        else:
            assert value >= 0.0, key
    for key in ("keypoints2d_mean_px", "pck_bbox_0.1", "mpjpe_mm", "pa_mpjpe_mm", "pa_mpvpe_mm", "silhouette_iou",
                "pck_silhouette_0.15", "camera_rotation_deg"):
        assert h[key] is not None, key  # the tiny synthetic data has every label


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def is_pdf(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:5] == b"%PDF-"


def test_singleview_evaluation_writes_metrics_tables_and_figures(tmp_path, tiny_data, single_model) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", str(single_model), str(tiny_data["single"]), "--out", str(out), "--overlays", "2",
                 "--quiet"])
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    n_test = split_size(tiny_data["single"])
    assert doc["split"] == "test" and doc["counts"]["items"] == n_test == doc["counts"]["samples"]
    assert doc["image_size"] == 32 and doc["stored_image_size"] == [64, 64]
    for name in ("model", "baseline"):
        assert_sane_block(doc[name])
        h = doc[name]["headline"]
        # units follow the dataset: mm = world units · world_unit_m · 1000; stored px = 2 × network px here
        assert h["mpjpe_mm"] == pytest.approx(h["mpjpe"] * doc["world_unit_m"] * 1000)
        assert h["keypoints2d_mean_stored_px"] == pytest.approx(2 * h["keypoints2d_mean_px"])
    assert set(doc["ratio_to_baseline"]) >= {"keypoints2d_mean_px", "mpjpe_mm"}
    assert doc["ratio_to_baseline"]["mpjpe_mm"] == pytest.approx(
        doc["model"]["headline"]["mpjpe_mm"] / doc["baseline"]["headline"]["mpjpe_mm"])

    joints = list(csv.DictReader(open(out / "per_joint.csv")))
    assert [r["joint"] for r in joints] == doc["joint_names"]
    assert {"model_2d_mean_px", "baseline_2d_mean_px", "model_pck_5px", "model_3d_mean_mm"} <= set(joints[0])
    pcks = [float(r["model_pck_5px"]) for r in joints if r["model_pck_5px"]]
    assert pcks and all(0 <= p <= 1 for p in pcks)
    samples = list(csv.DictReader(open(out / "per_sample.csv")))
    assert len(samples) == n_test and all(r["sample_id"].startswith("synth_") for r in samples)
    assert all(float(r["baseline_mpjpe_mm"]) >= 0 for r in samples)

    figs = out / "figures"
    for stem in ("pck_curve", "error_histogram", "per_joint_error"):
        assert is_png(figs / f"{stem}.png") and is_pdf(figs / f"{stem}.pdf")
    assert is_png(figs / "overlay_00.png") and is_png(figs / "overlay_01.png")
    assert not (figs / "overlay_02.png").exists()
    assert not list(out.rglob(".*.tmp"))  # nothing half-written left behind


def test_multiview_evaluation_and_views_ablation(tmp_path, tiny_data, multi_model) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", str(multi_model), str(tiny_data["multi"]), "--out", str(out), "--overlays", "1",
                 "--views-ablation", "--quiet"])
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    n = split_size(tiny_data["multi"])
    assert doc["mode"] == "multiview" and doc["counts"]["samples"] == n and doc["counts"]["images"] == 4 * n
    for name in ("model", "baseline"):
        assert_sane_block(doc[name])
        assert set(doc[name]["camera"]["per_view"]) == {"cam0", "cam1", "cam2", "cam3"}
        assert set(doc[name]["reprojection"]["per_view"]) == {"cam0", "cam1", "cam2", "cam3"}
    ablation = json.loads((out / "views_ablation.json").read_text())
    assert [e["views"] for e in ablation["entries"]] == [1, 2, 3, 4]
    assert [e["counts"]["images"] for e in ablation["entries"]] == [n, 2 * n, 3 * n, 4 * n]
    for e in ablation["entries"]:
        assert e["model"]["mpjpe_mm"] > 0 and e["baseline"]["mpjpe_mm"] > 0
        # the reprojection uses every valid view's ground truth whatever K, so entries compare
        assert e["counts"]["keypoints"] <= doc["counts"]["keypoints"]
    assert ablation["entries"][-1]["model"] == doc["model"]["headline"]
    figs = out / "figures"
    assert is_png(figs / "overlay_00.png") and not (figs / "overlay_01.png").exists()


def test_singleview_model_on_multiview_data_evaluates_every_view(tiny_data, single_model) -> None:
    from smil.evaluate.evaluate import evaluate, metrics_json
    from smil.evaluate.inference import load_trained

    ev = evaluate(load_trained(single_model), tiny_data["multi"], batch_size=8)
    doc = metrics_json(ev)
    n = split_size(tiny_data["multi"])
    assert doc["counts"]["items"] == 4 * n and doc["counts"]["samples"] == n
    assert set(doc["model"]["keypoints2d"]["per_view"]) == {"cam0", "cam1", "cam2", "cam3"}


def test_mismatched_model_and_dataset_exit_2_with_one_line(capsys, tmp_path, tiny_data, single_model,
                                                          multi_model) -> None:
    code = main(["evaluate", str(multi_model), str(tiny_data["single"]), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "rig" in err
    assert not (tmp_path / "a" / "metrics.json").exists()
    code = main(["evaluate", str(single_model), str(tiny_data["single"]), "--out", str(tmp_path / "b"),
                 "--views", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "multi-view" in err
    code = main(["evaluate", str(multi_model), str(tiny_data["multi"]), "--out", str(tmp_path / "c"),
                 "--views", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "between 1 and" in err


def test_perfect_predictor_scores_zero_error_and_a_shift_shows_in_mm(tiny_data, multi_model) -> None:
    from smil.evaluate.evaluate import context_for, evaluate_batches, ground_truth_outputs, metrics_json
    from smil.evaluate.inference import iterate_dataset, load_trained

    trained = load_trained(multi_model)
    ctx = context_for(trained, tiny_data["multi"])

    def perfect(batch):
        return ground_truth_outputs(ctx.body, batch)

    def shifted(batch):  # the perfect body moved by 0.5 world units along x, cameras still perfect
        out = perfect(batch)
        out["joints"] = out["joints"] + np.array([0.5, 0.0, 0.0])
        out["vertices"] = out["vertices"] + np.array([0.5, 0.0, 0.0])
        return out

    batches = iterate_dataset(trained, tiny_data["multi"], "test", batch_size=2)
    doc = metrics_json(evaluate_batches(batches, {"perfect": perfect, "shifted": shifted}, ctx))
    p, s = doc["perfect"]["headline"], doc["shifted"]["headline"]
    assert p["keypoints2d_mean_px"] < 1e-3 and p["reprojection_mean_px"] < 1e-3
    assert p["keypoints2d_mean_stored_px"] < 2e-3
    for key in ("pck_2px", "pck_2px_stored", "pck_bbox_0.05", "pck_silhouette_0.1"):
        assert p[key] == 1.0, key
    assert p["pck_silhouette_auc"] == pytest.approx(100 / 101)  # strict '<': α = 0 never passes
    assert p["mpjpe_mm"] < 1e-3 and p["pa_mpjpe_mm"] < 1e-3 and p["pa_mpvpe_mm"] < 1e-6
    assert p["camera_rotation_deg"] == 0 and p["camera_translation_mm"] == 0 and p["camera_fov_deg"] == 0
    assert p["silhouette_iou"] > 0.5  # 32 px renders of thin legs: limited by the resolution, not the pose
    mm = 0.5 * doc["world_unit_m"] * 1000
    assert s["mpjpe_mm"] == pytest.approx(mm, rel=1e-4)
    assert s["pa_mpjpe_mm"] < 1e-3 and s["pa_mpvpe_mm"] < 1e-6  # Procrustes removes a translation
    assert s["keypoints2d_mean_px"] > 1.0 and s["pck_bbox_0.05"] < 1.0
