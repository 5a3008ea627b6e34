"""replicAnt's files: one annotation JSON per render, batch folders, ``_BatchData`` (reading only).

A replicAnt *batch* is a folder of renders: per image ``{batch}_{iteration}.json`` beside
``{batch}_{iteration}.JPG`` (older batches add an instance-ID mask ``{batch}_{iteration}_ID.png``),
plus ``_BatchData_{batch}.json`` (``Name``, ``Iterations``, ``Image Resolution``, ``Seed``,
``Subject Variations``). A multi-camera batch names its files ``{batch}_{frame}_CAM{id}.json/.JPG``.

An annotation holds ``iterationData.camera`` (``Location``, ``Rotation``, ``FOV``, ``View Matrix``,
``View Projection Matrix``; newer files add ``Quaternion``) and ``iterationData.subject Data``, a list
of ``{subject id: {"2DBounds", "keypoints", ["shape betas"]}}``. Each keypoint has ``2DPos`` (screen
pixels) and ``3DPos`` (Unreal world, cm); newer files add ``eulerAngles``, ``transform``,
``quaternion`` (local) and ``globalRotation`` (world) bone rotations.

:func:`read_annotation` converts one file into the project's conventions with
:mod:`smil.data.unreal` and checks that the converted camera reproduces the file's own ``2DPos``
from its ``3DPos`` (median ≤ :data:`MAX_SELF_REPROJECTION_PX`). Every problem is a
:class:`~smil.errors.DataError` naming the file and the dotted field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from smil.data import unreal
from smil.errors import DataError

__all__ = [
    "RawSample",
    "ReplicantBatch",
    "ReplicantFile",
    "SubjectAnnotation",
    "ViewAnnotation",
    "discover_batches",
    "find_image",
    "get_field",
    "load_json",
    "load_raw_sample",
    "project_points",
    "read_annotation",
]

IMAGE_SUFFIXES = (".JPG", ".jpg", ".jpeg", ".JPEG", ".png", ".PNG")
MASK_SUFFIX = "_ID.png"
BATCH_PREFIX = "_BatchData_"
MAX_SELF_REPROJECTION_PX = 1.0

MULTI_NAME = re.compile(r"^(?P<batch>.+)_(?P<frame>\d+)_CAM(?P<cam>\d+)$")
SINGLE_NAME = re.compile(r"^(?P<batch>.+)_(?P<frame>\d+)$")

# --------------------------------------------------------------------------------------------
# One annotation file


@dataclass
class SubjectAnnotation:
    """One subject of one render, already in the project's conventions."""

    subject_id: str
    keypoint_names: list[str]
    keypoints2d: np.ndarray  # (K, 2) OpenCV pixels in the source image
    keypoints3d: np.ndarray  # (K, 3) right-handed world, centimetres
    betas: np.ndarray | None  # "shape betas" when present
    global_quaternions: (
        np.ndarray | None
    )  # (K, 4) Unreal globalRotation (x, y, z, w), when every keypoint has one


@dataclass
class ViewAnnotation:
    """One replicAnt annotation file with its image, camera and subjects."""

    json_path: Path
    image_path: Path
    mask_path: Path | None
    image_size: tuple[int, int]  # (W, H)
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    subjects: list[SubjectAnnotation]
    camera_source: str  # how K, R, t were obtained
    self_reprojection_px: np.ndarray  # per-keypoint |project(3DPos) − 2DPos| (points in front)


