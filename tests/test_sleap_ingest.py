"""``smil ingest sleap`` on the real SLEAP fixtures (sleap-anipose session folder, multi-view .slp)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import sleap_io as sio

from smil.data.calibration import read_calibration_toml, write_calibration_toml
from smil.data.manifest import iter_manifest, read_manifest_header
from smil.data.sleap_ingest import ingest_sleap
from smil.errors import DataError
from smil.geometry.camera import undistort_points

# --------------------------------------------------------------------------------------------
# Fixture locations and cached ingests


@pytest.fixture(scope="module")
def anipose_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sleap" / "talmolab+sleap-anipose" / "tests" / "data" / "minimal_session"


@pytest.fixture(scope="module")
def slp_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sleap" / "talmolab+sleap" / "tests" / "data" / "cameras" / "minimal_session"


@pytest.fixture(scope="module")
def videos_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sleap" / "talmolab+sleap" / "tests" / "data" / "videos"


@pytest.fixture(scope="module")
def folder_ingest(anipose_dir: Path):
    return ingest_sleap(anipose_dir)


@pytest.fixture(scope="module")
def slp_ingest(slp_dir: Path):
    return ingest_sleap(slp_dir / "min_session.slp")


def _view(sample, camera):
    return next(v for v in sample.views if v.camera == camera)


def _project(X, v):
    xc = X @ v.R.T + v.t
    uv = xc @ v.K.T
    return uv[:, :2] / uv[:, 2:3]


def _median_reprojection(samples, camera):
    errs = []
    for s in samples:
        for v in s.views:
            if v.camera == camera and s.keypoints3d is not None:
                e = np.linalg.norm(_project(s.keypoints3d, v) - v.keypoints2d, axis=1)
                errs.append(e[np.isfinite(e)])
    return float(np.median(np.concatenate(errs)))


def _relink_videos(labels, videos_dir: Path) -> None:
    """Point a loaded .slp's videos at the fixture videos (they store Windows paths)."""
    for v in labels.videos:
        v.replace_filename(str(videos_dir / v.filename.split("/")[-1]), open=False)


# --------------------------------------------------------------------------------------------
# Layout (a): sleap-anipose session folder


def test_session_folder_gives_one_sample_per_frame_across_four_cameras(folder_ingest, anipose_dir):
    header, samples, report = folder_ingest
    assert header.source_kind == "sleap"
    assert header.camera_names == ["back", "mid", "side", "top"]
    assert header.joint_names[:3] == ["Nose", "Ear_R", "Ear_L"] and len(header.joint_names) == 15
    assert header.world_unit_m == pytest.approx(0.001)  # aniposelib board units: millimetres
    assert len(samples) == 120
    assert sorted(s.frame for s in samples) == list(range(120))
    assert {s.group for s in samples} == {"minimal_session"}
    assert {s.session for s in samples} == {"minimal_session"}
    first = samples[0]
    assert [v.camera for v in first.views] == ["back", "mid", "side", "top"]
    back = _view(first, "back")
    assert Path(back.image["video"]) == (anipose_dir / "back" / "minimal_back.mp4").resolve()
    assert back.image["frame"] == first.frame
    assert back.image_size == (1280, 1024)
    assert back.dist is not None and back.dist[0] == pytest.approx(-0.2853406116327607)
    assert report.predicted_views == 480 and report.user_views == 0


def test_keypoints_are_undistorted_with_the_camera_dist(folder_ingest, anipose_dir):
    _, samples, _ = folder_ingest
    labels = sio.load_slp(str(anipose_dir / "back" / "minimal_back_proofread.slp"), open_videos=False)
    lf = next(lf for lf in labels.labeled_frames if lf.frame_idx == 5)
    raw = lf.instances[0].numpy()
    sample = next(s for s in samples if s.frame == 5)
    back = _view(sample, "back")
    expected = undistort_points(raw, back.K, back.dist)
    np.testing.assert_allclose(back.keypoints2d, expected, atol=1e-6)
    shift = np.linalg.norm(back.keypoints2d - raw, axis=1)
    assert np.nanmax(shift) > 5  # k1 ≈ -0.29: undistortion moves points by pixels


