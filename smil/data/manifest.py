"""The sample manifest: what every ingest writes and ``smil preprocess`` reads.

An ingest (replicAnt, SLEAP, synthetic) converts its source's conventions once and writes a
``manifest.jsonl`` file: a header line, then one JSON object per sample. Everything in it already
follows the project conventions (``docs/conventions.md``): OpenCV pinhole cameras (``K``, world→camera
``R, t``), pixel keypoints ``(x, y)`` in the *source* image with a visibility weight, 3D keypoints in
the dataset's world frame and unit (``None`` = missing), body parameters as axis-angle.

Arrays are nested lists of numbers, or *packed*: ``{"dtype": "<f8", "shape": [50, 3], "base64": ...}``,
the little-endian float64 values in row-major order, base64-encoded (NaN = missing). Writers pack the
per-joint body parameters (:data:`PACK_MIN_VALUES`): they are a large part of a line's numbers, are
never read by eye, and packed they parse and convert several times faster (exact, too); the rest
stays readable. Readers take either form for every array.

Image and mask references are relative to the manifest's folder (or absolute) and are either a file
(``{"path": ...}``) or a video frame (``{"video": ..., "frame": i}``). ``smil preprocess`` crops,
resizes, encodes and writes the HDF5 dataset; nothing downstream knows where a sample came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import orjson

from smil.errors import DataError
from smil.io_utils import atomic_path

MANIFEST_KIND = "smil-manifest"
MANIFEST_VERSION = 2  # 2: arrays may be packed (version 1 files, all nested lists, read the same)
READ_VERSIONS = (1, 2)

#: Writers pack a body parameter with more values than this (the per-joint ones); see the docstring.
PACK_MIN_VALUES = 16
PACKED_DTYPE = "<f8"

#: Significant digits of every number a manifest writer stores: a relative error below 5e-9, under
#: float32's own rounding step (6e-8), and datasets store float32. The lines are a third shorter and
#: parse faster than with Python's 17-digit ``repr``.
SIGNIFICANT_DIGITS = 9

#: Ground-truth body parameters and their per-sample shapes (J joints, B betas).
PARAM_SHAPES = {
    "global_rot": ("3",),  # axis-angle of the root joint
    "joint_rot": ("J-1", "3"),  # axis-angle of joints 1..J-1, relative to the parent
    "betas": ("B",),
    "trans": ("3",),  # world units
    "scale": (),  # global scale of the body model in world units per model unit
    "log_beta_scales": ("J", "3"),  # per-joint per-axis log-scales
    "betas_trans": ("J", "3"),  # per-joint rest-position offsets, model units
}


@dataclass
class ViewRecord:
    """One camera's view of a sample."""

    camera: str
    image: dict[str, Any]
    K: np.ndarray  # (3, 3)
    R: np.ndarray  # (3, 3) world -> camera
    t: np.ndarray  # (3,)
    image_size: tuple[int, int]  # (width, height) of the source image
    keypoints2d: np.ndarray  # (J, 2) pixels in the source image; NaN where unknown
    visibility: np.ndarray  # (J,) in [0, 1]
    mask: dict[str, Any] | None = None  # {"path": ..., "value": instance id or None}
    dist: np.ndarray | None = None  # OpenCV distortion coefficients; None = none

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "image": self.image,
            "mask": self.mask,
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "K": _list(self.K),
            "R": _list(self.R),
            "t": _list(self.t),
            "dist": None if self.dist is None else _list(self.dist),
            "keypoints2d": _list(self.keypoints2d),
            "visibility": _list(self.visibility),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> "ViewRecord":
        try:
            return cls(
                camera=str(obj["camera"]),
                image=dict(obj["image"]),
                mask=None if obj.get("mask") is None else dict(obj["mask"]),
                image_size=(int(obj["image_size"][0]), int(obj["image_size"][1])),
                K=_array(obj["K"], (3, 3), where, "K"),
                R=_array(obj["R"], (3, 3), where, "R"),
                t=_array(obj["t"], (3,), where, "t"),
                dist=None if obj.get("dist") is None else np.asarray(obj["dist"], dtype=np.float64),
                keypoints2d=_array(obj["keypoints2d"], (-1, 2), where, "keypoints2d"),
                visibility=_array(obj["visibility"], (-1,), where, "visibility"),
            )
        except KeyError as exc:
            raise DataError("missing in a view record", path=where, field=str(exc.args[0])) from None


