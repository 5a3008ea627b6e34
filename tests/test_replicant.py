"""replicAnt ingest on the real renders: Unreal→OpenCV conversion, joint mapping, masks, layouts, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from smil.data import unreal
from smil.data.images import load_mask
from smil.data.joint_mapping import build_joint_mapping, read_joint_map
from smil.data.replicant import discover_batches, ingest_replicant, load_raw_sample, read_annotation
from smil.errors import DataError
from smil.geometry.camera import camera_center, project

RICH = "replicAnt-x-SMIL-demo"  # 20 renders, 1024², rotations and shape betas
OLD = "SMIL"  # 10 renders, 512², keypoints only, _ID.png masks
COUNTS = {RICH: 20, OLD: 10}


@pytest.fixture(scope="module")
def replicant_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "replicant"


@pytest.fixture(scope="module")
def ingested(replicant_dir: Path):
    return {name: ingest_replicant(replicant_dir / name) for name in (RICH, OLD)}


def _raw(json_path: Path) -> dict:
    return json.loads(json_path.read_text())


def _raw_keypoints(json_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    kps = _raw(json_path)["iterationData"]["subject Data"][0]["1"]["keypoints"]
    uv = np.array([[k["2DPos"]["x"], k["2DPos"]["y"]] for k in kps.values()])
    xyz = np.array([[k["3DPos"]["x"], k["3DPos"]["y"], k["3DPos"]["z"]] for k in kps.values()])
    return list(kps), uv, xyz


def _copy_batch(src: Path, dst: Path, stems: list[str] | None = None) -> Path:
    """Copy (some of) a fixture batch into ``dst`` (a tmp folder), renders and masks included."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        stem = p.name.split(".")[0].removesuffix("_ID")
        if stems is None or p.name.startswith("_BatchData_") or stem in stems:
            shutil.copy(p, dst / p.name)
    return dst


# --------------------------------------------------------------------------------------------
# The conversion, proven on the real files


@pytest.mark.parametrize("name", [RICH, OLD])
def test_converted_camera_reproduces_the_json_2d_keypoints(ingested, replicant_dir, name):
    header, samples, _ = ingested[name]
    assert header.world_unit_m == 0.01 and header.camera_names == ["cam"]
    assert len(samples) == COUNTS[name]
    medians = []
    for s in samples:
        v = s.views[0]
        json_path = replicant_dir / name / f"{s.sample_id}.json"
        _, uv_unreal, _ = _raw_keypoints(json_path)
        uv = project(*(torch.as_tensor(a) for a in (s.keypoints3d, v.K, v.R, v.t)))
        err = np.linalg.norm(uv.numpy() - (uv_unreal - 0.5), axis=1)
        medians.append(np.median(err))
        assert np.median(err) <= 1.0, s.sample_id
        # the stored 2D keypoints are the file's, in OpenCV pixel centres
        np.testing.assert_allclose(v.keypoints2d, uv_unreal - 0.5, atol=1e-9)
    assert max(medians) < 1e-3  # the conversion is exact, not merely within a pixel


@pytest.mark.parametrize("name", [RICH, OLD])
def test_world_is_unreal_with_y_flipped_and_camera_sits_at_its_location(ingested, replicant_dir, name):
    _, samples, _ = ingested[name]
    for s in samples:
        raw = _raw(replicant_dir / name / f"{s.sample_id}.json")["iterationData"]
        _, _, xyz = _raw_keypoints(replicant_dir / name / f"{s.sample_id}.json")
        np.testing.assert_allclose(s.keypoints3d, xyz * [1, -1, 1])
        v = s.views[0]
        assert np.linalg.det(v.R) == pytest.approx(1.0, abs=1e-9)
        loc = raw["camera"]["Location"]
        centre = camera_center(torch.as_tensor(v.R), torch.as_tensor(v.t)).numpy()
        np.testing.assert_allclose(centre, [loc["x"], -loc["y"], loc["z"]], atol=1e-4)
        # Unreal's FOV is horizontal: fx = (W/2) / tan(FOV/2); principal point at the image centre
        W, H = v.image_size
        fx = (W / 2) / np.tan(np.radians(raw["camera"]["FOV"]) / 2)
        np.testing.assert_allclose(v.K, [[fx, 0, W / 2 - 0.5], [0, fx, H / 2 - 0.5], [0, 0, 1]], rtol=1e-6)