def test_nan_points_are_invisible_and_survive_the_manifest(folder_ingest, anipose_dir, tmp_path):
    from smil.data.manifest import write_manifest

    header, samples, _ = folder_ingest
    labels = sio.load_slp(str(anipose_dir / "back" / "minimal_back_proofread.slp"), open_videos=False)
    raw_missing = sum(int(np.isnan(i.numpy()).any(axis=1).sum()) for lf in labels for i in lf.instances)
    assert raw_missing > 0  # the fixture's predictions miss points (NaN with visible=True)
    backs = [_view(s, "back") for s in samples]
    invisible = sum(int((v.visibility == 0).sum()) for v in backs)
    assert invisible == raw_missing
    for v in backs:
        assert np.isnan(v.keypoints2d[v.visibility == 0]).all()
        assert np.isfinite(v.keypoints2d[v.visibility > 0]).all()
    out = tmp_path / "manifest.jsonl"
    write_manifest(out, header, samples[:5])
    back = _view(next(iter_manifest(out)), "back")
    np.testing.assert_array_equal(np.isnan(back.keypoints2d[:, 0]), backs[0].visibility == 0)


def test_3d_from_points3d_reprojects_onto_the_undistorted_keypoints(folder_ingest, anipose_dir):
    header, samples, report = folder_ingest
    with h5py.File(anipose_dir / "points3d.h5", "r") as f:
        tracks = f["tracks"][()]
    s7 = next(s for s in samples if s.frame == 7)
    np.testing.assert_allclose(s7.keypoints3d, tracks[7, 0])
    medians = {cam: _median_reprojection(samples, cam) for cam in header.camera_names}
    for cam in ("back", "mid", "top"):
        assert medians[cam] < 15, medians
    # The 'side' calibration entry is a copy of 'top' (known fixture defect): it cannot fit.
    assert medians["side"] > 50, medians
    assert report.reprojection_median_px["top"] == pytest.approx(medians["top"])


def test_calibration_file_order_is_kept_and_cameras_match_by_name(anipose_dir, tmp_path):
    cams = {c.name: c for c in read_calibration_toml(anipose_dir / "calibration.toml")}
    order = ["top", "back", "side", "mid"]
    toml = tmp_path / "reordered.toml"
    write_calibration_toml(toml, [cams[n] for n in order])
    header, samples, _ = ingest_sleap(anipose_dir, calibration=toml)
    assert header.camera_names == order
    assert [v.camera for v in samples[0].views] == order
    back = _view(samples[0], "back")
    np.testing.assert_allclose(back.K, cams["back"].K)
    assert Path(back.image["video"]).name == "minimal_back.mp4"


def test_sixteen_camera_calibration_keeps_file_order(anipose_dir, fixtures_dir, tmp_path):
    allen = read_calibration_toml(
        fixtures_dir
        / "sleap"
        / "lambdaloop+aniposelib"
        / "tests"
        / "data"
        / "calib"
        / "12cam-allen-mouse"
        / "calibration.toml"
    )
    ours = read_calibration_toml(anipose_dir / "calibration.toml")
    toml = tmp_path / "sixteen.toml"  # sections cam_0 … cam_15: string-sorting would put cam_10 first
    write_calibration_toml(toml, [*allen, *ours])
    header, samples, _ = ingest_sleap(anipose_dir, calibration=toml)
    allen_names = [c.name for c in allen]
    assert header.camera_names == [*allen_names, "back", "mid", "side", "top"]
    assert header.info["cameras_without_labels"] == {"minimal_session": allen_names}
    assert [v.camera for v in samples[0].views] == ["back", "mid", "side", "top"]
    np.testing.assert_allclose(_view(samples[0], "mid").K, ours[1].K)


def test_calibration_lacking_a_labeled_camera_names_both_lists(anipose_dir, tmp_path):
    cams = [c for c in read_calibration_toml(anipose_dir / "calibration.toml") if c.name != "mid"]
    toml = tmp_path / "three.toml"
    write_calibration_toml(toml, cams)
    with pytest.raises(DataError) as err:
        ingest_sleap(anipose_dir, calibration=toml)
    msg = str(err.value)
    assert "['mid']" in msg
    assert "['back', 'side', 'top']" in msg  # calibration cameras
    assert "['back', 'mid', 'side', 'top']" in msg  # cameras in the data
    assert str(toml) in msg


