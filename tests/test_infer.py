"""`smil infer`: inputs (image folder, video, session of videos, HDF5), outputs in original-frame pixels,
overlay video, and temporal smoothing that treats rotations as rotations."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from smil.cli import main
from smil.config import load_config
from smil.data.calibration import CameraCalibration, write_calibration_toml
from smil.data.store import open_dataset
from smil.errors import DataError
from smil.evaluate.infer import InferOptions
from smil.evaluate.infer import infer as run_infer
from smil.evaluate.inference import load_trained
from smil.evaluate.smoothing import (
    SmoothingSettings,
    gaussian_window,
    smooth_parameters,
    smooth_rotations,
    smooth_values,
)
from smil.geometry.rotations import axis_angle_to_matrix, geodesic_angle, matrix_to_axis_angle
from smil.train.loop import Trainer

TINY = {
    "seed": 0,
    "data": {"image_size": 32, "batch_size": 4, "num_workers": 0, "augment": False, "epoch_fraction": 0.25},
    "model": {"backbone": "vit_tiny_patch16_224", "head": "mlp", "hidden_dim": 32, "head_depth": 1,
              "num_heads": 2, "dropout": 0.0, "ief_iterations": 1},
    "optim": {"epochs": 1, "lr": 1e-3},
}
FPS = 12.5
CANVAS = (96, 64)  # (W, H): wider than tall, so the full-frame crop pads top and bottom


# ----------------------------------------------------------------------------------------------
# fixtures


def _train(tmp: Path, tiny_data: dict, mode: str) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["mode"] = mode
    cfg["body_model"] = str(tiny_data["body_model"])
    cfg["data"]["dataset"] = str(tiny_data["single" if mode == "singleview" else "multi"])
    path = tmp / f"{mode}.json"
    path.write_text(json.dumps(cfg))
    Trainer(load_config(path), tmp / mode).fit()
    return tmp / mode / "model.pt"


@pytest.fixture(scope="module")
def models(tiny_data: dict, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("infer_models")
    return {"single": _train(tmp, tiny_data, "singleview"), "multi": _train(tmp, tiny_data, "multiview")}


@pytest.fixture(scope="module")
def loaded(models: dict[str, Path]) -> dict:
    """The same models loaded once, for tests that call the Python API (the CLI tests load them)."""
    return {k: load_trained(v) for k, v in models.items()}


def _ant(tiny_data: dict, i: int) -> np.ndarray:
    with open_dataset(tiny_data["single"]) as r:
        return r.get_sample(i)["images"][0]


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def frames(tiny_data: dict, tmp_path_factory) -> dict[str, Path]:
    """Six 96×64 frames (a 64×64 ant image in the middle) as PNGs named f0…f4, f10, and as an mp4."""
    tmp = tmp_path_factory.mktemp("infer_frames")
    folder = tmp / "pngs"
    folder.mkdir()
    video = tmp / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, CANVAS)
    for n, name in enumerate(["f0", "f1", "f2", "f3", "f4", "f10"]):
        canvas = np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8)
        canvas[:, 16:80] = _ant(tiny_data, n)
        cv2.imwrite(str(folder / f"{name}.png"), _bgr(canvas))
        writer.write(_bgr(canvas))
    writer.release()
    return {"folder": folder, "video": video}


def infer(*args: str | Path) -> None:
    assert main(["infer", *map(str, args), "--quiet"]) == 0


def load(prefix: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(prefix.with_suffix(".npz")) as d:
        arrays = {k: d[k] for k in d.files}
    return arrays, json.loads(prefix.with_suffix(".json").read_text())


def reproject(a: dict[str, np.ndarray]) -> np.ndarray:
    """Project joints3d through the written K, R, t: (F, V, J, 2)."""
    K, R, t = (a[k].astype(np.float64) for k in ("K", "R", "t"))
    X = a["joints3d"].astype(np.float64)
    if X.ndim == 3:
        X = np.repeat(X[:, None], K.shape[1], axis=1)
    Xc = np.einsum("fvij,fvnj->fvni", R, X) + t[:, :, None]
    uv = np.einsum("fvij,fvnj->fvni", K, Xc)
    return uv[..., :2] / uv[..., 2:]


def count_frames(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def assert_rotations(R: np.ndarray, tol: float = 1e-4) -> None:
    R = R.astype(np.float64).reshape(-1, 3, 3)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=tol)
    assert np.allclose(np.linalg.det(R), 1.0, atol=tol)


# ----------------------------------------------------------------------------------------------
# image folders and videos


def test_image_folder_gives_parameters_and_keypoints_in_frame_pixels(models, frames, tmp_path, tiny_data):
    out = tmp_path / "res"
    infer(models["single"], frames["folder"], "--out", out)
    a, meta = load(out)
    F, J = 6, len(meta["joint_names"])
    assert a["global_rot"].shape == (F, 3) and a["global_rot_matrix"].shape == (F, 3, 3)
    assert a["joint_rot"].shape == (F, J - 1, 3) and a["joint_rot_matrix"].shape == (F, J - 1, 3, 3)
    assert a["joints3d"].shape == (F, J, 3) and a["keypoints2d"].shape == (F, 1, J, 2)
    for key in ("betas", "trans", "scale", "log_beta_scales", "betas_trans", "fov", "cam_rot", "cam_trans"):
        assert key in a and np.isfinite(a[key]).all(), key
    assert_rotations(a["global_rot_matrix"])
    assert_rotations(a["joint_rot_matrix"])
    aa = torch.from_numpy(a["global_rot"].astype(np.float64))
    assert np.allclose(axis_angle_to_matrix(aa).numpy(), a["global_rot_matrix"], atol=1e-5)
    # the full-frame crop pads the 96×64 frame to 96×96: the principal point is the frame's centre
    W, H = CANVAS
    assert np.allclose(a["K"][:, 0, 0, 2], (W - 1) / 2, atol=1e-3)
    assert np.allclose(a["K"][:, 0, 1, 2], (H - 1) / 2, atol=1e-3)
    assert np.allclose(reproject(a), a["keypoints2d"], atol=1e-2)
    # sidecar
    body = tiny_data["body_model"]
    from smil.body.model import SMILModel

    model = SMILModel.from_file(body)
    assert meta["joint_names"] == list(model.joint_names)
    assert meta["parents"] == list(model.parents)
    assert meta["num_frames"] == F and meta["fps"] is None
    assert meta["source"]["views"][0]["files"] == ["f0.png", "f1.png", "f2.png", "f3.png", "f4.png", "f10.png"]
    assert meta["model"]["sha256"] == hashlib.sha256(models["single"].read_bytes()).hexdigest()
    assert meta["body_model"]["sha256"] == model.sha256
    assert meta["cameras"][0]["image_size"] == [W, H]
    assert meta["smoothing"] is None
    assert set(meta["arrays"]) == set(a)


def test_video_fps_overlay_and_smoothing(models, loaded, frames, tmp_path):
    raw, smooth = tmp_path / "raw", tmp_path / "smooth"
    overlay = tmp_path / "overlay.mp4"
    infer(models["single"], frames["video"], "--out", raw, "--overlay-video", overlay)
    run_infer(loaded["single"], frames["video"], smooth, InferOptions(smooth=1.5, progress=False))
    a, meta = load(raw)
    s, smeta = load(smooth)
    assert meta["fps"] == pytest.approx(FPS) and meta["fps_source"] == "video"
    assert meta["num_frames"] == 6 and a["keypoints2d"].shape[:2] == (6, 1)
    assert count_frames(overlay) == 6
    cap = cv2.VideoCapture(str(overlay))
    ok, img = cap.read()
    cap.release()
    assert ok and img.shape[0] >= 256  # small frames are drawn enlarged
    assert smeta["smoothing"]["sigma_frames"] == 1.5
    assert_rotations(s["global_rot_matrix"])
    assert_rotations(s["joint_rot_matrix"])

    def change(R: np.ndarray) -> float:
        R = torch.from_numpy(R.astype(np.float64))
        return float(geodesic_angle(R[1:], R[:-1]).mean())

    assert change(s["global_rot_matrix"]) < change(a["global_rot_matrix"])
    assert change(s["joint_rot_matrix"]) < change(a["joint_rot_matrix"])
    assert np.abs(np.diff(s["trans"], axis=0)).mean() < np.abs(np.diff(a["trans"], axis=0)).mean()
    # joints and keypoints come from the smoothed parameters
    assert np.allclose(reproject(s), s["keypoints2d"], atol=1e-2)
    assert not np.allclose(s["joints3d"], a["joints3d"], atol=1e-4)


def test_bbox_crop_follows_the_animal_and_maps_back(loaded, tiny_data, tmp_path):
    """The same 64×64 ant pasted at two places, cropped by its box: the network sees the same input, so
    the keypoints move exactly with the paste offset."""
    folder = tmp_path / "frames"
    folder.mkdir()
    ant = _ant(tiny_data, 0)
    offsets = {"a.png": (10, 20), "b.png": (70, 5)}
    boxes = {}
    for name, (x, y) in offsets.items():
        canvas = np.zeros((100, 140, 3), np.uint8)
        canvas[y:y + 64, x:x + 64] = ant
        cv2.imwrite(str(folder / name), _bgr(canvas))
        boxes[name] = [x, y, x + 63, y + 63]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "res"
    run_infer(loaded["single"], folder, out, InferOptions(bboxes=tmp_path / "boxes.json", bbox_padding=1.0,
                                                         progress=False))
    a, meta = load(out)
    assert meta["crop"]["mode"] == "bbox"
    shift = np.subtract(offsets["b.png"], offsets["a.png"])
    assert np.allclose(a["keypoints2d"][1] - a["keypoints2d"][0], shift, atol=1e-3)
    assert np.allclose(a["K"][1, 0, :2, 2] - a["K"][0, 0, :2, 2], shift, atol=1e-3)
    assert np.allclose(a["global_rot_matrix"][0], a["global_rot_matrix"][1], atol=1e-5)
    # a frame without a box is an error naming it
    (tmp_path / "partial.json").write_text(json.dumps({"a.png": boxes["a.png"]}))
    with pytest.raises(DataError, match="b.png"):
        run_infer(loaded["single"], folder, tmp_path / "x", InferOptions(bboxes=tmp_path / "partial.json"))
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------------------------
# HDF5 and multi-view


def test_multiview_model_on_hdf5_split(models, tiny_data, tmp_path):
    out = tmp_path / "mv"
    overlay = tmp_path / "mv.mp4"
    infer(models["multi"], tiny_data["multi"], "--split", "test", "--out", out, "--overlay-video", overlay)
    a, meta = load(out)
    with open_dataset(tiny_data["multi"]) as r:
        test = r.split_indices("test")
        rig, size = r.camera_names, r.image_size
        ids = [str(s) for s in r.sample_id[test]]
    F, V, J = len(test), len(rig), len(meta["joint_names"])
    assert a["joints3d"].shape == (F, J, 3) and a["global_rot"].shape == (F, 3)
    assert a["keypoints2d"].shape == (F, V, J, 2) and a["K"].shape == (F, V, 3, 3)
    assert a["cam_rot"].shape == (F, V, 3) and a["fov"].shape == (F, V)
    assert a["sample_index"].tolist() == test.tolist()
    assert meta["source"]["sample_id"] == ids and not meta["body_per_view"]
    assert [c["name"] for c in meta["cameras"]] == rig == meta["model"]["rig"]
    assert all(c["image_size"] == list(size) for c in meta["cameras"])
    # cameras in stored-image pixels: principal point at the stored image's centre
    assert np.allclose(a["K"][..., 0, 2], (size[0] - 1) / 2, atol=1e-3)
    assert np.allclose(reproject(a), a["keypoints2d"], atol=1e-2)
    assert count_frames(overlay) == F


def test_singleview_model_on_multiview_hdf5_runs_each_view(loaded, tiny_data, tmp_path):
    out = tmp_path / "sv"
    run_infer(loaded["single"], tiny_data["multi"], out, InferOptions(split="val", progress=False))
    a, meta = load(out)
    with open_dataset(tiny_data["multi"]) as r:
        val = r.split_indices("val")
        N, V, valid = len(val), r.num_views, r.view_valid[val]
    J = len(meta["joint_names"])
    assert meta["body_per_view"] is True
    assert a["joints3d"].shape == (N, V, J, 3) and a["global_rot"].shape == (N, V, 3)
    assert a["keypoints2d"].shape == (N, V, J, 2)
    assert (a["view_valid"] == valid).all()
    assert np.isfinite(a["keypoints2d"][valid]).all()
    assert np.allclose(reproject(a)[valid], a["keypoints2d"][valid], atol=1e-2)


def _session(tiny_data: dict, folder: Path, cameras: list[str], frames: int = 3) -> None:
    folder.mkdir()
    with open_dataset(tiny_data["multi"]) as r:
        names = r.camera_names
        for cam in cameras:
            v = names.index(cam)
            w = cv2.VideoWriter(str(folder / f"{cam}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, r.image_size)
            for i in range(frames):
                w.write(_bgr(r.get_sample(i)["images"][v]))
            w.release()


def test_session_folder_needs_every_rig_camera(models, tiny_data, tmp_path, capsys):
    folder = tmp_path / "session"
    _session(tiny_data, folder, ["cam0", "cam1", "cam3"])
    assert main(["infer", str(models["multi"]), str(folder), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "['cam0', 'cam1', 'cam2', 'cam3']" in err and "['cam0', 'cam1', 'cam3']" in err and "cam2" in err
    assert not (tmp_path / "x.npz").exists()


def test_session_folder_with_calibration(models, loaded, tiny_data, tmp_path):
    folder = tmp_path / "session"
    with open_dataset(tiny_data["multi"]) as r:
        rig, size, s0 = r.camera_names, r.image_size, r.get_sample(0)
    _session(tiny_data, folder, rig)
    dist = np.array([0.05, 0.0, 0.0, 0.0, 0.0])
    cams = [CameraCalibration(n, size, s0["K"][v].astype(float), dist, s0["R"][v].astype(float),
                              s0["t"][v].astype(float)) for v, n in enumerate(rig)]
    calib = tmp_path / "calib.toml"
    write_calibration_toml(calib, cams)
    # the tiny multi-view model refines calibrated cameras: the calibration is required
    assert main(["infer", str(models["multi"]), str(folder), "--out", str(tmp_path / "x")]) == 2
    out = tmp_path / "res"
    run_infer(loaded["multi"], folder, out, InferOptions(calibration=calib, progress=False))
    a, meta = load(out)
    assert a["keypoints2d"].shape[:2] == (3, len(rig)) and meta["fps"] == pytest.approx(25.0)
    assert [c["dist"] for c in meta["cameras"]] == [dist.tolist()] * len(rig)
    # keypoints are on the raw (distorted) frames: the pinhole projection is undistorted
    from smil.geometry.camera import distort_points

    pinhole = reproject(a)
    assert not np.allclose(pinhole, a["keypoints2d"], atol=1e-3)
    for v in range(len(rig)):
        assert np.allclose(distort_points(pinhole[0, v], cams[v].K, dist), a["keypoints2d"][0, v], atol=1e-2)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--crop", "bbox"], "needs --bboxes"),
        (["--split", "test"], "--split applies to HDF5"),
        (["--crop", "center", "--bboxes", "b.json"], "only with --crop bbox"),
    ],
)
def test_bad_options_are_clear_errors(models, frames, tmp_path, capsys, extra, message):
    assert main(["infer", str(models["single"]), str(frames["folder"]), "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_input_that_does_not_fit_the_model(models, frames, tiny_data, tmp_path, capsys):
    assert main(["infer", str(models["multi"]), str(frames["folder"]), "--out", str(tmp_path / "x")]) == 2
    assert "multi-view model" in capsys.readouterr().err
    assert main(["infer", str(models["single"]), str(tiny_data["single"]), "--crop", "center",
                 "--out", str(tmp_path / "x")]) == 2
    assert "already cropped" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["infer", str(models["single"]), str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "no images" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# smoothing (no model needed)


def _rot(aa: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.from_numpy(np.asarray(aa, np.float64))).numpy()


def _angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return geodesic_angle(torch.from_numpy(A), torch.from_numpy(B)).numpy()


def test_smoothing_keeps_rotations_valid_and_constants_unchanged():
    rng = np.random.default_rng(0)
    R = _rot(rng.normal(size=(40, 7, 3)) * 2.0)  # wild rotations, far apart
    window = gaussian_window(40, SmoothingSettings(2.0))
    out = smooth_rotations(R, window)
    assert_rotations(out, tol=1e-9)
    const = np.repeat(_rot(np.array([[0.3, -2.0, 1.1]])), 25, axis=0)
    assert np.allclose(smooth_rotations(const, gaussian_window(25, SmoothingSettings(3.0))), const, atol=1e-12)
    values = np.tile(np.array([1.0, -2.0, 3.5]), (25, 1))
    assert np.allclose(smooth_values(values, gaussian_window(25, SmoothingSettings(3.0))), values)
    params = smooth_parameters({"scale": np.full(10, 2.5), "trans": np.zeros((10, 3))}, SmoothingSettings(1.0))
    assert np.allclose(params["scale"], 2.5) and np.allclose(params["trans"], 0.0)


def test_smoothing_reduces_noise():
    rng = np.random.default_rng(1)
    F = 60
    clean_aa = np.stack([np.linspace(0, 1.5, F), 0.5 * np.sin(np.linspace(0, 3, F)), np.full(F, 0.2)], 1)
    clean = _rot(clean_aa)
    noisy = _rot(clean_aa) @ _rot(rng.normal(scale=0.08, size=(F, 3)))
    out = smooth_rotations(noisy, gaussian_window(F, SmoothingSettings(2.0)))
    assert _angles(out[1:], out[:-1]).mean() < 0.5 * _angles(noisy[1:], noisy[:-1]).mean()
    assert _angles(out, clean).mean() < 0.7 * _angles(noisy, clean).mean()
    x = np.linspace(0, 1, F)[:, None] + rng.normal(scale=0.1, size=(F, 3))
    xs = smooth_values(x, gaussian_window(F, SmoothingSettings(2.0)))
    assert np.abs(np.diff(xs, axis=0)).mean() < 0.5 * np.abs(np.diff(x, axis=0)).mean()


def test_smoothing_near_pi_survives_axis_angle_sign_flips():
    """Rotations about one axis by angles oscillating around π: their axis-angle vectors jump between
    ≈ π·n and ≈ −π·n from frame to frame. Averaging those element-wise would give rotations near the
    identity; averaging rotations must stay near π."""
    rng = np.random.default_rng(2)
    F = 50
    n = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    theta = math.pi + 0.05 * np.sin(np.arange(F) * 0.7) + rng.normal(scale=0.03, size=F)
    R = _rot(theta[:, None] * n)
    aa = matrix_to_axis_angle(torch.from_numpy(R)).numpy()
    flips = (aa[1:] @ n) * (aa[:-1] @ n) < 0
    assert flips.sum() >= 5, "the test sequence must flip sign in axis-angle"
    window = gaussian_window(F, SmoothingSettings(2.0))
    naive = _rot(smooth_values(aa, window))  # what element-wise averaging would do
    assert _angles(naive, R).max() > 1.0
    out = smooth_rotations(R, window)
    assert_rotations(out, tol=1e-9)
    assert _angles(out, R).max() < 0.15
    # the smoothed angle about n stays near π
    assert np.all(np.abs(np.abs(matrix_to_axis_angle(torch.from_numpy(out)).numpy() @ n) - math.pi) < 0.15)


def test_smoothing_respects_segments_gaps_and_missing_frames():
    a, b = _rot(np.array([0.0, 0.0, 0.0])), _rot(np.array([0.0, 1.0, 0.0]))
    R = np.stack([a] * 5 + [b] * 5)
    seg = np.array([0] * 5 + [1] * 5)
    out = smooth_rotations(R, gaussian_window(10, SmoothingSettings(3.0), segments=seg))
    assert np.allclose(out, R, atol=1e-12)  # nothing leaks across the segment boundary
    times = np.array([0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    out = smooth_rotations(R, gaussian_window(10, SmoothingSettings(3.0), times=times))
    assert np.allclose(out, R, atol=1e-12)  # a gap longer than the window separates them too
    x = np.arange(10, dtype=float)[:, None].repeat(2, 1)
    x[4] = np.nan
    xs = smooth_values(x, gaussian_window(10, SmoothingSettings(1.0)))
    assert np.isnan(xs[4]).all() and np.isfinite(np.delete(xs, 4, axis=0)).all()
    with pytest.raises(DataError, match="twice"):
        gaussian_window(3, SmoothingSettings(1.0), times=np.array([0, 1, 1]))