def test_camera_from_location_and_rotation_matches_the_view_matrix(replicant_dir):
    for path in sorted((replicant_dir / RICH).glob(f"{RICH}_*.json")) + sorted(
        (replicant_dir / OLD).glob("SMIL_??.json")
    ):
        cam = _raw(path)["iterationData"]["camera"]
        R, t = unreal.extrinsics_from_view_matrix(unreal.planes_to_matrix(cam["View Matrix"]))
        loc, rot = cam["Location"], cam["Rotation"]
        R2, t2 = unreal.extrinsics_from_rotator(
            np.array([loc["x"], loc["y"], loc["z"]]), rot["pitch"], rot["yaw"], rot["roll"]
        )
        np.testing.assert_allclose(R2, R, atol=1e-6)
        np.testing.assert_allclose(t2, t, atol=1e-4)


def test_keypoints_land_on_the_animal_in_the_image(ingested):
    """Pixel orientation check against image content: visible keypoints lie on the subject's mask."""
    _, samples, _ = ingested[OLD]
    s = next(s for s in samples if s.sample_id == "SMIL_01")  # large, unoccluded subject
    v = s.views[0]
    mask = load_mask(v.mask) > 0
    ij = np.rint(v.keypoints2d).astype(int)
    on = mask[ij[:, 1], ij[:, 0]]
    assert on.mean() > 0.9
    flipped = mask[ij[:, 0], ij[:, 1]]  # x/y swapped: mostly off the animal
    assert flipped.mean() < 0.5


def test_keypoints_outside_the_image_or_behind_the_camera_are_invisible(replicant_dir, tmp_path):
    batch = _copy_batch(replicant_dir / RICH, tmp_path / "b", [f"{RICH}_00"])
    path = batch / f"{RICH}_00.json"
    data = _raw(path)
    kps = data["iterationData"]["subject Data"][0]["1"]["keypoints"]
    # This render's subject reaches past the image's top and right edges (see its 2DBounds).
    _, uv, _ = _raw_keypoints(path)
    outside = ((uv < 0) | (uv > 1024)).any(axis=1).sum()
    assert outside > 0
    _, samples, _ = ingest_replicant(batch)
    v = samples[0].views[0]
    assert (v.visibility == 0).sum() == outside
    assert np.isfinite(v.keypoints2d).all()  # out of frame, but known
    # Mirror the subject through the camera centre: same 2DPos, but every keypoint behind the camera.
    R, t = v.R, v.t
    C = -R.T @ t
    for k in kps.values():
        X = np.array([k["3DPos"]["x"], -k["3DPos"]["y"], k["3DPos"]["z"]])
        mirrored = 2 * C - X
        k["3DPos"] = {"x": mirrored[0], "y": -mirrored[1], "z": mirrored[2]}
    path.write_text(json.dumps(data))
    _, samples, _ = ingest_replicant(batch)
    v = samples[0].views[0]
    assert (v.visibility == 0).all() and np.isnan(v.keypoints2d).all()


# --------------------------------------------------------------------------------------------
# Joint mapping


def test_exact_names_map_onto_the_stick_insect_model_joints(ingested, fixtures_dir):
    """The replicAnt keypoint names are the SMILy_STICK joint names, in the same order."""
    from smil.body.io import load_model

    j_names = [str(n) for n in load_model(fixtures_dir / "models" / "SMILy_STICK.pkl")["J_names"]]
    for name in (RICH, OLD):
        header, samples, _ = ingested[name]
        assert header.joint_names == j_names
        assert header.info["joint_mapping"]["missing_joints"] == []
        assert all(s.keypoints3d.shape == (55, 3) and np.isfinite(s.keypoints3d).all() for s in samples)