def test_calibration_missing_a_key_is_a_clear_error(anipose_dir, tmp_path):
    text = (anipose_dir / "calibration.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(line for line in text.splitlines() if not line.startswith("matrix")))
    with pytest.raises(DataError) as err:
        ingest_sleap(anipose_dir, calibration=bad)
    assert "cam_0.matrix" in str(err.value) and str(bad) in str(err.value)


# --------------------------------------------------------------------------------------------
# Layout (b): .slp with a RecordingSession


def test_recording_session_matches_cameras_by_name_not_video_order(slp_ingest, slp_dir):
    header, samples, _ = slp_ingest
    labels = sio.load_slp(str(slp_dir / "min_session.slp"), open_videos=False)
    assert labels.videos[7].filename.endswith("min_session_back.mp4")  # back is the last video
    assert header.camera_names == ["back", "backL", "mid", "midL", "side", "sideL", "top", "topL"]
    calib = {c.name: c for c in read_calibration_toml(slp_dir / "calibration.toml")}
    for s in samples:
        for v in s.views:
            assert Path(v.image["video"]).name == f"min_session_{v.camera}.mp4"
            np.testing.assert_allclose(v.K, calib[v.camera].K)
            np.testing.assert_allclose(v.t, calib[v.camera].t)
    # 3 video frames × 2 tracks; frames are video frame indices, not rows of /frames.
    assert sorted({s.frame for s in samples}) == [0, 1, 2]
    assert len(samples) == 6
    assert {s.sample_id.rsplit("/", 1)[1] for s in samples} == {"track_0", "track_1"}
    assert {s.group for s in samples} == {"min_session"}


def test_triangulated_3d_reprojects_in_every_camera(slp_ingest):
    header, samples, report = slp_ingest
    assert "triangulated" in report.keypoints3d_source["min_session"]
    assert all(s.keypoints3d is not None for s in samples)
    for cam in header.camera_names:
        # A camera matched by list position instead of name would be hundreds of pixels off.
        assert _median_reprojection(samples, cam) < 15, cam


def test_user_labels_win_over_predictions(slp_dir, videos_dir, tmp_path, slp_ingest):
    labels = sio.load_slp(str(slp_dir / "min_session_user_labeled.slp"), open_videos=False)
    _relink_videos(labels, videos_dir)
    # The fixture's user instances copy the predictions; move them so the two differ.
    for lf in labels.labeled_frames:
        for inst in lf.user_instances:
            inst.points["xy"] += 7.0
    path = tmp_path / "user_moved.slp"
    sio.save_slp(labels, str(path))
    header, samples, report = ingest_sleap(path)
    assert report.user_views == 42 and report.predicted_views == 0
    _, pred_samples, pred_report = slp_ingest
    assert pred_report.user_views == 0
    lf = next(
        lf for lf in labels.labeled_frames if lf.frame_idx == 1 and lf.video.filename.endswith("_mid.mp4")
    )
    user = next(i for i in lf.user_instances if i.track.name == "track_0")
    sample = next(s for s in samples if s.frame == 1 and s.sample_id.endswith("track_0"))
    mid = _view(sample, "mid")
    np.testing.assert_allclose(mid.keypoints2d, undistort_points(user.numpy(), mid.K, mid.dist), atol=1e-6)
    pred = _view(next(s for s in pred_samples if s.frame == 1 and s.sample_id.endswith("track_0")), "mid")
    assert np.nanmin(np.linalg.norm(mid.keypoints2d - pred.keypoints2d, axis=1)) > 5


def test_frame_groups_define_the_animals(slp_dir):
    _, samples, report = ingest_sleap(slp_dir / "min_session_frame_groups.slp")
    assert len(samples) == 6
    assert report.user_views == 42  # the instance groups point at user instances
    by_id = {s.sample_id: s for s in samples}
    group1 = by_id["min_session_frame_groups/000000/instance_group_1"]
    assert [v.camera for v in group1.views] == ["back", "backL", "mid", "midL", "top", "topL"]


def test_external_calibration_lacking_a_camera_is_an_error(slp_dir, tmp_path):
    cams = [c for c in read_calibration_toml(slp_dir / "calibration.toml") if c.name != "back"]
    toml = tmp_path / "seven.toml"
    write_calibration_toml(toml, cams)
    with pytest.raises(DataError) as err:
        ingest_sleap(slp_dir / "min_session.slp", calibration=toml)
    msg = str(err.value)
    assert "['back']" in msg and "calibration cameras: ['backL'" in msg and "cameras in the data: [" in msg


def test_empty_slp_is_an_error_naming_the_file(tmp_path):
    skeleton = sio.Skeleton(["head", "tail"])
    path = tmp_path / "empty.slp"
    sio.save_slp(sio.Labels(skeletons=[skeleton]), str(path))
    with pytest.raises(DataError) as err:
        ingest_sleap(path)
    assert str(path) in str(err.value) and "no labeled frames" in str(err.value)


def test_missing_video_names_the_stored_path_and_where_it_looked(slp_dir, videos_dir, tmp_path):
    moved = tmp_path / "min_session.slp"
    shutil.copy(slp_dir / "min_session.slp", moved)
    with pytest.raises(DataError) as err:
        ingest_sleap(moved)
    msg = str(err.value)
    assert "D:/social-leap-estimates-animal-poses" in msg and "min_session_" in msg
    assert "looked for it at" in msg and str(tmp_path) in msg
    _, samples, _ = ingest_sleap(moved, video_dirs=(videos_dir,))
    assert len(samples) == 6


def test_single_camera_slp_is_refused(anipose_dir):
    with pytest.raises(DataError, match="no RecordingSession"):
        ingest_sleap(anipose_dir / "back" / "minimal_back_proofread.slp")


def test_bad_frames_fail_or_are_skipped_and_counted(slp_dir, videos_dir, tmp_path):
    labels = sio.load_slp(str(slp_dir / "min_session.slp"), open_videos=False)
    _relink_videos(labels, videos_dir)
    lf = next(
        lf for lf in labels.labeled_frames if lf.video.filename.endswith("_top.mp4") and lf.frame_idx == 2
    )
    lf.frame_idx = 40  # the videos have 4 frames
    path = tmp_path / "bad_frame.slp"
    sio.save_slp(labels, str(path))
    with pytest.raises(DataError) as err:
        ingest_sleap(path)
    assert "frame 40" in str(err.value) and "--skip-bad" in str(err.value)
    _, samples, report = ingest_sleap(path, skip_bad=True)
    assert report.skipped_bad == 1 and len(samples) == 6
    assert 40 not in {s.frame for s in samples}


# --------------------------------------------------------------------------------------------
# CLI


def _cli(argv: list[str]) -> int:
    from smil.cli import main

    return main(["ingest", *argv])


def test_cli_writes_a_manifest(slp_dir, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    code = _cli(
        [
            "sleap",
            str(slp_dir / "min_session_frame_groups.slp"),
            "--out",
            str(out),
            "--joint-names-from-skeleton",
            "--world-unit-m",
            "0.01",
            "--session",
            "mice1",
        ]
    )
    assert code == 0
    header = read_manifest_header(out)
    assert header.world_unit_m == pytest.approx(0.01)
    assert header.info["world_unit_m_source"] == "--world-unit-m"
    samples = list(iter_manifest(out))
    assert len(samples) == 6 and {s.group for s in samples} == {"mice1"}
    assert "wrote 6 samples" in capsys.readouterr().err
    line = json.loads(out.read_text().splitlines()[1])
    assert line["views"][0]["image"]["frame"] == 0


def test_cli_needs_joint_names_source(slp_dir, tmp_path):
    with pytest.raises(SystemExit):
        _cli(["sleap", str(slp_dir / "min_session.slp"), "--out", str(tmp_path / "m.jsonl")])


# --------------------------------------------------------------------------------------------
# Joint mapping

MOUSE_JOINTS = ["Lumbar-Vertebrae", "skull", "Ear_L", "Ear_R", "Nose", "Tail_00", "Tail_07", "femur_L"]


def test_joint_map_table_feeds_body_model_joints_and_reports_the_rest(slp_ingest, slp_dir, tmp_path):
    table = tmp_path / "map.csv"
    table.write_text("source,joint\nHead,skull\nTail_0,Tail_00\nTailTip,Tail_07\nNose,Nose\nEar_L,Ear_L\n")
    header, samples, _ = ingest_sleap(slp_dir / "min_session.slp", joint_names=MOUSE_JOINTS, joint_map=table)
    assert header.joint_names == MOUSE_JOINTS
    report = header.info["joint_mapping"]
    assert report["missing_joints"] == ["Lumbar-Vertebrae", "Ear_R", "femur_L"]
    assert "Trunk" in report["unused_source_keypoints"]
    _, plain, _ = slp_ingest
    nodes = plain[0].views[0].keypoints2d  # skeleton order: Nose, Ear_R, Ear_L, TTI, TailTip, Head, …
    first = samples[0].views[0]
    np.testing.assert_array_equal(first.keypoints2d[1], nodes[5])  # skull <- Head
    np.testing.assert_array_equal(first.keypoints2d[6], nodes[4])  # Tail_07 <- TailTip
    assert (first.visibility[[0, 3, 7]] == 0).all() and np.isnan(first.keypoints2d[[0, 3, 7]]).all()
    assert samples[0].keypoints3d.shape == (8, 3) and np.isnan(samples[0].keypoints3d[0]).all()


def test_joint_map_with_unknown_joint_is_an_error(slp_dir, tmp_path):
    table = tmp_path / "map.csv"
    table.write_text("source,joint\nHead,brain\n")
    with pytest.raises(DataError, match="unknown joint name 'brain'"):
        ingest_sleap(slp_dir / "min_session.slp", joint_names=MOUSE_JOINTS, joint_map=table)


def test_no_node_matching_any_joint_is_an_error(slp_dir):
    with pytest.raises(DataError, match="no skeleton node maps to a joint"):
        ingest_sleap(slp_dir / "min_session.slp", joint_names=["b_t", "b_a_1"])


def test_cli_reports_bad_input_in_one_line(slp_dir, tmp_path, capsys):
    moved = tmp_path / "min_session.slp"
    shutil.copy(slp_dir / "min_session.slp", moved)
    out = tmp_path / "m.jsonl"
    assert _cli(["sleap", str(moved), "--out", str(out), "--joint-names-from-skeleton"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smil: error: ") and "video not found" in err and "\n" not in err
    assert not out.exists()


def test_session_folder_without_points3d_triangulates(anipose_dir, tmp_path):
    session = tmp_path / "no3d"
    session.mkdir()
    for cam in ("back", "mid", "top"):  # 'side' left out: its calibration is a copy of 'top'
        (session / cam).symlink_to(anipose_dir / cam, target_is_directory=True)
    cams = [c for c in read_calibration_toml(anipose_dir / "calibration.toml") if c.name != "side"]
    write_calibration_toml(session / "calibration.toml", cams)
    header, samples, report = ingest_sleap(session)
    assert "triangulated" in report.keypoints3d_source["no3d"]
    assert header.camera_names == ["back", "mid", "top"] and len(samples) == 120
    for cam in header.camera_names:
        assert _median_reprojection(samples, cam) < 15, cam


def test_untracked_animals_that_cannot_be_told_apart_make_bad_frames(slp_dir, videos_dir, tmp_path):
    labels = sio.load_slp(str(slp_dir / "min_session.slp"), open_videos=False)
    _relink_videos(labels, videos_dir)
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            inst.track = None
    path = tmp_path / "untracked.slp"
    sio.save_slp(labels, str(path))
    with pytest.raises(DataError, match="cannot tell animals apart"):
        ingest_sleap(path)
    _, samples, report = ingest_sleap(path, skip_bad=True)
    assert samples == [] and report.skipped_bad == 3


def test_cli_with_body_model_and_joint_map(slp_dir, fixtures_dir, tmp_path):
    from smil.body.io import model_sha256

    model = fixtures_dir / "models" / "SMILy_Mouse_static_joints.pkl"
    table = tmp_path / "mouse.csv"
    table.write_text(
        "source,joint\n"
        "Nose,Nose\nEar_L,Ear_L\nEar_R,Ear_R\nHead,skull\nNeck,cervical-vertebrae\n"
        "Trunk,tharocic-vertebrae\nTTI,Lumbar-Vertebrae\nTail_0,Tail_00\nTail_1,Tail_02\n"
        "Tail_2,Tail_04\nTailTip,Tail_07\nShoulder_left,humerus_L\nShoulder_right,humerus_R\n"
        "Haunch_left,femur_L\nHaunch_right,femur_R\n"
    )
    out = tmp_path / "mouse.jsonl"
    argv = ["sleap", str(slp_dir / "min_session.slp"), "--out", str(out), "--body-model", str(model)]
    assert _cli([*argv, "--joint-map", str(table)]) == 0
    header = read_manifest_header(out)
    assert len(header.joint_names) == 31 and header.joint_names[3] == "skull"
    assert header.body_model_sha256 == model_sha256(model)
    assert header.info["joint_mapping"]["unused_source_keypoints"] == []
    assert "paw_L" in header.info["joint_mapping"]["missing_joints"]
    sample = next(iter_manifest(out))
    assert sample.views[0].keypoints2d.shape == (31, 2) and sample.keypoints3d.shape == (31, 3)
    assert np.isfinite(sample.keypoints3d[header.joint_names.index("skull")]).all()