def read_annotation(json_path: str | Path, expected_size: tuple[int, int] | None = None) -> ViewAnnotation:
    """Read one replicAnt JSON and convert it (see the module docstring).

    ``expected_size`` is the batch's ``Image Resolution``; the image must have that size. A malformed
    file, a missing image or camera field, or a camera that does not reproduce the file's own 2D
    keypoints is a :class:`DataError` naming the file and the field.
    """
    json_path = Path(json_path)
    data = load_json(json_path)
    it = get_field(data, ("iterationData",), json_path, dict)
    cam = get_field(it, ("camera",), json_path, dict, "iterationData")
    image_path = find_image(json_path)
    size = _image_size(image_path)
    if expected_size is not None and tuple(expected_size) != size:
        raise DataError(
            f"image is {size[0]}×{size[1]} but the batch's Image Resolution is "
            f"{expected_size[0]}×{expected_size[1]}",
            path=image_path,
        )
    K, R, t, how = _camera(cam, size, json_path)
    subjects_raw = get_field(it, ("subject Data",), json_path, list, "iterationData")
    subjects: list[SubjectAnnotation] = []
    for i, entry in enumerate(subjects_raw):
        where = f"iterationData.subject Data[{i}]"
        if not isinstance(entry, dict):
            raise DataError("expected an object {subject id: annotation}", path=json_path, field=where)
        for sid, sub in entry.items():
            subjects.append(_subject(str(sid), sub, json_path, f"{where}.{sid}"))
    errors = [_self_reprojection(s, K, R, t) for s in subjects]
    err = np.concatenate(errors) if errors else np.zeros(0)
    if err.size and float(np.median(err)) > MAX_SELF_REPROJECTION_PX:
        raise DataError(
            f"the converted camera ({how}) projects the 3DPos keypoints {float(np.median(err)):.2f} px "
            f"(median) away from the 2DPos keypoints; expected ≤ {MAX_SELF_REPROJECTION_PX} px. "
            "The camera fields are inconsistent or use settings this reader does not support",
            path=json_path,
            field="iterationData.camera",
        )
    mask = json_path.with_name(json_path.stem + MASK_SUFFIX)
    return ViewAnnotation(
        json_path=json_path,
        image_path=image_path,
        mask_path=mask if mask.is_file() else None,
        image_size=size,
        K=K,
        R=R,
        t=t,
        subjects=subjects,
        camera_source=how,
        self_reprojection_px=err,
    )


def find_image(json_path: Path) -> Path:
    """The render beside an annotation: same stem, one of :data:`IMAGE_SUFFIXES`."""
    for suffix in IMAGE_SUFFIXES:
        candidate = json_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise DataError(
        f"image not found: expected {json_path.stem}.JPG (or {', '.join(IMAGE_SUFFIXES[1:])}) beside it",
        path=json_path,
    )


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path=path
        ) from None
    except UnicodeDecodeError:
        raise DataError("not valid JSON (not UTF-8 text)", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror})", path=path) from None


def get_field(obj: Any, keys: Sequence[str], path: Path, kind: type | None = None, prefix: str = "") -> Any:
    """``obj[k0][k1]…`` with a DataError naming the dotted field when absent or of the wrong kind."""
    name = prefix
    for key in keys:
        name = f"{name}.{key}" if name else key
        if not isinstance(obj, dict) or key not in obj:
            raise DataError("missing", path=path, field=name)
        obj = obj[key]
    if kind is not None and not isinstance(obj, kind):
        want = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise DataError(f"expected {want}, got {type(obj).__name__}", path=path, field=name)
    return obj