def test_joint_map_renames_and_reports_missing_joints(replicant_dir, tmp_path):
    table = tmp_path / "map.csv"
    table.write_text("source,joint\nb_t,thorax\nb_h,head\n# a comment line\nan_3_l,antenna_tip\n,wing\n")
    targets = ["head", "thorax", "antenna_tip", "wing", "tail"]
    header, samples, _ = ingest_replicant(replicant_dir / OLD, joint_names=targets, joint_map=table)
    assert header.joint_names == targets
    report = header.info["joint_mapping"]
    assert report["missing_joints"] == ["wing", "tail"]
    assert "l_1_co_r" in report["unused_source_keypoints"]
    names, uv, xyz = _raw_keypoints(replicant_dir / OLD / "SMIL_00.json")
    s = next(s for s in samples if s.sample_id == "SMIL_00")
    v = s.views[0]
    np.testing.assert_allclose(v.keypoints2d[0], uv[names.index("b_h")] - 0.5)
    np.testing.assert_allclose(s.keypoints3d[1], xyz[names.index("b_t")] * [1, -1, 1])
    assert (
        (v.visibility[3:] == 0).all()
        and np.isnan(v.keypoints2d[3:]).all()
        and np.isnan(s.keypoints3d[3:]).all()
    )


def test_joint_map_with_an_unknown_joint_name_is_an_error(replicant_dir, tmp_path):
    table = tmp_path / "map.csv"
    table.write_text("source,joint\nb_t,thorax\nb_h,brain\n")
    with pytest.raises(DataError, match=r"line 3: unknown joint name 'brain'") as err:
        ingest_replicant(replicant_dir / OLD, joint_names=["thorax", "head"], joint_map=table)
    assert str(table) in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("b_t,thorax\n", "expected a header with columns 'source' and 'joint'"),
        ("source,joint\nb_t,thorax\nb_h,thorax\n", "joint 'thorax' is listed twice"),
        ("", "empty joint map"),
    ],
)
def test_malformed_joint_maps_are_errors(tmp_path, text, message):
    table = tmp_path / "map.csv"
    table.write_text(text)
    with pytest.raises(DataError, match=message):
        read_joint_map(table, ["thorax", "head"])


def test_build_joint_mapping_by_exact_name():
    index, report = build_joint_mapping(["a", "b", "c"], ["c", "x", "a"])
    assert index.tolist() == [2, -1, 0]
    assert report["missing_joints"] == ["x"] and report["unused_source_keypoints"] == ["b"]


def test_no_keypoint_matching_any_joint_is_an_error(replicant_dir):
    with pytest.raises(DataError, match="no keypoint maps to a body-model joint"):
        ingest_replicant(replicant_dir / OLD, joint_names=["Nose", "Tail"])


# --------------------------------------------------------------------------------------------
# Masks and occlusion


def test_old_format_instance_masks_select_the_subject(ingested):
    _, samples, _ = ingested[OLD]
    for s in samples:
        v = s.views[0]
        assert v.mask is not None and v.mask["value"] == 1
        assert v.mask["path"].endswith(f"{s.sample_id}_ID.png")
    s00 = next(s for s in samples if s.sample_id == "SMIL_00")
    assert (load_mask(s00.views[0].mask) == 255).sum() == 920  # the subject's pixels (R channel = id 1)


def test_rich_format_has_no_masks(ingested):
    _, samples, _ = ingested[RICH]
    assert all(s.views[0].mask is None for s in samples)


