"""aniposelib calibration TOML: real files, file order, clear errors, write→read round trip."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from smil.data.calibration import (
    CameraCalibration,
    by_name,
    read_calibration_metadata,
    read_calibration_toml,
    write_calibration_toml,
)
from smil.errors import DataError

SLEAP = Path("sleap")
ANIPOSELIB_CALIB = SLEAP / "lambdaloop+aniposelib/tests/data/calib"
SLEAP_SESSION = SLEAP / "talmolab+sleap/tests/data/cameras/minimal_session/calibration.toml"
ANIPOSE_SESSION = SLEAP / "talmolab+sleap-anipose/tests/data/minimal_session/calibration.toml"


def _names_in_file_order(path: Path) -> list[str]:
    """Camera names as they appear in the text, top to bottom (independent of the TOML parser)."""
    return re.findall(r'^name\s*=\s*"([^"]*)"', path.read_text(), flags=re.M)


def _check_camera(cam: CameraCalibration) -> None:
    assert cam.K.shape == (3, 3) and cam.K.dtype == np.float64
    assert cam.R.shape == (3, 3) and cam.t.shape == (3,)
    np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(cam.R) - 1) < 1e-12
    assert cam.dist.ndim == 1 and cam.dist.size in (4, 5, 8, 12, 14)
    w, h = cam.image_size
    assert isinstance(w, int) and w > 0 and h > 0
    assert cam.projection_matrix().shape == (3, 4)


def test_reads_all_fixture_calibrations(fixtures_dir: Path):
    paths = sorted((fixtures_dir / ANIPOSELIB_CALIB).glob("*/*.toml"))
    paths += [fixtures_dir / SLEAP_SESSION, fixtures_dir / ANIPOSE_SESSION]
    counts = {}
    for path in paths:
        assert path.is_file(), path
        cams = read_calibration_toml(path)
        assert [c.name for c in cams] == _names_in_file_order(path)
        for cam in cams:
            _check_camera(cam)
        counts[path.relative_to(fixtures_dir).as_posix()] = len(cams)
    assert counts[(ANIPOSELIB_CALIB / "7cam-allen-mouse/calibration.toml").as_posix()] == 7
    assert counts[(ANIPOSELIB_CALIB / "12cam-allen-mouse/calibration.toml").as_posix()] == 12
    assert counts[SLEAP_SESSION.as_posix()] == 8
    assert counts[ANIPOSE_SESSION.as_posix()] == 4


def test_twelve_cameras_keep_file_order(fixtures_dir: Path):
    path = fixtures_dir / ANIPOSELIB_CALIB / "12cam-allen-mouse/calibration.toml"
    cams = read_calibration_toml(path)
    names = [c.name for c in cams]
    # [cam_10] is cam898: a string sort of the table names would put it third.
    assert names[2] == "cam574" and names[10] == "cam898" and names[11] == "cam899"
    assert read_calibration_metadata(path)["adjusted"] is False


def test_values_and_rodrigues_conversion(fixtures_dir: Path):
    cams = by_name(read_calibration_toml(fixtures_dir / ANIPOSE_SESSION))
    back = cams["back"]
    assert back.image_size == (1280, 1024)
    np.testing.assert_allclose(back.K[0, 0], 769.8864926727645)
    np.testing.assert_allclose(back.K[:2, 2], [639.5, 511.5])
    np.testing.assert_allclose(back.dist, [-0.2853406116327607, 0, 0, 0, 0])
    rvec = np.array([-0.01620434170631696, 0.00243953661952865, -0.0008482754607133058])
    np.testing.assert_allclose(back.R, cv2.Rodrigues(rvec)[0], atol=1e-15)
    np.testing.assert_allclose(back.rvec, rvec, atol=1e-14)
    np.testing.assert_allclose(back.t, [0.11101046010648573, -5.942766688873288, -122.27936818948484])
    assert list(cams) == ["back", "mid", "side", "top"]


GOOD_CAM = """
name = "{name}"
size = [640, 480]
matrix = [[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]]
distortions = [-0.1, 0.01, 0.0, 0.0, 0.0]
rotation = [0.1, -0.2, 0.3]
translation = [1.0, 2.0, 3.0]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calibration.toml"
    path.write_text(text)
    return path


