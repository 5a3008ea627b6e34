"""Read and write multi-camera calibrations in aniposelib's TOML format.

File layout (one table per camera, plus an optional ``[metadata]`` table)::

    [cam_0]
    name = "back"
    size = [1280, 1024]                  # image width, height in pixels
    matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortions = [k1, k2, p1, p2, k3]   # OpenCV order
    rotation = [rx, ry, rz]              # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]           # world -> camera, world units

    [metadata]
    adjusted = false

On ingest the cameras become :class:`CameraCalibration` records in the project's single camera
convention (OpenCV pinhole, ``x_cam = R · X + t``); the Rodrigues vector is converted to a matrix.
Cameras keep the **file's order** (aniposelib itself string-sorts the table names, which puts
``cam_10`` before ``cam_2``); match cameras to videos by :attr:`CameraCalibration.name`
(:func:`by_name`), never by position.

Fisheye cameras (``fisheye = true``) are refused: the pipeline models pinhole cameras only.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from smil.errors import DataError
from smil.io_utils import write_text_atomic

__all__ = [
    "CameraCalibration",
    "by_name",
    "read_calibration_metadata",
    "read_calibration_toml",
    "write_calibration_toml",
]

_N_DIST = (4, 5, 8, 12, 14)


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """One calibrated pinhole camera (OpenCV convention).

    Attributes:
        name: camera name, used to match the camera to its video/view.
        image_size: ``(width, height)`` in pixels.
        K: ``(3, 3)`` float64 intrinsics.
        dist: OpenCV distortion coefficients, float64 (``(k1, k2, p1, p2, k3, ...)``).
        R: ``(3, 3)`` float64 world→camera rotation.
        t: ``(3,)`` float64 world→camera translation, in world units.
    """

    name: str
    image_size: tuple[int, int]
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    """Unrecognised keys of the camera's table, kept so that writing round-trips them."""

    @property
    def rvec(self) -> np.ndarray:
        """Rodrigues vector (axis × angle) of :attr:`R`, shape ``(3,)``."""
        return cv2.Rodrigues(np.asarray(self.R, dtype=np.float64))[0].ravel()

    def projection_matrix(self) -> np.ndarray:
        """``K · [R | t]``, shape ``(3, 4)``, float64."""
        return self.K @ np.concatenate([self.R, self.t[:, None]], axis=1)


def by_name(cams: Sequence[CameraCalibration]) -> dict[str, CameraCalibration]:
    """Map camera name to calibration (in the given order); duplicate names are an error."""
    out: dict[str, CameraCalibration] = {}
    for cam in cams:
        if cam.name in out:
            raise DataError(f"duplicate camera name {cam.name!r}", field="name")
        out[cam.name] = cam
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _array(
    table: Mapping[str, Any], key: str, shape: tuple[int, ...] | None, what: str, path: Path, section: str
) -> np.ndarray:
    """Fetch ``table[key]`` as a finite float64 array of ``shape`` (``None``: any 1-D length)."""
    fld = f"{section}.{key}"
    if key not in table:
        raise DataError(f"missing (expected {what})", path=path, field=fld)
    value = table[key]

    def flat(v: Any) -> list[Any]:
        return [x for item in v for x in flat(item)] if isinstance(v, list) else [v]

    try:
        arr = np.asarray(value, dtype=np.float64)
        ok = all(_is_number(x) for x in flat(value))
    except (TypeError, ValueError):
        ok = False
    if not ok or (shape is not None and arr.shape != shape) or (shape is None and arr.ndim != 1):
        raise DataError(f"expected {what}, got {value!r}", path=path, field=fld)
    return arr