def test_mask_marks_occluded_keypoints_invisible(replicant_dir, ingested):
    _, samples, report = ingested[OLD]
    by_id = {s.sample_id: s for s in samples}
    # SMIL_06: the ant is completely hidden behind a leaf (its ID mask is empty)
    assert by_id["SMIL_06"].views[0].visibility.sum() == 0
    # SMIL_03: a blurred foreground object hides part of it
    assert 25 <= by_id["SMIL_03"].views[0].visibility.sum() <= 45
    assert by_id["SMIL_01"].views[0].visibility.sum() >= 53
    assert report.occluded_by_mask > 55
    _, plain, _ = ingest_replicant(replicant_dir / OLD, mask_occlusion=False)
    plain_06 = next(s for s in plain if s.sample_id == "SMIL_06")
    assert plain_06.views[0].visibility.sum() == 55  # in frame, occlusion unknown


# --------------------------------------------------------------------------------------------
# Layouts: multi-camera, several batches, split groups


def _unreal_screen(X_unreal: np.ndarray, view_projection: np.ndarray, W: int, H: int) -> np.ndarray:
    """Unreal's own projection (row vectors, reversed-Z, screen origin at the top-left corner)."""
    h = np.c_[X_unreal, np.ones(len(X_unreal))] @ view_projection
    ndc = h[:, :2] / h[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) / 2 * W, (1 - ndc[:, 1]) / 2 * H]


def _render_from(subject_json: Path, camera_json: Path) -> dict:
    """``subject_json``'s scene seen by ``camera_json``'s camera, with 2DPos recomputed the Unreal way."""
    data = _raw(subject_json)
    cam = _raw(camera_json)["iterationData"]["camera"]
    data["iterationData"]["camera"] = cam
    vp = unreal.planes_to_matrix(cam["View Projection Matrix"])
    for k in data["iterationData"]["subject Data"][0]["1"]["keypoints"].values():
        X = np.array([[k["3DPos"]["x"], k["3DPos"]["y"], k["3DPos"]["z"]]])
        u, v = _unreal_screen(X, vp, 1024, 1024)[0]
        k["2DPos"] = {"x": float(u), "y": float(v)}
    return data


@pytest.fixture
def multicam_dir(replicant_dir, tmp_path) -> Path:
    src = replicant_dir / RICH
    rig = tmp_path / "rig"
    rig.mkdir()
    shutil.copy(src / f"_BatchData_{RICH}.json", rig / "_BatchData_rig.json")
    frame1 = src / f"{RICH}_00.json"
    for cam, camera_src in (("CAM0", "00"), ("CAM1", "01"), ("CAM10", "02")):
        data = _render_from(frame1, src / f"{RICH}_{camera_src}.json")
        (rig / f"rig_00001_{cam}.json").write_text(json.dumps(data))
        shutil.copy(src / f"{RICH}_{camera_src}.JPG", rig / f"rig_00001_{cam}.JPG")
    shutil.copy(src / f"{RICH}_03.json", rig / "rig_00002_CAM1.json")
    shutil.copy(src / f"{RICH}_03.JPG", rig / "rig_00002_CAM1.JPG")
    return rig


def test_unreal_projection_helper_reproduces_the_fixture(replicant_dir):
    path = replicant_dir / RICH / f"{RICH}_05.json"
    cam = _raw(path)["iterationData"]["camera"]
    _, uv, xyz = _raw_keypoints(path)
    got = _unreal_screen(xyz, unreal.planes_to_matrix(cam["View Projection Matrix"]), 1024, 1024)
    np.testing.assert_allclose(got, uv, atol=1e-3)


def test_multi_camera_layout_groups_views_by_frame(multicam_dir):
    header, samples, _ = ingest_replicant(multicam_dir)
    assert header.camera_names == ["CAM0", "CAM1", "CAM10"]  # numeric, not string order
    assert [s.sample_id for s in samples] == ["rig_00001", "rig_00002"]
    assert [s.group for s in samples] == ["rig:1", "rig:2"] and [s.frame for s in samples] == [1, 2]
    first, second = samples
    assert [v.camera for v in first.views] == ["CAM0", "CAM1", "CAM10"]
    assert [v.camera for v in second.views] == ["CAM1"]
    for v in first.views:
        uv = project(*(torch.as_tensor(a) for a in (first.keypoints3d, v.K, v.R, v.t))).numpy()
        assert np.median(np.linalg.norm(uv - v.keypoints2d, axis=1)) <= 1.0
    # the three cameras differ, so the same 3D points land at different pixels
    assert np.abs(first.views[0].keypoints2d - first.views[1].keypoints2d).max() > 50