def test_missing_field_names_file_section_and_field(tmp_path: Path):
    broken = GOOD_CAM.format(name="d").replace(
        "matrix = [[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]]\n", ""
    )
    text = "".join(f"[cam_{i}]{GOOD_CAM.format(name=n)}\n" for i, n in enumerate("abc"))
    path = _write(tmp_path, text + f"[cam_3]{broken}\n[metadata]\n")
    with pytest.raises(DataError) as exc:
        read_calibration_toml(path)
    msg = str(exc.value)
    assert "calibration.toml" in msg
    assert "field 'cam_3.matrix'" in msg
    assert "missing (expected a 3×3 list)" in msg


@pytest.mark.parametrize(
    "change,field,expected",
    [
        (("size = [640, 480]", "size = [640]"), "cam_0.size", "width, height"),
        (("rotation = [0.1, -0.2, 0.3]", 'rotation = "x"'), "cam_0.rotation", "Rodrigues"),
        (
            ("distortions = [-0.1, 0.01, 0.0, 0.0, 0.0]", "distortions = [1.0, 2.0]"),
            "cam_0.distortions",
            "4, 5, 8",
        ),
        (('name = "a"', ""), "cam_0.name", "missing"),
        (
            ("translation = [1.0, 2.0, 3.0]", "translation = [1.0, nan, 3.0]"),
            "cam_0.translation",
            "3 numbers",
        ),
        (("size = [640, 480]", "size = [640, 480]\nfisheye = true"), "cam_0.fisheye", "not supported"),
    ],
)
def test_malformed_fields(tmp_path: Path, change, field, expected):
    text = "[cam_0]" + GOOD_CAM.format(name="a").replace(*change)
    with pytest.raises(DataError) as exc:
        read_calibration_toml(_write(tmp_path, text))
    assert f"field '{field}'" in str(exc.value)
    assert expected in str(exc.value)


def test_file_level_errors(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        read_calibration_toml(tmp_path / "nope.toml")
    with pytest.raises(DataError, match="not valid TOML"):
        read_calibration_toml(_write(tmp_path, "[cam_0\nname ="))
    with pytest.raises(DataError, match="no camera tables"):
        read_calibration_toml(_write(tmp_path, "[metadata]\n"))
    dup = "[cam_0]" + GOOD_CAM.format(name="a") + "[cam_1]" + GOOD_CAM.format(name="a")
    with pytest.raises(DataError, match="duplicate camera name 'a'"):
        read_calibration_toml(_write(tmp_path, dup))


def test_write_read_round_trip(tmp_path: Path, fixtures_dir: Path):
    src = fixtures_dir / ANIPOSELIB_CALIB / "12cam-allen-mouse/calibration.toml"
    cams = read_calibration_toml(src)
    out = tmp_path / "sub" / "calib.toml"
    write_calibration_toml(out, cams, metadata={"adjusted": False, "error": 0.5, "note": 'a "quoted" note'})
    back = read_calibration_toml(out)
    assert [c.name for c in back] == [c.name for c in cams]
    for a, b in zip(cams, back):
        assert a.image_size == b.image_size
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.dist, b.dist)
        np.testing.assert_array_equal(a.t, b.t)
        np.testing.assert_allclose(a.R, b.R, atol=1e-14)
    assert read_calibration_metadata(out) == {"adjusted": False, "error": 0.5, "note": 'a "quoted" note'}
    # Atomic: no temporary files left beside the output.
    assert [p.name for p in out.parent.iterdir()] == ["calib.toml"]


def test_writer_keeps_given_order_past_ten_cameras(tmp_path: Path):
    base = read_calibration_toml(_write(tmp_path, "[cam_0]" + GOOD_CAM.format(name="x")))[0]
    cams = [
        CameraCalibration(
            name=f"c{i}", image_size=base.image_size, K=base.K, dist=base.dist, R=base.R, t=base.t + i
        )
        for i in range(12)
    ]
    path = tmp_path / "many.toml"
    write_calibration_toml(path, cams)
    back = read_calibration_toml(path)
    assert [c.name for c in back] == [f"c{i}" for i in range(12)]
    np.testing.assert_array_equal([c.t[0] for c in back], [1.0 + i for i in range(12)])
    with pytest.raises(DataError, match="duplicate"):
        write_calibration_toml(tmp_path / "dup.toml", [cams[0], cams[0]])
    assert not (tmp_path / "dup.toml").exists()


def test_by_name():
    cam = CameraCalibration("a", (1, 1), np.eye(3), np.zeros(5), np.eye(3), np.zeros(3))
    other = CameraCalibration("b", (1, 1), np.eye(3), np.zeros(5), np.eye(3), np.zeros(3))
    assert list(by_name([other, cam])) == ["b", "a"]
    with pytest.raises(DataError, match="duplicate"):
        by_name([cam, cam])
