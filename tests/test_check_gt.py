"""The ground-truth check (`smil check-gt`) on tiny datasets with exact, known ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_factory import look_at

from smil.body.model import SMILModel
from smil.cli import main
from smil.data.images import encode_jpeg
from smil.data.store import DatasetWriter, StoredSample
from smil.errors import DataError
from smil.evaluate.check_gt import check_ground_truth

SIZE = 256
NUM_VIEWS = 2


@pytest.fixture(scope="module")
def stick_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_STICK.pkl"


@pytest.fixture(scope="module")
def stick(stick_path: Path) -> SMILModel:
    return SMILModel.from_file(stick_path, dtype=torch.float64)


def random_params(model: SMILModel, rng: np.random.Generator) -> dict[str, np.ndarray]:
    J, nb = model.num_joints, model.num_betas
    return {
        "global_rot": rng.normal(scale=1.0, size=3),
        "joint_rot": rng.normal(scale=0.2, size=(J - 1, 3)),
        "betas": rng.normal(scale=0.5, size=nb),
        "trans": rng.normal(scale=10.0, size=3),
        "scale": np.asarray(rng.uniform(15.0, 25.0)),  # the model is ~2 units long: a 30-50 mm insect
        "log_beta_scales": rng.normal(scale=0.05, size=(J, 3)),
        "betas_trans": rng.normal(scale=0.01, size=(J, 3)),
    }


def pose(model: SMILModel, p: dict[str, np.ndarray]) -> np.ndarray:
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float32).astype(np.float64))[None] for k, v in p.items()}
    with torch.no_grad():
        out = model(betas=t["betas"], global_rot=t["global_rot"], joint_rot=t["joint_rot"], trans=t["trans"],
                    scale=t["scale"], joint_log_scales=t["log_beta_scales"], joint_trans=t["betas_trans"])
    return out.joints[0].numpy()


def make_gt_dataset(
    path: Path,
    model: SMILModel,
    *,
    num_samples: int = 6,
    without_params: tuple[int, ...] = (),
    unplaced: tuple[int, ...] = (),
    transpose_R: bool = False,
    joint_names: list[str] | None = None,
    wrong_betas: bool = False,
    seed: int = 0,
) -> Path:
    """Bodies posed with random parameters, seen by two cameras; keypoints projected exactly.

    World unit: millimetres. ``transpose_R`` stores each camera's Rᵀ instead of R (the keypoints stay
    correct): a convention error the check must expose.
    """
    rng = np.random.default_rng(seed)
    f = SIZE * 1.5
    K = np.array([[f, 0, (SIZE - 1) / 2], [0, f, (SIZE - 1) / 2], [0, 0, 1.0]])
    cams = [look_at(np.array([150.0 * np.cos(a), 150.0 * np.sin(a), 60.0])) for a in (0.3, 2.0)]
    image = encode_jpeg(np.full((SIZE, SIZE, 3), 80, np.uint8), 90)
    names = joint_names or list(model.joint_names)
    writer = DatasetWriter(path, joint_names=names, camera_names=["left", "right"], image_size=(SIZE, SIZE),
                           world_unit_m=0.001, source_kind="synthetic", body_model_sha256=model.sha256)
    with writer:
        for n in range(num_samples):
            params = random_params(model, rng)
            X = pose(model, params)
            kp2d = []
            for R, t in cams:
                c = X @ R.T + t
                uv = c @ K.T
                kp2d.append(uv[:, :2] / uv[:, 2:3])
            stored = {} if n in without_params else dict(params)
            if wrong_betas:
                stored["betas"] = np.zeros(model.num_betas + 2)
            if n in unplaced:
                stored.pop("trans")
                stored.pop("scale")
            Rs = np.stack([c[0].T if transpose_R else c[0] for c in cams])
            writer.append(StoredSample(
                sample_id=f"s{n}", group=f"g{n}", images=[image] * NUM_VIEWS, masks=[b""] * NUM_VIEWS,
                view_valid=np.ones(NUM_VIEWS, bool), K=np.stack([K] * NUM_VIEWS), R=Rs,
                t=np.stack([c[1] for c in cams]), keypoints2d=np.stack(kp2d),
                visibility=np.ones((NUM_VIEWS, len(names))), keypoints3d=X, params=stored,
            ))
        split = np.array([0, 0, 0, 1, 2, 2][:num_samples] + [0] * max(num_samples - 6, 0), dtype=np.uint8)
        writer.finish(split, split_seed=seed)
    return path


def test_exact_ground_truth_reproduces_keypoints(tmp_path: Path, stick: SMILModel, stick_path: Path) -> None:
    ds = make_gt_dataset(tmp_path / "gt.h5", stick)
    report = check_ground_truth(ds, stick_path)
    assert report["samples"] == {
        "selected": 6, "with_gt_pose": 6, "with_gt_placement": 6, "without_gt_pose": 0,
        "posed_without_placement": 0, "defaulted_to_zero": {"betas": 0, "log_beta_scales": 0, "betas_trans": 0},
    }
    k2 = report["keypoints2d"]["all"]
    assert k2["count"] == 6 * NUM_VIEWS * stick.num_joints and k2["count_infinite"] == 0
    assert k2["max"] < 1e-3 and k2["mean"] < 1e-3
    assert set(report["keypoints2d"]["per_view"]) == {"left", "right"}
    assert list(report["keypoints2d"]["per_joint"]) == stick.joint_names
    assert report["keypoints3d"]["mm"]["max"] < 1e-3
    assert report["keypoints3d_procrustes"]["mm"]["max"] < 1e-3
    assert report["body_model_matches_dataset"] is True
    assert len(report["worst_samples"]) == 6


def test_transposed_rotation_shows_as_large_errors(tmp_path: Path, stick: SMILModel, stick_path: Path) -> None:
    ds = make_gt_dataset(tmp_path / "bad.h5", stick, transpose_R=True)
    report = check_ground_truth(ds, stick_path)
    k2 = report["keypoints2d"]["all"]
    # the bodies span ~100 px in 256 px images: a wrong camera rotation moves joints by many pixels
    assert k2["count_infinite"] > 0 or k2["mean"] > 5.0
    assert report["worst_samples"][0]["mean_px"] > 5.0
    # 3D is camera-free and stays exact: the numbers point at the cameras, not the body
    assert report["keypoints3d"]["mm"]["max"] < 1e-3


def test_samples_without_parameters_are_counted(tmp_path: Path, stick: SMILModel, stick_path: Path) -> None:
    ds = make_gt_dataset(tmp_path / "some.h5", stick, without_params=(1, 4), unplaced=(2,))
    report = check_ground_truth(ds, stick_path)
    s = report["samples"]
    assert (s["with_gt_pose"], s["without_gt_pose"], s["with_gt_placement"], s["posed_without_placement"]) == (
        4, 2, 3, 1)
    assert report["keypoints2d"]["all"]["count"] == 3 * NUM_VIEWS * stick.num_joints
    assert report["keypoints2d"]["all"]["max"] < 1e-3
    # the unplaced sample still gets the (placement-free) Procrustes-aligned 3D error
    assert report["keypoints3d_procrustes"]["mm"]["count"] == 4 * stick.num_joints
    assert report["keypoints3d_procrustes"]["mm"]["max"] < 1e-3
    assert "2 without" in report["message"]

    test_only = check_ground_truth(ds, stick_path, split="test")  # samples 4, 5
    assert test_only["samples"]["selected"] == 2 and test_only["samples"]["with_gt_pose"] == 1


def test_dataset_without_parameters_says_so(tmp_path: Path, stick: SMILModel, stick_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ds = make_gt_dataset(tmp_path / "none.h5", stick, num_samples=3, without_params=(0, 1, 2))
    out = tmp_path / "out" / "metrics.json"
    assert main(["check-gt", str(ds), "--body-model", str(stick_path), "--out", str(out)]) == 0
    assert "no ground-truth body parameters" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["samples"]["without_gt_pose"] == 3
    assert report["keypoints2d"] is None and report["keypoints3d"] is None


def test_joint_names_must_match_the_body_model(tmp_path: Path, stick: SMILModel, stick_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    names = list(stick.joint_names)
    names[3], names[4] = names[4], names[3]
    ds = make_gt_dataset(tmp_path / "order.h5", stick, num_samples=2, joint_names=names)
    with pytest.raises(DataError, match="joint 3 is 'b_a_4' in the dataset but 'b_a_3'"):
        check_ground_truth(ds, stick_path)
    assert main(["check-gt", str(ds), "--body-model", str(stick_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "order.h5" in err[0] and "joint_names" in err[0]


def test_parameters_that_do_not_fit_the_model_are_an_error(tmp_path: Path, stick: SMILModel,
                                                           stick_path: Path) -> None:
    ds = make_gt_dataset(tmp_path / "betas.h5", stick, num_samples=2, wrong_betas=True)
    with pytest.raises(DataError, match=r"params/betas.*\(7,\).*expected \(5,\)"):
        check_ground_truth(ds, stick_path)


def test_cli_writes_report_and_gates_on_error(tmp_path: Path, stick: SMILModel, stick_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = make_gt_dataset(tmp_path / "good.h5", stick, num_samples=3)
    out = tmp_path / "good.json"
    assert main(["check-gt", str(good), "--body-model", str(stick_path), "--out", str(out),
                 "--max-mean-px", "0.01"]) == 0
    text = capsys.readouterr().out
    assert "checked 3 of 3 samples" in text and "2D keypoints  mean " in text and "over 330 points" in text
    report = json.loads(out.read_text())
    assert report["keypoints2d"]["all"]["max"] < 1e-3
    assert not list(tmp_path.glob(".good.json.*"))  # written atomically: no temporary left behind

    bad = make_gt_dataset(tmp_path / "bad.h5", stick, num_samples=3, transpose_R=True)
    assert main(["check-gt", str(bad), "--body-model", str(stick_path), "--max-mean-px", "1"]) == 1
    assert main(["check-gt", str(bad), "--body-model", str(stick_path)]) == 0  # no gate: report only
    assert main(["check-gt", str(tmp_path / "missing.h5"), "--body-model", str(stick_path)]) == 2
    assert "dataset file not found" in capsys.readouterr().err


def test_synthetic_pipeline_ground_truth_is_exact(tmp_path: Path, stick_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`smil synth` → `smil preprocess` (crop, resize) → `smil check-gt`: conventions agree end to end."""
    synth_dir = tmp_path / "synth"
    assert main(["synth", "--out", str(synth_dir), "--body-model", str(stick_path), "--num-samples", "3",
                 "--views", "2", "--image-size", "80"]) == 0
    ds = tmp_path / "ds.h5"
    assert main(["preprocess", str(synth_dir / "manifest.jsonl"), str(ds), "--image-size", "48", "--quiet"]) == 0
    capsys.readouterr()
    report = check_ground_truth(ds, stick_path)
    assert report["samples"]["with_gt_placement"] == 3
    assert report["keypoints2d"]["all"]["count"] > 0 and report["keypoints2d"]["all"]["max"] < 1e-3
    assert report["keypoints3d"]["mm"]["max"] < 1e-3