def test_multi_camera_views_of_one_frame_must_show_the_same_scene(multicam_dir, replicant_dir):
    src = replicant_dir / RICH
    (multicam_dir / "rig_00001_CAM1.json").write_text(json.dumps(_raw(src / f"{RICH}_01.json")))
    with pytest.raises(DataError, match="must show the same scene") as err:
        ingest_replicant(multicam_dir)
    assert "rig_00001_CAM1.json" in str(err.value)


def test_mixed_layouts_in_one_batch_are_an_error(multicam_dir, replicant_dir):
    shutil.copy(replicant_dir / RICH / f"{RICH}_04.json", multicam_dir / "rig_00004.json")
    with pytest.raises(DataError, match="mixes single-camera"):
        ingest_replicant(multicam_dir)


def test_a_folder_of_batches_and_group_by(replicant_dir, tmp_path):
    _copy_batch(replicant_dir / OLD, tmp_path / "all" / "a", ["SMIL_00", "SMIL_01"])
    _copy_batch(replicant_dir / RICH, tmp_path / "all" / "b", [f"{RICH}_00"])
    header, samples, _ = ingest_replicant(tmp_path / "all")
    assert [s.sample_id for s in samples] == ["a/SMIL_00", "a/SMIL_01", f"b/{RICH}_00"]
    assert [s.group for s in samples] == ["a:0", "a:1", "b:0"]
    assert [s.session for s in samples] == ["a", "a", "b"]
    assert [b["image_resolution"] for b in header.info["batches"]] == [[512, 512], [1024, 1024]]
    _, by_batch, _ = ingest_replicant(tmp_path / "all", group_by="batch")
    assert [s.group for s in by_batch] == ["a", "a", "b"]


def test_discover_batches_reads_the_batch_data(replicant_dir):
    (batch,) = discover_batches(replicant_dir / RICH)
    assert batch.resolution == (1024, 1024) and not batch.multi_camera and len(batch.files) == 20
    assert batch.batch_data["Subject Variations"]["1"]["Class"] == "SMIL_ant_new"


def test_several_subjects_in_one_render_become_several_samples(replicant_dir, tmp_path):
    batch = _copy_batch(replicant_dir / OLD, tmp_path / "two", ["SMIL_00"])
    path = batch / "SMIL_00.json"
    data = _raw(path)
    data["iterationData"]["subject Data"].append({"2": data["iterationData"]["subject Data"][0]["1"]})
    path.write_text(json.dumps(data))
    _, samples, _ = ingest_replicant(batch)
    assert [s.sample_id for s in samples] == ["SMIL_00#1", "SMIL_00#2"]
    assert [s.views[0].mask["value"] for s in samples] == [1, 2]
    assert samples[0].group == samples[1].group  # one render, one split
    assert samples[1].views[0].visibility.sum() == 0  # no pixel of id 2 in the mask: hidden


# --------------------------------------------------------------------------------------------
# Bad input


def _drop(*keys):
    def edit(data):
        obj = data
        for k in keys[:-1]:
            obj = obj[k]
        del obj[keys[-1]]

    return edit


KP = ("iterationData", "subject Data", 0, "1", "keypoints", "b_t")