@dataclass
class SampleRecord:
    """One sample: a frame seen by one or more views, with optional 3D and body ground truth."""

    sample_id: str
    group: str  # split group: samples sharing a group always land in the same split
    views: list[ViewRecord]
    keypoints3d: np.ndarray | None = None  # (J, 3) world units, NaN = missing
    params: dict[str, np.ndarray] | None = None
    session: str = ""
    frame: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "group": self.group,
            "session": self.session,
            "frame": int(self.frame),
            "keypoints3d": None if self.keypoints3d is None else _list(self.keypoints3d),
            "params": None
            if self.params is None
            else {k: _param_json(np.asarray(v)) for k, v in self.params.items()},
            "views": [v.to_json() for v in self.views],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> "SampleRecord":
        try:
            params = obj.get("params")
            unknown = set(params or {}) - set(PARAM_SHAPES)
            if unknown:
                raise DataError(
                    f"unknown body parameter(s) {sorted(unknown)}; expected some of "
                    f"{list(PARAM_SHAPES)}",
                    path=where,
                    field="params",
                )
            kp3 = obj.get("keypoints3d")
            return cls(
                sample_id=str(obj["sample_id"]),
                group=str(obj["group"]),
                session=str(obj.get("session", "")),
                frame=int(obj.get("frame", -1)),
                keypoints3d=None if kp3 is None else _array(kp3, (-1, 3), where, "keypoints3d"),
                params=None
                if params is None
                else {k: _array(v, None, where, f"params.{k}") for k, v in params.items()},
                views=[ViewRecord.from_json(v, where) for v in obj["views"]],
            )
        except KeyError as exc:
            raise DataError("missing in a sample record", path=where, field=str(exc.args[0])) from None


@dataclass
class ManifestHeader:
    source_kind: str  # "replicant" | "sleap" | "synthetic"
    joint_names: list[str]
    world_unit_m: float
    camera_names: list[str]  # canonical camera slots, in order; single-view sources use one name
    body_model_sha256: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # source-specific notes (reported joints…)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": MANIFEST_KIND,
            "version": MANIFEST_VERSION,
            "source_kind": self.source_kind,
            "joint_names": list(self.joint_names),
            "world_unit_m": float(self.world_unit_m),
            "camera_names": list(self.camera_names),
            "body_model_sha256": self.body_model_sha256,
            "info": self.info,
        }


def write_manifest(path: str | Path, header: ManifestHeader, samples: Iterable[SampleRecord]) -> int:
    """Write a manifest atomically; return the number of samples written."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header.to_json()) + "\n")
        for sample in samples:
            fh.write(json.dumps(sample.to_json(), allow_nan=False) + "\n")
            count += 1
    return count


def read_manifest_header(path: str | Path) -> ManifestHeader:
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # only the first line: a text reader would decode ahead of it
            first = fh.readline()
    except OSError as exc:
        raise DataError(f"cannot read manifest ({exc.strerror})", path=path) from None
    try:
        obj = json.loads(first.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"line 1 is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"line 1 is not JSON ({exc.msg})", path=path) from None
    if not isinstance(obj, dict) or obj.get("kind") != MANIFEST_KIND:
        raise DataError(f"not a smil manifest (expected kind '{MANIFEST_KIND}')", path=path, field="kind")
    if obj.get("version") not in READ_VERSIONS:
        raise DataError(
            f"unsupported manifest version {obj.get('version')!r} (this smil reads {list(READ_VERSIONS)})",
            path=path,
            field="version",
        )
    try:
        return ManifestHeader(
            source_kind=str(obj["source_kind"]),
            joint_names=[str(n) for n in obj["joint_names"]],
            world_unit_m=float(obj["world_unit_m"]),
            camera_names=[str(n) for n in obj["camera_names"]],
            body_model_sha256=obj.get("body_model_sha256"),
            info=dict(obj.get("info") or {}),
        )
    except KeyError as exc:
        raise DataError("missing in the manifest header", path=path, field=str(exc.args[0])) from None


def iter_manifest(path: str | Path) -> Iterator[SampleRecord]:
    """Yield the samples of a manifest, checking each line."""
    path = Path(path)
    read_manifest_header(path)
    with open(path, "rb") as fh:
        next(fh)
        for lineno, raw in enumerate(fh, start=2):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            yield SampleRecord.from_json(parse_manifest_line(decode_manifest_line(raw, where), where), where)


def decode_manifest_line(raw: bytes, where: str) -> str:
    """A manifest line's bytes as text; bytes that are not UTF-8 are a :class:`DataError` naming ``where``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=where) from None