def _camera(section: str, table: Mapping[str, Any], path: Path) -> CameraCalibration:
    if not isinstance(table, dict):
        raise DataError(
            f"expected a camera table [{section}] (name, size, matrix, ...), got {table!r}",
            path=path,
            field=section,
        )
    if table.get("fisheye", False):
        raise DataError(
            "fisheye cameras are not supported (pinhole with OpenCV distortion only)",
            path=path,
            field=f"{section}.fisheye",
        )
    if "name" not in table:
        raise DataError("missing (expected the camera's name, a string)", path=path, field=f"{section}.name")
    name = table["name"]
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise DataError(f"expected a non-empty string, got {name!r}", path=path, field=f"{section}.name")

    size = _array(table, "size", (2,), "[width, height] in pixels", path, section)
    if not (size > 0).all() or not (size == np.round(size)).all():
        raise DataError(
            f"expected [width, height] as positive integers, got {table['size']!r}",
            path=path,
            field=f"{section}.size",
        )
    K = _array(table, "matrix", (3, 3), "a 3×3 list", path, section)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise DataError(
            f"expected an intrinsics matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}",
            path=path,
            field=f"{section}.matrix",
        )
    dist = _array(table, "distortions", None, "a list of 4, 5, 8, 12 or 14 numbers", path, section)
    if dist.size not in _N_DIST:
        raise DataError(
            f"expected 4, 5, 8, 12 or 14 OpenCV distortion coefficients, got {dist.size}",
            path=path,
            field=f"{section}.distortions",
        )
    rvec = _array(table, "rotation", (3,), "a Rodrigues vector of 3 numbers", path, section)
    t = _array(table, "translation", (3,), "a list of 3 numbers", path, section)
    R = cv2.Rodrigues(rvec)[0].astype(np.float64)
    known = {"name", "size", "matrix", "distortions", "rotation", "translation", "fisheye"}
    extra = {k: v for k, v in table.items() if k not in known}
    return CameraCalibration(
        name=name,
        image_size=(int(size[0]), int(size[1])),
        K=K,
        dist=dist,
        R=R,
        t=t,
        extra=extra,
    )


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DataError("calibration file not found", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"not valid TOML: {e}", path=path) from None


def read_calibration_toml(path: str | Path) -> list[CameraCalibration]:
    """Read an aniposelib calibration TOML into cameras, in the file's order.

    Every top-level table except ``[metadata]`` is a camera. Raises :class:`DataError` naming the
    file, the field (``cam_3.matrix``) and what was expected when anything is missing or malformed,
    or when two cameras share a name.
    """
    path = Path(path)
    doc = _load_toml(path)
    cams: list[CameraCalibration] = []
    seen: dict[str, str] = {}
    for section, table in doc.items():
        if section == "metadata":
            continue
        cam = _camera(section, table, path)
        if cam.name in seen:
            raise DataError(
                f"duplicate camera name {cam.name!r} (also in [{seen[cam.name]}])",
                path=path,
                field=f"{section}.name",
            )
        seen[cam.name] = section
        cams.append(cam)
    if not cams:
        raise DataError("no camera tables found (expected [cam_0], [cam_1], ...)", path=path)
    return cams


def read_calibration_metadata(path: str | Path) -> dict[str, Any]:
    """The ``[metadata]`` table of a calibration TOML (empty when absent)."""
    path = Path(path)
    meta = _load_toml(path).get("metadata", {})
    if not isinstance(meta, dict):
        raise DataError(f"expected a table, got {meta!r}", path=path, field="metadata")
    return meta


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, np.ndarray):
        return _toml_value(v.tolist())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise DataError(f"cannot write value {v!r} of type {type(v).__name__} to TOML")


def write_calibration_toml(
    path: str | Path, cams: Sequence[CameraCalibration], metadata: Mapping[str, Any] | None = None
) -> None:
    """Write cameras as aniposelib TOML (tables ``cam_0``, ``cam_1``, ... in the given order).

    The file is written atomically (temporary name, then rename). ``metadata`` values must be
    TOML scalars or lists of them.
    """
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise DataError(f"duplicate camera names in {names}", path=path)
    lines: list[str] = []
    for i, cam in enumerate(cams):
        lines.append(f"[cam_{i}]")
        lines.append(f"name = {_toml_value(cam.name)}")
        lines.append(f"size = {_toml_value([int(cam.image_size[0]), int(cam.image_size[1])])}")
        lines.append(f"matrix = {_toml_value(np.asarray(cam.K, dtype=np.float64))}")
        lines.append(f"distortions = {_toml_value(np.asarray(cam.dist, dtype=np.float64).ravel())}")
        lines.append(f"rotation = {_toml_value(cam.rvec)}")
        lines.append(f"translation = {_toml_value(np.asarray(cam.t, dtype=np.float64).ravel())}")
        for key, value in cam.extra.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    lines.append("[metadata]")
    for key, value in (metadata or {}).items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    write_text_atomic(path, "\n".join(lines) + "\n")