def _vector(obj: Any, comps: Sequence[str], path: Path, name: str) -> list[float]:
    if not isinstance(obj, dict):
        raise DataError(f"expected an object with {', '.join(comps)}", path=path, field=name)
    out = []
    for c in comps:
        if c not in obj:
            raise DataError("missing", path=path, field=f"{name}.{c}")
        v = obj[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise DataError(f"expected a finite number, got {v!r}", path=path, field=f"{name}.{c}")
        out.append(float(v))
    return out


def _matrix(cam: dict[str, Any], key: str, path: Path) -> np.ndarray:
    name = f"iterationData.camera.{key}"
    planes = get_field(cam, (key,), path, dict, "iterationData.camera")
    rows = []
    for p in ("xPlane", "yPlane", "zPlane", "wPlane"):
        rows.append(_vector(get_field(planes, (p,), path, None, name), "xyzw", path, f"{name}.{p}"))
    return np.array(rows, dtype=np.float64)


def _camera(
    cam: dict[str, Any], size: tuple[int, int], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    W, H = size
    view = None
    if "View Matrix" in cam:
        view = _matrix(cam, "View Matrix", path)
        R, t = unreal.extrinsics_from_view_matrix(view)
        pose = "View Matrix"
    elif "Location" in cam and "Rotation" in cam:
        loc = _vector(cam["Location"], "xyz", path, "iterationData.camera.Location")
        rot = _vector(cam["Rotation"], ("pitch", "yaw", "roll"), path, "iterationData.camera.Rotation")
        R, t = unreal.extrinsics_from_rotator(np.array(loc), *rot)
        pose = "Location+Rotation"
    else:
        raise DataError(
            "missing (neither a View Matrix nor Location and Rotation)",
            path=path,
            field="iterationData.camera.View Matrix",
        )
    if view is not None and "View Projection Matrix" in cam:
        vp = _matrix(cam, "View Projection Matrix", path)
        try:
            K = unreal.intrinsics_from_projection(view, vp, W, H)
        except np.linalg.LinAlgError:
            raise DataError(
                "singular View Matrix", path=path, field="iterationData.camera.View Matrix"
            ) from None
        intr = "View Projection Matrix"
    elif "FOV" in cam:
        fov = cam["FOV"]
        if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov < 180:
            raise DataError(
                f"expected a field of view in degrees in (0, 180), got {fov!r}",
                path=path,
                field="iterationData.camera.FOV",
            )
        K = unreal.intrinsics_from_fov(float(fov), W, H)
        intr = "FOV (horizontal)"
    else:
        raise DataError(
            "missing (no FOV and no View Projection Matrix)", path=path, field="iterationData.camera.FOV"
        )
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise DataError(
            f"camera intrinsics are not valid (fx={K[0, 0]}, fy={K[1, 1]})",
            path=path,
            field="iterationData.camera",
        )
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
        raise DataError(
            "does not hold a proper rotation (expected an orthonormal view rotation, det +1)",
            path=path,
            field=f"iterationData.camera.{pose}",
        )
    return K, R, t, f"{pose}, {intr}"


def _subject(sid: str, sub: Any, path: Path, where: str) -> SubjectAnnotation:
    keypoints = get_field(sub, ("keypoints",), path, dict, where)
    names: list[str] = []
    uv, xyz, quats = [], [], []
    for name, kp in keypoints.items():
        kwhere = f"{where}.keypoints.{name}"
        if not isinstance(kp, dict):
            raise DataError("expected an object with 2DPos and 3DPos", path=path, field=kwhere)
        names.append(str(name))
        uv.append(_vector(get_field(kp, ("2DPos",), path, None, kwhere), "xy", path, f"{kwhere}.2DPos"))
        xyz.append(_vector(get_field(kp, ("3DPos",), path, None, kwhere), "xyz", path, f"{kwhere}.3DPos"))
        g = kp.get("globalRotation")
        quats.append(None if g is None else _vector(g, "xyzw", path, f"{kwhere}.globalRotation"))
    if not names:
        raise DataError("no keypoints", path=path, field=f"{where}.keypoints")
    betas = None
    if "shape betas" in sub:
        raw = sub["shape betas"]
        if not isinstance(raw, list) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b) for b in raw
        ):
            raise DataError("expected a list of finite numbers", path=path, field=f"{where}.shape betas")
        betas = np.asarray(raw, dtype=np.float64)
    rots = None
    if all(q is not None for q in quats):
        q = np.asarray(quats, dtype=np.float64)
        if np.any(np.linalg.norm(q, axis=1) < 1e-6):
            raise DataError(
                "a globalRotation quaternion has zero length", path=path, field=f"{where}.keypoints"
            )
        rots = q  # converted (with torch) only when a body model is posed: smil.data.replicant_pose
    return SubjectAnnotation(
        subject_id=sid,
        keypoint_names=names,
        keypoints2d=unreal.pixels_to_opencv(np.asarray(uv)),
        keypoints3d=unreal.points_to_world(np.asarray(xyz)),
        betas=betas,
        global_quaternions=rots,
    )