@pytest.mark.parametrize(
    "edit, field, message",
    [
        (
            lambda d: [
                _drop("iterationData", "camera", "View Matrix")(d),
                _drop("iterationData", "camera", "Location")(d),
            ],
            "iterationData.camera.View Matrix",
            "neither a View Matrix nor Location",
        ),
        (
            lambda d: [
                _drop("iterationData", "camera", "FOV")(d),
                _drop("iterationData", "camera", "View Projection Matrix")(d),
            ],
            "iterationData.camera.FOV",
            "missing",
        ),
        (
            _drop("iterationData", "camera", "View Matrix", "wPlane"),
            "iterationData.camera.View Matrix.wPlane",
            "missing",
        ),
        (_drop(*KP, "3DPos"), "iterationData.subject Data[0].1.keypoints.b_t.3DPos", "missing"),
        (
            lambda d: d["iterationData"]["subject Data"][0]["1"]["keypoints"]["b_t"]["2DPos"].update(x="12"),
            "iterationData.subject Data[0].1.keypoints.b_t.2DPos.x",
            "expected a finite number",
        ),
        (_drop("iterationData", "subject Data"), "iterationData.subject Data", "missing"),
        # FOV-only camera with a wrong FOV: the file's own keypoints expose it
        (
            lambda d: [
                _drop("iterationData", "camera", "View Projection Matrix")(d),
                d["iterationData"]["camera"].update(FOV=30.0),
            ],
            "iterationData.camera",
            "projects the 3DPos keypoints",
        ),
    ],
)
def test_bad_annotation_fields_name_the_file_and_field(replicant_dir, tmp_path, edit, field, message):
    batch = _copy_batch(replicant_dir / OLD, tmp_path / "bad", ["SMIL_00", "SMIL_01"])
    path = batch / "SMIL_01.json"
    data = _raw(path)
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as err:
        ingest_replicant(batch)
    assert err.value.path == str(path) and err.value.field == field
    # skipped and counted with skip_bad
    header, samples, report = ingest_replicant(batch, skip_bad=True)
    assert [s.sample_id for s in samples] == ["SMIL_00"]
    assert report.skipped_bad == 1 and header.info["skipped_bad"] == 1
    assert "SMIL_01.json" in header.info["bad_reasons"][0]


def test_fov_only_camera_is_converted_as_horizontal_fov(replicant_dir, tmp_path):
    batch = _copy_batch(replicant_dir / RICH, tmp_path / "fov", [f"{RICH}_07"])
    path = batch / f"{RICH}_07.json"
    data = _raw(path)
    del data["iterationData"]["camera"]["View Projection Matrix"]
    del data["iterationData"]["camera"]["View Matrix"]  # pose from Location + Rotation
    path.write_text(json.dumps(data))
    header, samples, _ = ingest_replicant(batch)
    assert header.info["camera_sources"] == {"Location+Rotation, FOV (horizontal)": 1}
    assert header.info["reprojection_px"]["median"] < 0.01


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: (b / "SMIL_01.json").write_text('{"iterationData": {"camera": '), "not valid JSON"),
        (lambda b: (b / "SMIL_01.JPG").unlink(), "image not found"),
        (lambda b: (b / "SMIL_01.JPG").write_bytes(b"not a jpeg"), "cannot read image header"),
        (lambda b: (b / "SMIL_01.json").rename(b / "SMIL_one.json"), "file name does not follow"),
    ],
)
def test_bad_files_are_errors_or_skipped(replicant_dir, tmp_path, damage, message):
    batch = _copy_batch(replicant_dir / OLD, tmp_path / "bad", ["SMIL_00", "SMIL_01"])
    damage(batch)
    with pytest.raises(DataError, match=message) as err:
        ingest_replicant(batch)
    assert "SMIL_01" in str(err.value) or "SMIL_one" in str(err.value)
    header, samples, report = ingest_replicant(batch, skip_bad=True)
    assert len(samples) == 1 and report.skipped_bad == 1


def test_image_size_must_match_the_batch_resolution(replicant_dir, tmp_path):
    batch = _copy_batch(replicant_dir / OLD, tmp_path / "res", ["SMIL_00"])
    bd = batch / "_BatchData_SMIL.json"
    data = _raw(bd)
    data["Image Resolution"] = {"x": 1024, "y": 512}
    bd.write_text(json.dumps(data))
    with pytest.raises(DataError, match="image is 512×512 but the batch's Image Resolution is 1024×512"):
        ingest_replicant(batch)


