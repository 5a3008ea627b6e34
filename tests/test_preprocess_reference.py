"""``smil preprocess`` on ``smil synth`` output, checked against an independent computation.

Everything expected here is computed from the manifest and the source files with plain ``json``,
numpy and OpenCV calls — not with ``smil.data.manifest``, ``smil.data.crop`` or the preprocessing code —
following the contract in ``smil/data/preprocess.py`` and ``docs/conventions.md``: the crop is the
square of side ``round(padding × max(w, h))`` centred on the bbox of the visible keypoints united with
the mask's pixels, shifted inside the image; it is resized with ``INTER_AREA`` (down) or
``INTER_LINEAR`` (up), encoded as JPEG at the set quality (the stored bytes must be exactly those), and
the mask is cropped and resized alike, then thresholded at 128. Cameras and keypoints follow the affine
map ``x ↦ s · (x - x0 + 0.5) - 0.5``.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pytest

from smil.data import schema as S
from smil.data.preprocess import PreprocessSettings, preprocess
from smil.data.synth import SynthSettings, write_synthetic_dataset
from smil.errors import DataError

OUT, PADDING, QUALITY = 64, 1.3, 85


@pytest.fixture(scope="module")
def synth_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 96² ``smil synth`` samples with masks and body parameters, made less regular: sample 1 has
    missing 2D and 3D keypoints and no ``betas_trans``; sample 3 no body parameters at all."""
    from smil.body.default_model import build_default_model
    from smil.body.io import save_model
    from smil.body.model import SMILModel

    folder = tmp_path_factory.mktemp("synth")
    save_model(folder / "default.pkl", build_default_model())
    model = SMILModel.from_file(folder / "default.pkl")
    manifest = write_synthetic_dataset(folder / "data", model, SynthSettings(image_size=96, seed=5, batch_size=5), 5)
    lines = manifest.read_text().splitlines()
    one = json.loads(lines[2])
    for j in (0, 3, 4):
        one["views"][0]["keypoints2d"][j] = [None, None]
    one["keypoints3d"][2] = [None, None, None]
    del one["params"]["betas_trans"]
    three = json.loads(lines[4])
    three["params"] = None
    lines[2], lines[4] = json.dumps(one), json.dumps(three)
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def floats(value: Any) -> np.ndarray:
    """A manifest array (nested lists, ``None`` = missing, or packed: base64 of little-endian float64)
    as float64, converted element by element."""
    if isinstance(value, dict):
        assert value["dtype"] == "<f8"
        return np.frombuffer(base64.b64decode(value["base64"]), "<f8").reshape(value["shape"])
    if isinstance(value, list):
        return np.array([floats(v) for v in value], dtype=np.float64)
    return np.float64(math.nan if value is None else value)