def resolve_reference(manifest_path: str | Path, ref: dict[str, Any]) -> dict[str, Any]:
    """Return ``ref`` with its ``path``/``video`` made absolute relative to the manifest's folder."""
    return resolve_in(manifest_folder(manifest_path), ref)


def manifest_folder(manifest_path: str | Path) -> Path:
    """The absolute folder that a manifest's relative references are relative to."""
    return Path(manifest_path).resolve().parent


def resolve_in(base: Path, ref: dict[str, Any]) -> dict[str, Any]:
    """:func:`resolve_reference` with the manifest's folder already resolved (:func:`manifest_folder`)."""
    out = dict(ref)
    for key in ("path", "video"):
        value = out.get(key)
        if value is not None:  # os.path: preprocessing resolves two references per view, pathlib costs 5×
            out[key] = os.path.join(base, os.fspath(value))  # an absolute value replaces base
    return out


def parse_manifest_line(text: str, where: str) -> dict[str, Any]:
    """One manifest line as a JSON object.

    orjson parses the float-heavy sample lines several times faster than ``json`` (with identical,
    correctly rounded values); a line it refuses goes to ``json``, which also reads the ``NaN`` /
    ``Infinity`` literals some writers emit and words the error message.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON ({exc.msg})", path=where) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=where)
    return obj


def _list(a: np.ndarray) -> Any:
    """``a`` as nested lists of numbers with :data:`SIGNIFICANT_DIGITS` digits, NaN as ``None``."""
    return _rounded(np.asarray(a, dtype=np.float64).tolist())


def _param_json(a: np.ndarray) -> Any:
    return _packed(a) if a.size > PACK_MIN_VALUES else _list(a)


def _packed(a: np.ndarray) -> dict[str, Any]:
    """``a`` as a packed array (exact float64 values; see the module docstring)."""
    values = np.ascontiguousarray(a, dtype=PACKED_DTYPE)
    return {"dtype": PACKED_DTYPE, "shape": list(values.shape),
            "base64": base64.b64encode(values.data).decode("ascii")}


def _unpacked(obj: dict[str, Any], where: str, name: str) -> np.ndarray:
    """A packed array's values (float64, writable); a malformed one is a :class:`DataError`."""
    try:
        if obj.get("dtype") != PACKED_DTYPE:
            raise ValueError(f"dtype must be '{PACKED_DTYPE}', got {obj.get('dtype')!r}")
        shape = [int(n) for n in obj["shape"]]
        if any(n < 0 for n in shape):
            raise ValueError(f"negative shape {shape}")
        raw = binascii.a2b_base64(obj["base64"], strict_mode=True)
    except KeyError as exc:
        raise DataError(f"packed array without '{exc.args[0]}'", path=where, field=name) from None
    except (TypeError, ValueError, binascii.Error) as exc:
        raise DataError(f"not a valid packed array ({exc})", path=where, field=name) from None
    count = math.prod(shape)
    if len(raw) != 8 * count:
        raise DataError(f"packed array of shape {tuple(shape)} needs {count} values, holds {len(raw) / 8:g}",
                        path=where, field=name)
    return np.frombuffer(bytearray(raw), dtype=PACKED_DTYPE).reshape(shape)


def _rounded(v: Any) -> Any:
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    if math.isnan(v):
        return None
    return float(f"{v:.{SIGNIFICANT_DIGITS}g}")


def _array(obj: Any, shape: tuple[int, ...] | None, where: str, name: str) -> np.ndarray:
    """``obj`` (nested lists, ``None`` = missing, or a packed array) as a float64 array; ``shape`` None =
    any, -1 = any length.

    numpy itself turns ``None`` into NaN when converting to a float dtype, so no Python-level pass
    over the values is needed.
    """
    if type(obj) is dict:
        arr = _unpacked(obj, where, name)
    else:
        try:
            arr = np.asarray(obj, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("not a numeric array", path=where, field=name) from None
    if shape is not None and (arr.ndim != len(shape) or any(s not in (-1, a) for s, a in zip(shape, arr.shape))):
        want = "×".join("N" if s == -1 else str(s) for s in shape)
        raise DataError(f"expected shape {want}, got {arr.shape}", path=where, field=name)
    return arr