def test_a_folder_without_annotations_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no replicAnt annotation found"):
        ingest_replicant(tmp_path)


# --------------------------------------------------------------------------------------------
# Reference loader for the loader benchmark


def test_load_raw_sample_resizes_image_and_keypoints(replicant_dir, ingested):
    path = replicant_dir / RICH / f"{RICH}_02.json"
    raw = load_raw_sample(path, 256)
    assert raw.image.shape == (256, 256, 3) and raw.image.dtype == np.uint8
    _, samples, _ = ingested[RICH]
    full = next(s for s in samples if s.sample_id == f"{RICH}_02").views[0].keypoints2d
    np.testing.assert_allclose(raw.keypoints2d, (full + 0.5) / 4 - 0.5, atol=1e-3)
    assert load_raw_sample(path, (300, 200)).image.shape == (200, 300, 3)


def test_read_annotation_reports_its_camera_source(replicant_dir):
    ann = read_annotation(replicant_dir / OLD / "SMIL_04.json")
    assert ann.camera_source == "View Matrix, View Projection Matrix"
    assert ann.image_size == (512, 512) and ann.mask_path is not None
    assert ann.self_reprojection_px.max() < 1e-6


# --------------------------------------------------------------------------------------------
# Body parameters


@pytest.fixture(scope="module")
def stick_ingest(replicant_dir, fixtures_dir):
    return ingest_replicant(replicant_dir / RICH, body_model=fixtures_dir / "models" / "SMILy_STICK.pkl")


def test_stick_insect_model_gets_no_unverifiable_parameters(stick_ingest, fixtures_dir):
    """The demo renders used another model ("SMIL_ant_new"): 20 betas vs 5, different bone lengths."""
    from smil.body.io import model_sha256

    header, samples, report = stick_ingest
    assert header.body_model_sha256 == model_sha256(fixtures_dir / "models" / "SMILy_STICK.pkl")
    assert all(s.params is None for s in samples)
    assert report.betas_stored == 0 and "20" in header.info["betas"] and "5" in header.info["betas"]
    assert report.rotations_stored == 0 and "does not reproduce the 3DPos" in header.info["rotations"]


def _render_skeleton_model(json_path: Path, stick: dict, num_betas: int) -> dict:
    """A body model whose rest skeleton is the render's: joints = bones at their bind offsets."""
    from smil.body.io import parents_from_kintree

    kps = _raw(json_path)["iterationData"]["subject Data"][0]["1"]["keypoints"]
    parents = parents_from_kintree(stick["kintree_table"])
    offsets = [[k["transform"]["translation"][c] for c in "xyz"] for k in kps.values()]
    rest = np.zeros((len(parents), 3))
    for j in range(1, len(parents)):  # parents come before children in this skeleton
        rest[j] = rest[parents[j]] + np.asarray(offsets[j]) * [1, -1, 1]
    J = len(parents)
    return {
        "v_template": rest,
        "f": np.array([[0, 1, 2], [0, 2, 6]]),
        "weights": np.eye(J),
        "J_regressor": np.eye(J),
        "kintree_table": stick["kintree_table"],
        "J_names": stick["J_names"],
        "shapedirs": np.zeros((J, 3, num_betas)),
        "posedirs": np.zeros(0),
    }