def expected_box(kp: np.ndarray, vis: np.ndarray, mask: np.ndarray, width: int, height: int) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop, in source pixels."""
    finite = np.isfinite(kp).all(axis=1)
    pts = kp[finite & (vis > 0)]
    ys, xs = np.nonzero(mask)
    xmin, xmax = min(pts[:, 0].min(), xs.min()), max(pts[:, 0].max(), xs.max())
    ymin, ymax = min(pts[:, 1].min(), ys.min()), max(pts[:, 1].max(), ys.max())
    side = max(round(max(xmax - xmin + 1, ymax - ymin + 1) * PADDING), 16)
    x0 = math.floor((xmin + xmax) / 2 - (side - 1) / 2 + 0.5)
    y0 = math.floor((ymin + ymax) / 2 - (side - 1) / 2 + 0.5)
    if side <= width:
        x0 = min(max(x0, 0), width - side)
    if side <= height:
        y0 = min(max(y0, 0), height - side)
    return x0, y0, side


def cut(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The square ``[x0, x0 + side) × [y0, y0 + side)``, zero outside the image, resized to ``OUT``."""
    canvas = np.zeros((side, side, *image.shape[2:]), image.dtype)
    h, w = image.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    canvas[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    interp = cv2.INTER_AREA if side > OUT else cv2.INTER_LINEAR
    return cv2.resize(canvas, (OUT, OUT), interpolation=interp)


def test_output_equals_an_independent_computation(synth_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset.h5"
    summary = preprocess(synth_manifest, out, PreprocessSettings(image_size=OUT, padding=PADDING, jpeg_quality=QUALITY),
                         progress=False)
    assert summary["samples_written"] == 5 and summary["decode_reduction"] == {"1": 5}
    folder = synth_manifest.parent
    samples = [json.loads(line) for line in synth_manifest.read_text().splitlines()[1:]]
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f[S.SAMPLE_ID][:]] == [s["sample_id"] for s in samples]
        assert f[S.FRAME][:].tolist() == [s["frame"] for s in samples]
        for i, sample in enumerate(samples):
            view = sample["views"][0]
            W, H = view["image_size"]
            kp, vis = floats(view["keypoints2d"]), floats(view["visibility"])
            ids = cv2.imread(str(folder / view["mask"]["path"]), cv2.IMREAD_UNCHANGED)
            mask = np.where(ids == view["mask"]["value"], 255, 0).astype(np.uint8)
            x0, y0, side = expected_box(kp, vis, mask, W, H)
            s = OUT / side
            A = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5], [0, 0, 1]])

            source = cv2.imread(str(folder / view["image"]["path"]), cv2.IMREAD_COLOR)
            jpeg = cv2.imencode(".jpg", cut(source, x0, y0, side), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])[1]
            assert bytes(f[S.IMAGES][i, 0]) == jpeg.tobytes(), f"sample {i}: stored JPEG differs"
            stored_mask = cv2.imdecode(np.asarray(f[S.MASKS][i, 0]), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(stored_mask, np.where(cut(mask, x0, y0, side) >= 128, 255, 0))
            assert f[S.HAS_MASK][i].tolist() == [True] and f[S.VIEW_VALID][i].tolist() == [True]

            np.testing.assert_allclose(f[S.K][i, 0], A @ floats(view["K"]), rtol=1e-6)
            np.testing.assert_array_equal(f[S.R][i, 0], floats(view["R"]).astype(np.float32))
            np.testing.assert_array_equal(f[S.T][i, 0], floats(view["t"]).astype(np.float32))
            want_kp = np.stack([s * (kp[:, 0] - x0 + 0.5) - 0.5, s * (kp[:, 1] - y0 + 0.5) - 0.5], axis=1)
            np.testing.assert_allclose(f[S.KEYPOINTS2D][i, 0], want_kp, rtol=1e-6, atol=1e-4)
            assert np.array_equal(np.isnan(f[S.KEYPOINTS2D][i, 0]), np.isnan(want_kp))
            np.testing.assert_array_equal(f[S.VISIBILITY][i, 0], vis.astype(np.float32))
            np.testing.assert_array_equal(f[S.KEYPOINTS3D][i], floats(sample["keypoints3d"]).astype(np.float32))

            params = sample["params"] or {}
            for name in ("global_rot", "joint_rot", "betas", "trans", "scale", "log_beta_scales", "betas_trans"):
                stored, has = f[S.param_path(name)][i], bool(f[S.has_param_path(name)][i])
                assert has == (name in params), (i, name)
                if has:
                    np.testing.assert_array_equal(stored, floats(params[name]).astype(np.float32))
                else:
                    assert np.isnan(stored).all(), (i, name)
        assert np.isnan(f[S.KEYPOINTS2D][1, 0, [0, 3, 4]]).all() and np.isnan(f[S.KEYPOINTS3D][1, 2]).all()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o["params"].update(betas=["a", 1.0]), "params.betas"),
        (lambda o: o["params"].update(joint_rot=[[0.0, 0.0, 0.0], [1.0, 2.0]]), "params.joint_rot"),
        (lambda o: o["views"][0].update(keypoints2d=[[1.0, 2.0], {"x": 1}]), "keypoints2d"),
        (lambda o: o.update(keypoints3d=[[0.0, 1.0]]), "keypoints3d"),
        (lambda o: o["params"]["joint_rot"].update(shape=[2, 3]), "params.joint_rot"),  # values for (J-1, 3)
        (lambda o: o["params"]["log_beta_scales"].update(base64="not base64!"), "params.log_beta_scales"),
        (lambda o: o["params"]["log_beta_scales"].update(dtype="<f4"), "params.log_beta_scales"),
        (lambda o: o["params"]["log_beta_scales"].pop("shape"), "params.log_beta_scales"),
    ],
)
def test_malformed_arrays_name_the_line_and_field(synth_manifest: Path, tmp_path: Path, change: Any,
                                                  field: str) -> None:
    lines = synth_manifest.read_text().splitlines()
    obj = json.loads(lines[2])
    change(obj)
    lines[2] = json.dumps(obj)
    manifest = synth_manifest.parent / "malformed.jsonl"  # beside the images it refers to
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"malformed.jsonl:3: field '{field}'"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=OUT, skip_bad=True), progress=False)
    assert not (tmp_path / "d.h5").exists()
