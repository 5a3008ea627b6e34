"""The synthetic generator (`smil synth`): ground-truth consistency, determinism, rigs, visibility."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from smil.body.model import SMILModel
from smil.cli import main as smil_main
from smil.data.manifest import PARAM_SHAPES, iter_manifest, read_manifest_header, resolve_reference
from smil.data.synth import Camera, SynthSettings, SyntheticGenerator, look_at, write_synthetic_dataset
from smil.geometry.camera import project
from smil.render.raster import rasterize, silhouette_mask

MODELS = ("default", "stick")


@pytest.fixture(scope="module")
def default_model_path(tmp_path_factory) -> Path:
    from smil.body.default_model import build_default_model
    from smil.body.io import save_model

    path = tmp_path_factory.mktemp("model") / "default.pkl"
    save_model(path, build_default_model())
    return path


@pytest.fixture(scope="module")
def default_model(default_model_path) -> SMILModel:
    return SMILModel.from_file(default_model_path)


@pytest.fixture(scope="module")
def stick_model(fixtures_dir) -> SMILModel:
    return SMILModel.from_file(fixtures_dir / "models" / "SMILy_STICK.pkl")


def get_model(request, name: str) -> SMILModel:
    """The procedural default model, or the real SMILy stick insect from the fixtures."""
    return request.getfixturevalue(f"{name}_model")


def small(**kw) -> SynthSettings:
    base = dict(image_size=96, views=1, rig="random", seed=3, batch_size=4)
    base.update(kw)
    return SynthSettings(**base)


def forward64(model: SMILModel, params: dict[str, np.ndarray]):
    m = copy.deepcopy(model).double()
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64))[None] for k, v in params.items()}
    with torch.no_grad():
        out = m(
            betas=t["betas"],
            global_rot=t["global_rot"],
            joint_rot=t["joint_rot"],
            trans=t["trans"],
            scale=t["scale"].reshape(1),
            joint_log_scales=t["log_beta_scales"],
            joint_trans=t["betas_trans"],
        )
    return out.vertices[0].numpy(), out.joints[0].numpy()


@pytest.mark.parametrize("name", MODELS)
def test_stored_params_reproduce_stored_keypoints(name, request, tmp_path):
    model = get_model(request, name)
    manifest = write_synthetic_dataset(tmp_path, model, small(views=2, rig="random"), 3)
    header = read_manifest_header(manifest)
    assert header.source_kind == "synthetic"
    assert header.joint_names == list(model.joint_names)
    assert header.camera_names == ["cam0", "cam1"]
    assert header.world_unit_m == 0.01
    samples = list(iter_manifest(manifest))
    assert len(samples) == 3
    J, B = model.num_joints, model.num_betas
    dims = {"J": J, "J-1": J - 1, "B": B, "3": 3}
    for s in samples:
        assert s.group == s.sample_id
        assert set(s.params) == set(PARAM_SHAPES)
        for key, shape in PARAM_SHAPES.items():
            assert s.params[key].shape == tuple(dims[d] for d in shape), key
        _, joints = forward64(model, s.params)
        # the manifest holds 9 significant digits (float32 precision; datasets store float32)
        np.testing.assert_allclose(joints, s.keypoints3d, rtol=1e-7, atol=1e-8)
        for v in s.views:
            uv = project(
                torch.as_tensor(joints),
                torch.as_tensor(v.K),
                torch.as_tensor(v.R),
                torch.as_tensor(v.t),
            ).numpy()
            assert np.abs(uv - v.keypoints2d).max() < 1e-3
            assert set(np.unique(v.visibility)) <= {0.0, 1.0}
            assert v.visibility.sum() >= J // 3  # most of the animal is seen


@pytest.mark.parametrize("name", MODELS)
def test_mask_is_the_silhouette_of_the_stored_body(name, request, tmp_path):
    model = get_model(request, name)
    manifest = write_synthetic_dataset(tmp_path, model, small(), 2)
    faces = model.faces.numpy()
    for s in iter_manifest(manifest):
        verts, _ = forward64(model, s.params)
        view = s.views[0]
        mask = cv2.imread(resolve_reference(manifest, view.mask)["path"], cv2.IMREAD_UNCHANGED)
        raster = rasterize(verts @ view.R.T + view.t, faces, view.K, view.image_size)
        np.testing.assert_array_equal(mask, silhouette_mask(raster))
        assert 0.02 < (mask > 0).mean() < 0.9


def test_same_seed_same_bytes_and_any_order(default_model, tmp_path):
    model = default_model
    a = write_synthetic_dataset(tmp_path / "a", model, small(views=2, rig="fixed"), 3)
    b = write_synthetic_dataset(tmp_path / "b", model, small(views=2, rig="fixed"), 3)
    c = write_synthetic_dataset(tmp_path / "c", model, small(views=2, rig="fixed", seed=4), 3)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 1 + 2 * 3 * 2
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # One sample made alone equals the same sample made in the middle of a batch of many.
    gen = SyntheticGenerator(model, small(views=2, rig="fixed", batch_size=8))
    alone = next(gen.samples([2]))
    in_run = list(gen.samples(range(6)))[2]
    for key in alone.params:
        np.testing.assert_array_equal(alone.params[key], in_run.params[key])
    np.testing.assert_array_equal(alone.joints, in_run.joints)
    np.testing.assert_array_equal(alone.views[1].image, in_run.views[1].image)


def test_fixed_rig_is_shared_and_random_cameras_are_not(default_model, tmp_path):
    model = default_model
    fixed = list(
        iter_manifest(write_synthetic_dataset(tmp_path / "f", model, small(views=3, rig="fixed"), 4))
    )
    for s in fixed[1:]:
        for v, v0 in zip(s.views, fixed[0].views):
            assert v.camera == v0.camera
            for key in ("K", "R", "t"):
                np.testing.assert_array_equal(getattr(v, key), getattr(v0, key))
    centres = [-v.R.T @ v.t for v in fixed[0].views]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]) > 0.5
    header = read_manifest_header(tmp_path / "f" / "manifest.jsonl")
    assert [c["camera"] for c in header.info["rig"]] == ["cam0", "cam1", "cam2"]
    rand = list(iter_manifest(write_synthetic_dataset(tmp_path / "r", model, small(), 3)))
    assert not np.allclose(rand[0].views[0].R, rand[1].views[0].R)
    assert not np.isclose(rand[0].views[0].K[0, 0], rand[1].views[0].K[0, 0])


def test_backgrounds_are_textured(default_model, tmp_path):
    manifest = write_synthetic_dataset(tmp_path, default_model, small(), 4)
    means = []
    for s in iter_manifest(manifest):
        img = cv2.imread(resolve_reference(manifest, s.views[0].image)["path"])
        mask = cv2.imread(resolve_reference(manifest, s.views[0].mask)["path"], cv2.IMREAD_GRAYSCALE)
        bg = img[mask == 0].astype(float)
        assert bg.std(axis=0).max() > 5.0  # not a flat colour
        means.append(bg.mean(axis=0))
    assert np.ptp(np.array(means), axis=0).max() > 10.0  # backgrounds differ between samples


def test_joint_behind_the_body_is_hidden(default_model):
    model = default_model
    gen = SyntheticGenerator(model, small(image_size=128))
    ((params, verts, joints),) = gen.posed_bodies([0])
    names = list(model.joint_names)
    tip, root = joints[names.index("l_2_pt_r")], joints[names.index("b_t")]
    K = np.array([[150.0, 0, 63.5], [0, 150.0, 63.5], [0, 0, 1]])
    away = (root - tip) / np.linalg.norm(root - tip)

    def view_from(centre):
        R, t = look_at(centre, root)
        return gen.render(0, verts, joints, [Camera(K, R, t)])[0]

    # Camera beyond the body, on the line through the leg tip and the thorax: the tip is behind it.
    behind = view_from(root + 4.0 * away)
    assert behind.visibility[names.index("l_2_pt_r")] == 0
    assert behind.mask[tuple(np.rint(behind.keypoints2d[names.index("l_2_pt_r")][::-1]).astype(int))] == 255
    # Camera on the leg's side, looking the other way: the tip is in front and seen.
    front = view_from(root - 4.0 * away)
    assert front.visibility[names.index("l_2_pt_r")] == 1
    # The thorax joint lies inside the body but right under its own surface: visible from above.
    R, t = look_at(root + np.array([0.0, 0.0, 4.0]), root)
    top = gen.render(0, verts, joints, [Camera(K, R, t)])[0]
    assert top.visibility[names.index("b_t")] == 1
    # Joints projecting outside the image are never visible.
    narrow = np.array([[2000.0, 0, 63.5], [0, 2000.0, 63.5], [0, 0, 1]])
    R, t = look_at(root + np.array([0.0, 0.0, 4.0]), joints[names.index("b_h")])
    zoom = gen.render(0, verts, joints, [Camera(narrow, R, t)])[0]
    outside = ~((zoom.keypoints2d >= -0.5) & (zoom.keypoints2d < 127.5)).all(axis=1)
    assert outside.sum() > 10 and zoom.visibility[outside].max() == 0


def test_cli_writes_a_dataset_and_reports_bad_input(default_model_path, tmp_path, capsys):
    out = tmp_path / "synth"
    code = smil_main(
        [
            "synth",
            "--out",
            str(out),
            "--body-model",
            str(default_model_path),
            "--num-samples",
            "2",
            "--views",
            "2",
            "--image-size",
            "64",
            "--seed",
            "7",
            "--world-unit-m",
            "0.001",
        ]
    )
    assert code == 0
    header = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert header["world_unit_m"] == 0.001 and header["info"]["settings"]["rig"] == "fixed"
    assert len(list((out / "images").glob("*.jpg"))) == 4 and len(list((out / "masks").glob("*.png"))) == 4
    img = cv2.imread(str(next((out / "images").glob("*.jpg"))))
    assert img.shape == (64, 64, 3)
    assert (
        smil_main(
            [
                "synth",
                "--out",
                str(tmp_path / "x"),
                "--body-model",
                str(tmp_path / "nope.pkl"),
                "--num-samples",
                "1",
            ]
        )
        == 2
    )
    assert "nope.pkl" in capsys.readouterr().err
    assert (
        smil_main(
            [
                "synth",
                "--out",
                str(tmp_path / "x"),
                "--body-model",
                str(default_model_path),
                "--num-samples",
                "1",
                "--views",
                "0",
            ]
        )
        == 2
    )
    assert "views" in capsys.readouterr().err