def test_rotations_are_stored_when_the_posed_model_reproduces_the_render(
    replicant_dir, fixtures_dir, tmp_path
):
    from smil.body.io import load_model, save_model
    from smil.body.model import SMILModel

    stick = load_model(fixtures_dir / "models" / "SMILy_STICK.pkl")
    model_path = tmp_path / "render_skeleton.pkl"
    save_model(model_path, _render_skeleton_model(replicant_dir / RICH / f"{RICH}_00.json", stick, 20))
    header, samples, report = ingest_replicant(replicant_dir / RICH, body_model=model_path)
    assert report.rotations_stored == 20 and report.betas_stored == 20
    assert header.info["rotations"].startswith("stored for every sample")
    model = SMILModel.from_file(model_path, dtype=torch.float64)
    for s in samples:
        p = {k: torch.as_tensor(v)[None] for k, v in s.params.items()}
        assert set(p) == {"betas", "global_rot", "joint_rot", "scale", "trans"}
        joints = model(
            p["betas"], p["global_rot"], p["joint_rot"], trans=p["trans"], scale=p["scale"]
        ).joints[0]
        np.testing.assert_allclose(joints.numpy(), s.keypoints3d, atol=1e-4)  # centimetres
        assert float(p["scale"]) == pytest.approx(0.1, rel=1e-6)  # the render's bone scale
    # the manifest round-trip keeps them
    from smil.data.manifest import iter_manifest, write_manifest

    write_manifest(tmp_path / "m.jsonl", header, samples)
    back = list(iter_manifest(tmp_path / "m.jsonl"))
    np.testing.assert_allclose(back[3].params["joint_rot"], samples[3].params["joint_rot"])


def test_rotations_with_a_wrong_global_frame_are_refused(replicant_dir, fixtures_dir, tmp_path):
    """Same skeleton, but the model's frame mirrored: the similarity fit would need a rotation -> refused."""
    from smil.body.io import load_model, save_model

    stick = load_model(fixtures_dir / "models" / "SMILy_STICK.pkl")
    data = _render_skeleton_model(replicant_dir / RICH / f"{RICH}_00.json", stick, 20)
    data["v_template"] = data["v_template"] * [1, 1, -1]
    save_model(tmp_path / "mirrored.pkl", data)
    _, samples, report = ingest_replicant(replicant_dir / RICH, body_model=tmp_path / "mirrored.pkl")
    assert report.rotations_stored == 0
    assert all(set(s.params) == {"betas"} for s in samples)


def test_non_square_render_uses_the_horizontal_fov(replicant_dir, tmp_path):
    """A 1024×512 render: Unreal's FOV spans the width; the projection's P11 = P00 · W/H."""
    import cv2

    W, H = 1024, 512
    src = replicant_dir / RICH / f"{RICH}_01.json"
    data = _raw(src)
    cam = data["iterationData"]["camera"]
    view = unreal.planes_to_matrix(cam["View Matrix"])
    p00 = 1 / np.tan(np.radians(cam["FOV"]) / 2)
    proj = np.array([[p00, 0, 0, 0], [0, p00 * W / H, 0, 0], [0, 0, 0, 1], [0, 0, 10, 0]])
    vp = view @ proj
    cam["View Projection Matrix"] = {
        plane: dict(zip("xyzw", map(float, row), strict=True))
        for plane, row in zip(("xPlane", "yPlane", "zPlane", "wPlane"), vp, strict=True)
    }
    for k in data["iterationData"]["subject Data"][0]["1"]["keypoints"].values():
        X = np.array([[k["3DPos"]["x"], k["3DPos"]["y"], k["3DPos"]["z"]]])
        u, v = _unreal_screen(X, vp, W, H)[0]
        k["2DPos"] = {"x": float(u), "y": float(v)}
    batch = tmp_path / "wide"
    batch.mkdir()
    (batch / "wide_01.json").write_text(json.dumps(data))
    cv2.imwrite(str(batch / "wide_01.JPG"), np.zeros((H, W, 3), np.uint8))
    _, samples, _ = ingest_replicant(batch)
    K = samples[0].views[0].K
    fx = (W / 2) / np.tan(np.radians(cam["FOV"]) / 2)
    np.testing.assert_allclose(K, [[fx, 0, W / 2 - 0.5], [0, fx, H / 2 - 0.5], [0, 0, 1]], rtol=1e-9)
    # the FOV alone gives the same camera
    del data["iterationData"]["camera"]["View Projection Matrix"]
    (batch / "wide_01.json").write_text(json.dumps(data))
    _, samples, _ = ingest_replicant(batch)
    np.testing.assert_allclose(samples[0].views[0].K, K, rtol=1e-9)