def _self_reprojection(s: SubjectAnnotation, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    uv, z = project_points(s.keypoints3d, K, R, t)
    front = z > 0
    return np.linalg.norm(uv[front] - s.keypoints2d[front], axis=1)


def project_points(
    X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` → pixels ``(N, 2)`` and camera depths ``(N,)``.

    The formula of :func:`smil.geometry.camera.project`, in numpy so that reading needs no torch.
    """
    xc = X @ R.T + t
    z = xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (xc @ K.T)[:, :2] / z[:, None]
    return uv, z


def _image_size(path: Path) -> tuple[int, int]:
    """Image (width, height) from the file header (PIL reads the header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image header ({exc})", path=path) from None


# --------------------------------------------------------------------------------------------
# Batches and file layout


@dataclass
class ReplicantFile:
    json_path: Path
    frame: int
    frame_text: str  # the digits as written in the file name
    camera: str | None  # "CAM{id}" in a multi-camera batch


@dataclass
class ReplicantBatch:
    """A batch folder: its name, ``_BatchData`` facts and annotation files."""

    name: str  # batch id: folder path relative to DIR ("" → folder name)
    folder: Path
    resolution: tuple[int, int] | None
    batch_data: dict[str, Any]
    files: list[ReplicantFile]
    multi_camera: bool
    bad_names: list[Path] = field(default_factory=list)


def discover_batches(directory: str | Path) -> list[ReplicantBatch]:
    """Find the batches under ``directory`` (itself a batch, or a folder of batch folders)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("not a folder (expected a replicAnt batch folder)", path=directory)
    folders = (
        [directory]
        if _annotation_jsons(directory)
        else sorted(p for p in directory.iterdir() if p.is_dir() and _annotation_jsons(p))
    )
    if not folders:
        raise DataError(
            "no replicAnt annotation found (expected {batch}_{iteration}.json files here or in its sub-folders)",
            path=directory,
        )
    return [_batch(f, f.name if f == directory else str(f.relative_to(directory))) for f in folders]


def _annotation_jsons(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(BATCH_PREFIX) and p.is_file())


def _batch(folder: Path, name: str) -> ReplicantBatch:
    batch_data: dict[str, Any] = {}
    resolution = None
    for bd in sorted(folder.glob(f"{BATCH_PREFIX}*.json")):
        obj = load_json(bd)
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path=bd)
        batch_data = obj
        if "Image Resolution" in obj:
            res = _vector(obj["Image Resolution"], "xy", bd, "Image Resolution")
            if min(res) < 1 or any(r != int(r) for r in res):
                raise DataError(
                    f"expected positive integer sizes, got {res}", path=bd, field="Image Resolution"
                )
            resolution = (int(res[0]), int(res[1]))
        break
    files: list[ReplicantFile] = []
    bad: list[Path] = []
    kinds = set()
    for p in _annotation_jsons(folder):
        m = MULTI_NAME.match(p.stem)
        if m:
            files.append(ReplicantFile(p, int(m["frame"]), m["frame"], f"CAM{int(m['cam'])}"))
            kinds.add("multi")
            continue
        m = SINGLE_NAME.match(p.stem)
        if m:
            files.append(ReplicantFile(p, int(m["frame"]), m["frame"], None))
            kinds.add("single")
            continue
        bad.append(p)
    if len(kinds) > 1:
        raise DataError(
            "mixes single-camera ({batch}_{iteration}.json) and multi-camera ({batch}_{frame}_CAM{id}.json) "
            "file names; keep each layout in its own batch folder",
            path=folder,
        )
    return ReplicantBatch(
        name=name,
        folder=folder,
        resolution=resolution,
        batch_data=batch_data,
        files=files,
        multi_camera=kinds == {"multi"},
        bad_names=bad,
    )


# --------------------------------------------------------------------------------------------
# Reference loader for benchmarks


class RawSample(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB, resized
    keypoints2d: np.ndarray  # (K, 2) OpenCV pixels in the resized image (first subject, file order)


def load_raw_sample(json_path: str | Path, size: int | tuple[int, int]) -> RawSample:
    """Read one replicAnt render the plain way — ``json.load``, JPEG decode, resize — for benchmarks.

    This is the reference a dataset loader is compared against: no conversion beyond scaling the first
    subject's ``2DPos`` into the resized image (OpenCV pixel centres). ``size`` is an int (square) or
    ``(width, height)``.
    """
    import cv2

    from smil.data.images import decode_image, read_bytes

    json_path = Path(json_path)
    data = load_json(json_path)
    image_path = find_image(json_path)
    img = decode_image(read_bytes(image_path), path=image_path)
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    H0, W0 = img.shape[:2]
    resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    subs = get_field(data, ("iterationData", "subject Data"), json_path, list)
    uv = np.zeros((0, 2))
    for entry in subs:
        for sub in entry.values():
            kps = get_field(sub, ("keypoints",), json_path, dict, "iterationData.subject Data")
            uv = np.array([[kp["2DPos"]["x"], kp["2DPos"]["y"]] for kp in kps.values()], dtype=np.float64)
            break
        break
    scale = np.array([w / W0, h / H0])
    return RawSample(resized, (uv * scale - 0.5).astype(np.float32))
