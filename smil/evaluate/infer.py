"""Run a trained model over new input and write per-frame parameters, keypoints and an overlay video.

Inputs (:func:`open_source`):

- a **folder of images** (``.jpg``, ``.jpeg``, ``.png``; natural name order, so ``f2`` < ``f10``) or a
  single image file: one view, one frame per image;
- a **video file** (``cv2.VideoCapture``; fps from the file): one view, one frame per video frame;
- a **session folder of videos**, one per camera, the file stem naming the camera. A multi-view model
  needs a video for every camera of its rig (matched by name); a single-view model runs on each
  video separately;
- an **HDF5 dataset** (``smil preprocess`` output), all samples or one ``--split``. A multi-view model
  sees each sample's views together; a single-view model sees each valid view separately. The
  stored images are the "original frames" here, and their cameras the dataset's.

Frames are cropped to a square (``full``: the whole frame, padded to a square with black, keeping
the aspect ratio; ``center``: the central square; ``bbox``: a square around a given box, as
``smil preprocess`` crops training data) and resized to the network's input size. The crop is an
affine map ``A`` from original pixels to network-input pixels (pixel centres at integers,
``docs/conventions.md``); every output in pixels is mapped back with ``A⁻¹``, so keypoints and
cameras refer to the original frames. A calibration with lens distortion (``--calibration``) makes
frames undistorted before cropping (as ``smil preprocess`` does); keypoints are distorted again, so
they land on the raw frames, while ``K`` is the camera of the undistorted frame.

A single-view model's body is per (frame, view) when the input has several views ("body per
view"): body arrays then carry a view axis. See ``docs/inference.md`` for the output files.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch

from smil import __version__
from smil.data.crop import crop_affine, crop_and_resize
from smil.data.images import decode_image, read_bytes, to_channels_first
from smil.evaluate.boxes import CROP_MODES, BoxTable, crop_box, load_bboxes
from smil.io_utils import file_sha256
from smil.progress import Progress
from smil.errors import ConfigError, DataError, SmilError
from smil.evaluate.inference import TrainedModel, decode, iterate_dataset, load_trained, run_network
from smil.evaluate.smoothing import SmoothingSettings, smooth_parameters
from smil.io_utils import atomic_path, write_json_atomic
from smil.models.regressor import CALIBRATED_MODES, RegressorSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")
HDF5_SUFFIXES = (".h5", ".hdf5")
OUTPUT_FORMAT = "smil-inference"
OUTPUT_FORMAT_VERSION = 1

BODY_KEYS = ("global_rot", "joint_rot", "betas", "trans", "scale", "log_beta_scales", "betas_trans")
CAMERA_KEYS = ("fov", "cam_rot", "cam_trans")
_ROT6D_KEYS = ("global_rot", "joint_rot", "cam_rot")


# --------------------------------------------------------------------------------------------
# options


@dataclass
class InferOptions:
    """Everything ``smil infer`` accepts besides the model, the input and the output prefix."""

    crop: str | None = None  # None: "bbox" with bboxes, else "full"
    bboxes: Path | None = None
    bbox_padding: float = 1.2
    split: str | None = None
    calibration: Path | None = None
    smooth: float | None = None
    fps: float | None = None
    batch_size: int = 16
    overlay_video: Path | None = None
    device: str | None = None  # None: "cpu" (or the device of an already loaded model)
    body_model: Path | None = None
    progress: bool | None = None  # None: tqdm on a terminal, plain lines otherwise; False: silent

    def resolved_crop(self) -> str:
        if self.crop is None:
            return "bbox" if self.bboxes is not None else "full"
        if self.crop not in CROP_MODES:
            raise ConfigError(f"unknown crop mode {self.crop!r}; expected one of {', '.join(CROP_MODES)}", field="crop")
        if self.crop == "bbox" and self.bboxes is None:
            raise ConfigError("--crop bbox needs --bboxes FILE.json", field="crop")
        if self.crop != "bbox" and self.bboxes is not None:
            raise ConfigError(f"--bboxes is used only with --crop bbox, not --crop {self.crop}", field="bboxes")
        return self.crop

    def check(self) -> None:
        self.resolved_crop()
        if not self.batch_size >= 1:
            raise ConfigError(f"must be ≥ 1, got {self.batch_size}", field="batch_size")
        if not (math.isfinite(self.bbox_padding) and self.bbox_padding >= 1.0):
            raise ConfigError(f"must be ≥ 1.0, got {self.bbox_padding}", field="bbox_padding")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"must be a positive number, got {self.fps}", field="fps")


# --------------------------------------------------------------------------------------------
# small helpers


def natural_key(name: str) -> list[Any]:
    """Sort key comparing digit runs as numbers: ``frame2`` before ``frame10``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _warn(message: str) -> None:
    print(f"smil infer: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# sources


@dataclass
class ViewInput:
    """One camera of a frame source: a video file or a list of image files."""

    name: str
    path: Path
    files: list[Path] | None = None  # image files; None for a video
    calibration: Any = None  # smil.data.calibration.CameraCalibration
    fps: float | None = None
    frame_count: int | None = None  # from the video header (may be approximate)

    def frames(self) -> Iterator[np.ndarray]:
        """RGB ``uint8`` frames in order."""
        if self.files is not None:
            for f in self.files:
                yield decode_image(read_bytes(f), path=f)
            return
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataError("cannot open video", path=self.path)
        try:
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    return
                yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


def _probe_video(path: Path) -> tuple[float | None, int | None]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError("cannot open video (unsupported codec or not a video)", path=path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return (fps if fps > 0 and math.isfinite(fps) else None), (count if count > 0 else None)


@dataclass
class Batch:
    """Network inputs for a batch and where each item's prediction goes.

    ``rows`` (n,): output frame index of each item; ``views`` (n,): the view of a single-view item,
    -1 when the item holds all views (multi-view model).
    """

    inputs: dict[str, torch.Tensor]
    rows: np.ndarray
    views: np.ndarray


@dataclass
class FrameGeometry:
    """Per (frame, view): crop affine (original → network input pixels), frame size, validity."""

    affine: np.ndarray  # (F, V, 3, 3)
    image_size: np.ndarray  # (F, V, 2) int (W, H)
    valid: np.ndarray  # (F, V) bool


class Source(abc.ABC):
    """Common interface of frame sources and HDF5 datasets."""

    kind: str
    path: Path
    view_names: list[str]
    body_per_view: bool
    fps: float | None = None
    fps_source: str | None = None

    @abc.abstractmethod
    def batches(self, trained: TrainedModel, batch_size: int) -> Iterator[Batch]:
        """Network inputs, in frame order (pass 1)."""

    @abc.abstractmethod
    def geometry(self, num_frames: int) -> FrameGeometry:
        """Crop affines, frame sizes and view validity of the frames :meth:`batches` produced."""

    @abc.abstractmethod
    def overlay_frames(self) -> Iterator[list[np.ndarray | None]]:
        """Original frames again, in output order: one RGB image (or None) per view."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the input for the sidecar."""

    def frame_numbers(self, num_frames: int) -> np.ndarray:
        return np.arange(num_frames, dtype=np.int64)

    def segments(self, num_frames: int) -> np.ndarray:
        return np.zeros(num_frames, dtype=np.int64)

    def calibration(self, view: int) -> Any:
        return None

    def expected_frames(self) -> int | None:
        return None


class FrameSource(Source):
    """Image folder, single image, video, or session folder of videos."""

    def __init__(self, kind: str, path: Path, views: list[ViewInput], *, multiview_model: bool,
                 crop: str, bboxes: dict[str, BoxTable] | None, padding: float, camera_mode: str):
        self.kind, self.path, self.views = kind, path, views
        self.view_names = [v.name for v in views]
        self.multiview_model = multiview_model
        self.body_per_view = not multiview_model and len(views) > 1
        self.crop, self.bboxes, self.padding = crop, bboxes, padding
        self.camera_mode = camera_mode
        fps = [v.fps for v in views if v.fps]
        self.fps = fps[0] if fps else None
        self.fps_source = "video" if fps else None
        if len({round(f, 3) for f in fps}) > 1:
            _warn(f"the videos' frame rates differ ({ {v.name: v.fps for v in views} }); using {self.fps}")
        counts = {v.name: v.frame_count for v in views if v.files is None}
        if len(set(counts.values())) > 1:
            _warn(f"the videos' frame counts differ ({counts}); frames are read until the shortest ends")
        self._affine: list[np.ndarray] = []
        self._size: list[np.ndarray] = []
        self._maps: dict[tuple[int, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = {}

    def calibration(self, view: int) -> Any:
        return self.views[view].calibration

    def expected_frames(self) -> int | None:
        counts = [len(v.files) if v.files is not None else v.frame_count for v in self.views]
        return None if any(c is None for c in counts) else min(counts)  # type: ignore[type-var]

    def _synced_frames(self) -> Iterator[list[np.ndarray]]:
        iters = [v.frames() for v in self.views]
        try:
            while True:
                frame = []
                for it in iters:
                    img = next(it, None)
                    if img is None:
                        return
                    frame.append(img)
                yield frame
        finally:
            for it in iters:
                it.close()  # type: ignore[attr-defined]

    def _undistort_maps(self, v: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        cal = self.views[v].calibration
        if cal is None or not np.any(cal.dist):
            return None
        key = (v, size)
        if key not in self._maps:
            K = np.asarray(cal.K, np.float64)
            self._maps[key] = cv2.initUndistortRectifyMap(K, np.asarray(cal.dist, np.float64), None, K, size,
                                                          cv2.CV_16SC2)
        return self._maps[key]

    def _prepare(self, row: int, v: int, image: np.ndarray, S: int) -> tuple[np.ndarray, np.ndarray]:
        view = self.views[v]
        H, W = image.shape[:2]
        cal = view.calibration
        if cal is not None and tuple(cal.image_size) != (W, H):
            raise DataError(f"frames are {W}×{H} pixels but the calibration of camera '{view.name}' is for "
                            f"{cal.image_size[0]}×{cal.image_size[1]}", path=view.path, field="image_size")
        bbox = None
        if self.crop == "bbox" and self.bboxes is not None:
            name = view.files[row].name if view.files is not None else None
            bbox = self.bboxes[view.name].get(row, name)
        box = crop_box(self.crop, (W, H), bbox, self.padding)
        net = crop_and_resize(image, box, S, undistort_maps=self._undistort_maps(v, (W, H)))
        return to_channels_first(net), crop_affine(box, S)  # uint8 RGB (3,S,S): run_model normalises

    def batches(self, trained: TrainedModel, batch_size: int) -> Iterator[Batch]:
        S = trained.image_size
        V = len(self.views)
        self._affine, self._size = [], []
        pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (row, view, image, affine)

        def flush() -> Batch:
            nonlocal pending
            if self.multiview_model:
                rows = np.array(sorted({p[0] for p in pending}), dtype=np.int64)
                imgs = np.stack([np.stack([p[2] for p in pending if p[0] == r]) for r in rows])
                affs = np.stack([np.stack([p[3] for p in pending if p[0] == r]) for r in rows])
                inputs = {"image": torch.from_numpy(imgs), "view_mask": torch.ones(len(rows), V, dtype=torch.bool)}
                inputs.update(self._calibration_inputs(affs))
                batch = Batch(inputs, rows, np.full(len(rows), -1, dtype=np.int64))
            else:
                imgs = np.stack([p[2] for p in pending])[:, None]
                batch = Batch({"image": torch.from_numpy(imgs)}, np.array([p[0] for p in pending], np.int64),
                              np.array([p[1] for p in pending], np.int64))
            pending = []
            return batch

        for row, frame in enumerate(self._synced_frames()):
            affs, sizes = [], []
            for v, image in enumerate(frame):
                net, A = self._prepare(row, v, image, S)
                pending.append((row, v, net, A))
                affs.append(A)
                sizes.append((image.shape[1], image.shape[0]))
            self._affine.append(np.stack(affs))
            self._size.append(np.asarray(sizes, dtype=np.int64))
            items = len(pending) if not self.multiview_model else len(pending) // V
            if items >= batch_size:
                yield flush()
        if pending:
            yield flush()

    def _calibration_inputs(self, affs: np.ndarray) -> dict[str, torch.Tensor]:
        """K, R, t of the network input images (calibration, moved through the crop); NaN when the
        model predicts its own cameras (absolute mode never reads them)."""
        B, V = affs.shape[:2]
        if self.camera_mode not in CALIBRATED_MODES:
            nan = float("nan")
            return {"K": torch.full((B, V, 3, 3), nan), "R": torch.full((B, V, 3, 3), nan),
                    "t": torch.full((B, V, 3), nan)}
        K = np.stack([[affs[b, v] @ np.asarray(self.views[v].calibration.K, np.float64) for v in range(V)]
                      for b in range(B)])
        R = np.broadcast_to(np.stack([np.asarray(c.calibration.R, np.float64) for c in self.views]), (B, V, 3, 3))
        t = np.broadcast_to(np.stack([np.asarray(c.calibration.t, np.float64).reshape(3) for c in self.views]),
                            (B, V, 3))
        return {"K": torch.from_numpy(K.astype(np.float32)), "R": torch.from_numpy(R.astype(np.float32)),
                "t": torch.from_numpy(t.astype(np.float32))}

    def geometry(self, num_frames: int) -> FrameGeometry:
        if len(self._affine) != num_frames:
            raise SmilError(f"internal: {len(self._affine)} frames prepared, {num_frames} predicted")
        return FrameGeometry(np.stack(self._affine), np.stack(self._size),
                             np.ones((num_frames, len(self.views)), dtype=bool))

    def overlay_frames(self) -> Iterator[list[np.ndarray | None]]:
        yield from self._synced_frames()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": str(self.path),
                               "views": [{"name": v.name, "path": str(v.path)} for v in self.views]}
        for d, v in zip(out["views"], self.views):
            if v.files is not None:
                d["files"] = [f.name for f in v.files]
            else:
                d["fps"] = v.fps
                d["frame_count_header"] = v.frame_count
        return out


class DatasetSource(Source):
    """An HDF5 dataset: the stored images are the original frames."""

    def __init__(self, path: Path, spec: RegressorSpec, split: str | None):
        from smil.data.store import open_dataset

        self.kind, self.path, self.split = "hdf5", path, split
        self.network_size = spec.image_size
        self.reader = open_dataset(path)
        if split is not None:
            self.reader.split_indices(split)  # an unknown split is an error now, not after loading the model
        self.view_names = list(self.reader.camera_names)
        self.body_per_view = spec.mode == "singleview" and len(self.view_names) > 1
        self.mode = spec.mode
        self.indices: np.ndarray = np.zeros(0, dtype=np.int64)
        self._item_valid: dict[tuple[int, int], bool] = {}

    def batches(self, trained: TrainedModel, batch_size: int) -> Iterator[Batch]:
        rows: dict[int, int] = {}
        order: list[int] = []
        for batch in iterate_dataset(trained, self.path, self.split, batch_size=batch_size):
            idx = batch["index"].numpy().astype(np.int64)
            for i in idx:
                if int(i) not in rows:
                    rows[int(i)] = len(order)
                    order.append(int(i))
            self.indices = np.asarray(order, dtype=np.int64)
            r = np.array([rows[int(i)] for i in idx], dtype=np.int64)
            views = batch["view"].numpy().astype(np.int64) if self.mode == "singleview" else np.full(len(r), -1)
            yield Batch(batch, r, views)
        self.indices = np.asarray(order, dtype=np.int64)

    def geometry(self, num_frames: int) -> FrameGeometry:
        from smil.data.augment import resize_affine

        if len(self.indices) != num_frames:
            raise SmilError(f"internal: {len(self.indices)} samples read, {num_frames} predicted")
        V = len(self.view_names)
        A = resize_affine(self.reader.image_size, self.network_size)
        return FrameGeometry(
            np.broadcast_to(A, (num_frames, V, 3, 3)).copy(),
            np.broadcast_to(np.asarray(self.reader.image_size, np.int64), (num_frames, V, 2)).copy(),
            self.reader.view_valid[self.indices].astype(bool),
        )

    def overlay_frames(self) -> Iterator[list[np.ndarray | None]]:
        for i in self.indices:
            s = self.reader.get_sample(int(i), masks=False)
            yield [img if ok else None for img, ok in zip(s["images"], s["view_valid"])]

    def frame_numbers(self, num_frames: int) -> np.ndarray:
        return self.reader.frame[self.indices].astype(np.int64)

    def segments(self, num_frames: int) -> np.ndarray:
        """Samples of one session form a sequence; samples without a session stand alone."""
        sess = self.reader.session[self.indices]
        return np.array([s if s else f"\0sample{i}" for s, i in zip(sess, self.indices)], dtype=object)

    def describe(self) -> dict[str, Any]:
        return {"kind": "hdf5", "path": str(self.path), "split": self.split,
                "sample_index": self.indices.tolist(),
                "sample_id": [str(s) for s in self.reader.sample_id[self.indices]],
                "image_size": list(self.reader.image_size), "camera_names": self.view_names}

    def expected_frames(self) -> int | None:
        idx = np.arange(len(self.reader)) if self.split is None else self.reader.split_indices(self.split)
        return int(len(idx))


def open_source(path: str | Path, spec: RegressorSpec, options: InferOptions) -> Source:
    """Discover what ``path`` is and check it fits the model (its ``spec``) and the options."""
    path = Path(path)
    crop = options.resolved_crop()
    if not path.exists():
        raise DataError("input not found", path=path)
    multiview = spec.mode == "multiview"
    rig = list(spec.rig)
    if path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
        if crop != "full":
            raise ConfigError(f"HDF5 input is already cropped; --crop {crop} does not apply", field="crop")
        if options.calibration is not None:
            raise ConfigError("HDF5 input carries its own cameras; --calibration does not apply", field="calibration")
        src = DatasetSource(path, spec, options.split)
        src.fps, src.fps_source = (options.fps, "--fps") if options.fps else (None, None)
        return src
    if options.split is not None:
        raise ConfigError("--split applies to HDF5 datasets only", field="split")

    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            fps, count = _probe_video(path)
            views = [ViewInput(path.stem, path, None, fps=fps, frame_count=count)]
            kind = "video"
        elif suffix in IMAGE_SUFFIXES:
            views = [ViewInput(path.stem, path, [path])]
            kind = "image"
        else:
            raise DataError(f"unsupported input file type {suffix!r}; expected a video ({', '.join(VIDEO_SUFFIXES)}), "
                            f"an image ({', '.join(IMAGE_SUFFIXES)}), an HDF5 dataset ({', '.join(HDF5_SUFFIXES)}) "
                            f"or a folder", path=path)
    else:
        entries = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        images = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
        videos = sorted((p for p in entries if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: natural_key(p.name))
        if images and videos:
            raise DataError(f"the folder holds both images ({len(images)}) and videos ({len(videos)}); give a folder "
                            "of images or a session folder of videos (one per camera)", path=path)
        if images:
            views, kind = [ViewInput(path.name, path, images)], "images"
        elif videos:
            stems = [v.stem for v in videos]
            dup = sorted({s for s in stems if stems.count(s) > 1})
            if dup:
                raise DataError(f"several videos per camera name {dup}; one video per camera", path=path)
            by_stem = dict(zip(stems, videos))
            if multiview:
                missing = [c for c in rig if c not in by_stem]
                if missing:
                    raise DataError(
                        f"the model's camera rig is {rig}, but the session has videos for {stems}: "
                        f"no video for camera(s) {missing} (videos are matched to cameras by file stem)",
                        path=path)
                extra = [s for s in stems if s not in rig]
                if extra:
                    _warn(f"ignoring video(s) of camera(s) {extra}: not in the model's rig {rig}")
                chosen = [(c, by_stem[c]) for c in rig]
            else:
                chosen = list(zip(stems, videos))
            views = []
            for name, v in chosen:
                fps, count = _probe_video(v)
                views.append(ViewInput(name, v, None, fps=fps, frame_count=count))
            kind = "session"
        else:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)}) "
                            "in the folder", path=path)
    if multiview and kind != "session":
        raise DataError(f"a multi-view model (camera rig {rig}) needs a session folder with one video per camera, "
                        f"or an HDF5 dataset; got {'a ' + kind if kind != 'images' else 'a folder of images'}",
                        path=path)
    if options.calibration is not None:
        _attach_calibration(views, Path(options.calibration), single=kind != "session")
    if multiview and spec.camera_mode in CALIBRATED_MODES and any(v.calibration is None for v in views):
        raise ConfigError(f"this multi-view model uses calibrated cameras (camera_mode '{spec.camera_mode}'); pass the "
                          f"rig's calibration with --calibration FILE.toml (cameras {rig})", field="calibration")
    bboxes = load_bboxes(options.bboxes, [v.name for v in views], kind == "session") if crop == "bbox" else None
    src = FrameSource(kind, path, views, multiview_model=multiview, crop=crop, bboxes=bboxes,
                      padding=options.bbox_padding, camera_mode=spec.camera_mode)
    if options.fps:
        src.fps, src.fps_source = options.fps, "--fps"
    return src


def _attach_calibration(views: list[ViewInput], path: Path, single: bool) -> None:
    from smil.data.calibration import read_calibration_toml

    cams = read_calibration_toml(path)
    by_name = {c.name: c for c in cams}
    if single and len(views) == 1 and views[0].name not in by_name:
        if len(cams) != 1:
            raise DataError(f"the calibration has cameras {list(by_name)}; none is named '{views[0].name}' (the "
                            "input's stem) and there is more than one to choose from", path=path)
        views[0].calibration = cams[0]
        return
    missing = [v.name for v in views if v.name not in by_name]
    if missing:
        raise DataError(f"the input's cameras are {[v.name for v in views]}, but the calibration has {list(by_name)}: "
                        f"missing {missing}", path=path)
    for v in views:
        v.calibration = by_name[v.name]


# --------------------------------------------------------------------------------------------
# predictions


@dataclass
class Predictions:
    """Network outputs for every frame, rotations as matrices (float64).

    ``body[name]`` is ``(F, Vb, …)`` with ``Vb = V`` when the body is per view, else 1;
    ``camera[name]`` is ``(F, V, …)``; ``fov`` is ``(F, V, 1)``.
    """

    body: dict[str, np.ndarray]
    camera: dict[str, np.ndarray]
    body_valid: np.ndarray  # (F, Vb) bool

    @property
    def num_frames(self) -> int:
        return len(self.body_valid)


def _to_numpy(pred: dict[str, Any]) -> dict[str, np.ndarray]:
    """Network outputs → float64 numpy, rotations as matrices, cameras always with a view axis."""
    from smil.geometry.rotations import rot6d_to_matrix

    single = pred["fov"].dim() == 2  # single-view: fov (B,1); multi-view: (B,V,1)
    out = {}
    for k in BODY_KEYS + CAMERA_KEYS + (("principal_point",) if "principal_point" in pred else ()):
        v = pred[k].detach().float()
        if k in _ROT6D_KEYS:
            v = rot6d_to_matrix(v)
        if single and k in CAMERA_KEYS:
            v = v.unsqueeze(1)
        out[k] = v.cpu().double().numpy()
    return out


def predict(trained: TrainedModel, source: Source, batch_size: int, progress: bool | None) -> Predictions:
    """Pass 1: run the network over every frame of ``source``."""
    V = len(source.view_names)
    Vb = V if source.body_per_view else 1
    items: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    bar = Progress(source.expected_frames(), progress, "infer", unit="frame")
    last_row = -1
    for batch in source.batches(trained, batch_size):
        out = _to_numpy(run_network(trained, batch.inputs))
        items.append((batch.rows, batch.views, out))
        new = int(batch.rows.max()) - last_row
        last_row = max(last_row, int(batch.rows.max()))
        bar.update(max(new, 0))
    bar.close()
    if not items:
        raise DataError("no frames to run on (empty video, folder or split)", path=source.path)
    F = last_row + 1
    first = items[0][2]
    body = {k: np.full((F, Vb) + first[k].shape[1:], np.nan) for k in BODY_KEYS}
    camera = {k: np.full((F, V) + first[k].shape[2:], np.nan) for k in CAMERA_KEYS}
    body_valid = np.zeros((F, Vb), dtype=bool)
    for rows, views, out in items:
        for n, (r, v) in enumerate(zip(rows, views)):
            bv = v if source.body_per_view else 0
            for k in BODY_KEYS:
                body[k][r, bv] = out[k][n]
            body_valid[r, bv] = True
            for k in CAMERA_KEYS:
                if v < 0:
                    camera[k][r] = out[k][n]
                else:
                    camera[k][r, v] = out[k][n, 0]
    return Predictions(body, camera, body_valid)


# --------------------------------------------------------------------------------------------
# decoding, keypoints, overlay


def _to_rot6d(R: np.ndarray) -> torch.Tensor:
    from smil.geometry.rotations import matrix_to_rot6d

    return matrix_to_rot6d(torch.from_numpy(np.ascontiguousarray(R)).float())


def _fill_invalid(x: np.ndarray, valid: np.ndarray, key: str) -> np.ndarray:
    """Replace rows of invalid items by a harmless value (identity / zero / one) before the forward pass."""
    x = x.copy()
    if key in _ROT6D_KEYS:
        x[~valid] = np.eye(3)
    elif key == "scale":
        x[~valid] = 1.0
    elif key == "fov":
        x[~valid] = 0.5
    else:
        x[~valid] = 0.0
    return x


def decode_rows(trained: TrainedModel, preds: Predictions, rows: slice) -> dict[str, np.ndarray]:
    """Body-model output and network-input cameras for frames ``rows``.

    Returns ``joints (c, Vb, J, 3)``, ``vertices (c, Vb, N, 3)``, ``K_net, R, t (c, V, …)``.
    """
    body = {k: v[rows] for k, v in preds.body.items()}
    cam = {k: v[rows] for k, v in preds.camera.items()}
    bvalid = preds.body_valid[rows]
    c, Vb = bvalid.shape
    V = cam["fov"].shape[1]
    pred: dict[str, torch.Tensor] = {}
    for k, v in body.items():
        flat = _fill_invalid(v.reshape(c * Vb, *v.shape[2:]), bvalid.reshape(-1), k)
        pred[k] = _to_rot6d(flat) if k in _ROT6D_KEYS else torch.from_numpy(flat).float()
    cvalid = np.isfinite(cam["fov"]).all(-1)
    for k, v in cam.items():
        filled = _fill_invalid(v, cvalid, k)
        if Vb > 1:  # per-view bodies: item (frame, view) sees its own camera only
            filled = filled.reshape(c * V, 1, *v.shape[2:])
        pred[k] = _to_rot6d(filled) if k in _ROT6D_KEYS else torch.from_numpy(filled).float()
    pred = {k: v.to(trained.device) for k, v in pred.items()}
    out = decode(trained, pred)
    joints = out["joints"].astype(np.float64).reshape(c, Vb, -1, 3)
    vertices = out["vertices"].astype(np.float64).reshape(c, Vb, -1, 3)
    K, R, t = (out[k].astype(np.float64).reshape(c, V, *out[k].shape[2:]) for k in ("K", "R", "t"))
    joints[~bvalid] = np.nan
    vertices[~bvalid] = np.nan
    for a in (K, R, t):
        a[~cvalid] = np.nan
    return {"joints": joints, "vertices": vertices, "K_net": K, "R": R, "t": t}


def project_points(X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pixels ``(…, N, 2)`` of world points ``(…, N, 3)``; points behind the camera are NaN."""
    Xc = np.einsum("...ij,...nj->...ni", R, X) + t[..., None, :]
    uvw = np.einsum("...ij,...nj->...ni", K, Xc)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / uvw[..., 2:3]
    uv[~(Xc[..., 2] > 0)] = np.nan
    return uv


def _distort(points: np.ndarray, calibration: Any) -> np.ndarray:
    if calibration is None or not np.any(calibration.dist):
        return points
    from smil.geometry.camera import distort_points

    shape = points.shape
    return distort_points(points.reshape(-1, 2), calibration.K, calibration.dist).reshape(shape)


_SKELETON_BGR = (255, 200, 0)
_JOINT_BGR = (0, 0, 255)
_OUTLINE_BGR = (0, 255, 0)


class OverlayWriter:
    """Writes overlay frames (keypoints, skeleton, silhouette outline; views side by side) to an mp4."""

    def __init__(self, path: Path, fps: float, parents: list[int], faces: np.ndarray):
        self.path, self.fps, self.parents, self.faces = path, fps, parents, faces
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def _tile(self, image: np.ndarray | None, size: tuple[int, int], tile_h: int, name: str, frame: int,
              keypoints: np.ndarray, outline: Callable[[float], list[np.ndarray]]) -> np.ndarray:
        W, H = size
        k = tile_h / H
        tile_w = max(int(round(W * k)), 1)
        if image is None:
            tile = np.zeros((tile_h, tile_w, 3), np.uint8)
            cv2.putText(tile, f"{name}: no image", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
            return tile
        tile = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (tile_w, tile_h),
                          interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        to_tile = lambda p: k * (p + 0.5) - 0.5  # noqa: E731 - pixel centres of the resized image
        for contour in outline(k):
            pts = to_tile(contour)
            pts = pts[np.isfinite(pts).all(-1)]
            if len(pts) > 1:
                cv2.polylines(tile, [np.round(pts * 4).astype(np.int32)], True, _OUTLINE_BGR, 1, cv2.LINE_AA, 2)
        kp = to_tile(keypoints)
        for j, p in enumerate(self.parents):
            if p >= 0 and np.isfinite(kp[[j, p]]).all():
                a, b = np.round(kp[j] * 4).astype(int), np.round(kp[p] * 4).astype(int)
                cv2.line(tile, tuple(a), tuple(b), _SKELETON_BGR, 1, cv2.LINE_AA, 2)
        r = max(1, int(round(tile_h / 160)))
        for q in kp[np.isfinite(kp).all(-1)]:
            cv2.circle(tile, tuple(np.round(q * 4).astype(int)), r * 4, _JOINT_BGR, -1, cv2.LINE_AA, 2)
        cv2.putText(tile, f"{name} #{frame}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        return tile

    def write(self, images: list[np.ndarray | None], sizes: np.ndarray, names: list[str], frame: int,
              keypoints: np.ndarray, outlines: list[Callable[[float], list[np.ndarray]]]) -> None:
        tile_h = int(min(max(int(sizes[:, 1].max()), 256), 720))
        tiles = [self._tile(img, tuple(int(x) for x in sizes[v]), tile_h, names[v], frame, keypoints[v], outlines[v])
                 for v, img in enumerate(images)]
        canvas = np.concatenate(tiles, axis=1)
        h, w = canvas.shape[:2]
        w2, h2 = w + (w % 2), h + (h % 2)  # even sizes for codecs
        if self.size is None:
            self.size = (w2, h2)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), self.size)
            if not self.writer.isOpened():
                raise DataError("cannot open an mp4v video writer (OpenCV without the codec?)", path=self.path)
        if (w2, h2) != self.size:
            canvas = cv2.resize(canvas, self.size, interpolation=cv2.INTER_AREA)
        else:
            canvas = cv2.copyMakeBorder(canvas, 0, h2 - h, 0, w2 - w, cv2.BORDER_CONSTANT, value=0)
        assert self.writer is not None
        self.writer.write(canvas)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _outline_fn(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                size: tuple[int, int], calibration: Any) -> Callable[[float], list[np.ndarray]]:
    """Silhouette contours in original pixels, rasterised at the tile's scale ``k``."""
    from smil.render.raster import rasterize

    def contours(k: float) -> list[np.ndarray]:
        if not (np.isfinite(vertices).all() and np.isfinite(K).all()):
            return []
        T = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1.0]])
        W, H = max(int(round(size[0] * k)), 1), max(int(round(size[1] * k)), 1)
        vc = vertices @ R.T + t
        mask = rasterize(vc, faces, T @ K, (W, H)).mask.astype(np.uint8)
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for c in found:
            pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / k - 0.5  # tile → original pixels
            out.append(_distort(pts, calibration))
        return out

    return contours


# --------------------------------------------------------------------------------------------
# the whole run


@dataclass
class InferResult:
    npz: Path
    sidecar: Path
    overlay: Path | None
    num_frames: int
    num_views: int


def output_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``PREFIX.npz`` and ``PREFIX.json`` (a trailing ``.npz``/``.json`` on the prefix is dropped)."""
    p = Path(prefix)
    if p.suffix.lower() in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def _axis_angle(R: np.ndarray) -> np.ndarray:
    from smil.geometry.rotations import matrix_to_axis_angle

    out = np.full(R.shape[:-2] + (3,), np.nan)
    ok = np.isfinite(R).all(axis=(-1, -2))
    if ok.any():
        out[ok] = matrix_to_axis_angle(torch.from_numpy(R[ok])).numpy()
    return out


def _constant(a: np.ndarray) -> bool:
    finite = a[np.isfinite(a).all(axis=tuple(range(1, a.ndim)))]
    return len(finite) > 0 and bool(np.allclose(finite, finite[:1], rtol=1e-6, atol=1e-6))


def decode_all(trained: TrainedModel, preds: Predictions, source: Source, geom: FrameGeometry, batch_size: int,
               progress: bool | None, overlay: Path | None) -> tuple[np.ndarray, ...]:
    """Pass 2: body model, cameras in original pixels and keypoints for every frame; draws the overlay.

    Returns ``joints3d (F, Vb, J, 3)``, ``keypoints2d (F, V, J, 2)`` (distorted when the view has a
    calibration with distortion) and ``K (F, V, 3, 3)``, ``R``, ``t`` of the original frames.
    """
    F, V = preds.num_frames, len(source.view_names)
    Vb = preds.body_valid.shape[1]
    J = len(trained.joint_names)
    faces = trained.body.faces.cpu().numpy()
    joints3d = np.full((F, Vb, J, 3), np.nan)
    keypoints = np.full((F, V, J, 2), np.nan)
    K_all, R_all, t_all = np.full((F, V, 3, 3), np.nan), np.full((F, V, 3, 3), np.nan), np.full((F, V, 3), np.nan)
    A_inv = np.linalg.inv(geom.affine)
    calibrations = [source.calibration(v) for v in range(V)]
    frame_numbers = source.frame_numbers(F)
    writer = OverlayWriter(overlay, source.fps or 10.0, list(trained.body.parents), faces) if overlay else None
    frames_iter = source.overlay_frames() if overlay else None
    bar = Progress(F, progress, "decode", unit="frame")
    try:
        for lo in range(0, F, batch_size):
            rows = slice(lo, min(lo + batch_size, F))
            dec = decode_rows(trained, preds, rows)
            K = A_inv[rows] @ dec["K_net"]
            joints3d[rows], K_all[rows], R_all[rows], t_all[rows] = dec["joints"], K, dec["R"], dec["t"]
            per_view = dec["joints"] if Vb == V else np.repeat(dec["joints"], V, axis=1)
            kp = project_points(per_view, K, dec["R"], dec["t"])
            for v in range(V):
                kp[:, v] = _distort(kp[:, v], calibrations[v])
            keypoints[rows] = kp
            if writer is not None and frames_iter is not None:
                for i, r in enumerate(range(rows.start, rows.stop)):
                    images = next(frames_iter, None)
                    if images is None:
                        raise DataError(f"the input ended after {r} frames on the second read", path=source.path)
                    verts = dec["vertices"][i]
                    outlines = [
                        _outline_fn(verts[v if Vb == V else 0], faces, K[i, v], dec["R"][i, v], dec["t"][i, v],
                                    tuple(int(x) for x in geom.image_size[r, v]), calibrations[v])
                        if geom.valid[r, v] else _no_outline
                        for v in range(V)
                    ]
                    writer.write(images, geom.image_size[r], source.view_names, int(frame_numbers[r]), kp[i],
                                 outlines)
            bar.update(rows.stop - rows.start)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if frames_iter is not None:
            frames_iter.close()  # type: ignore[attr-defined]
    return joints3d, keypoints, K_all, R_all, t_all


def _no_outline(scale: float) -> list[np.ndarray]:
    return []


def infer(model: str | Path | TrainedModel, input_path: str | Path, out_prefix: str | Path,
          options: InferOptions) -> InferResult:
    """Run ``model`` (a ``model.pt`` path, or one loaded with :func:`load_trained`) over ``input_path``;
    write ``PREFIX.npz``, ``PREFIX.json`` and an optional overlay video.

    The input and options are checked against the model's record before the network is built.
    """
    from smil.train.checkpoint import load_model_record

    options.check()
    npz_path, json_path = output_paths(out_prefix)
    smoothing = SmoothingSettings(options.smooth) if options.smooth is not None else None
    if isinstance(model, TrainedModel):
        if options.body_model is not None:
            raise ConfigError("the model is already loaded with its body model; load it with body_model= instead",
                              field="body_model")
        if options.device is not None and torch.device(options.device) != model.device:
            raise ConfigError(f"the model is loaded on {model.device}, not {options.device}", field="device")
        spec = model.spec
    else:
        spec = RegressorSpec(**load_model_record(model)["spec"])
    source = open_source(input_path, spec, options)
    if isinstance(model, TrainedModel):
        trained = model
    else:
        trained = load_trained(model, options.body_model, device=options.device or "cpu")

    preds = predict(trained, source, options.batch_size, options.progress)
    F, V = preds.num_frames, len(source.view_names)
    geom = source.geometry(F)
    if smoothing is not None:
        preds = _smooth(preds, smoothing, source)

    overlay_ctx = (atomic_path(options.overlay_video, suffix=".tmp.mp4") if options.overlay_video
                   else contextlib.nullcontext())
    with overlay_ctx as overlay_tmp:
        joints3d, keypoints, K_orig, R_all, t_all = decode_all(
            trained, preds, source, geom, options.batch_size, options.progress,
            None if overlay_tmp is None else Path(overlay_tmp))
        arrays = _output_arrays(preds, source, geom, joints3d, keypoints, K_orig, R_all, t_all)
        with atomic_path(npz_path, suffix=".tmp.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        sidecar = _sidecar(trained, source, options, smoothing, arrays, F, V, npz_path, K_orig, R_all, t_all)
        write_json_atomic(json_path, sidecar)
    return InferResult(npz_path, json_path, Path(options.overlay_video) if options.overlay_video else None, F, V)


def _smooth(preds: Predictions, settings: SmoothingSettings, source: Source) -> Predictions:
    F = preds.num_frames
    times, segments = source.frame_numbers(F), source.segments(F)
    sizes = collections.Counter(segments.tolist())
    singles = sum(1 for n in sizes.values() if n == 1) if len(sizes) > 1 else 0
    if singles:
        _warn(f"{singles} sample(s) have no other frame of their session (or no session); they are not smoothed")
    params = {f"body/{k}": v for k, v in preds.body.items()}
    params.update({f"camera/{k}": v for k, v in preds.camera.items()})
    rot = tuple(f"{g}/{k}" for g in ("body", "camera") for k in _ROT6D_KEYS)
    try:
        sm = smooth_parameters(params, settings, times=times, segments=segments, rotation_keys=rot,
                               log_keys=("body/scale",))
    except DataError as exc:
        raise DataError(f"cannot smooth: {exc.detail} (smoothing needs one sample per session and frame number)",
                        path=source.path, field="frame") from None
    return Predictions({k: sm[f"body/{k}"] for k in preds.body}, {k: sm[f"camera/{k}"] for k in preds.camera},
                       preds.body_valid)


def _output_arrays(preds: Predictions, source: Source, geom: FrameGeometry, joints3d: np.ndarray,
                   keypoints: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    F = preds.num_frames
    squeeze = not source.body_per_view  # body arrays (F, …) instead of (F, V, …)

    def body(x: np.ndarray) -> np.ndarray:
        return x[:, 0] if squeeze else x

    b = preds.body
    out: dict[str, np.ndarray] = {
        "frame": source.frame_numbers(F),
        "view_valid": geom.valid,
        "image_size": geom.image_size.astype(np.int64),
        "input_affine": geom.affine,
        "global_rot": body(_axis_angle(b["global_rot"])),
        "global_rot_matrix": body(b["global_rot"]),
        "joint_rot": body(_axis_angle(b["joint_rot"])),
        "joint_rot_matrix": body(b["joint_rot"]),
        "betas": body(b["betas"]),
        "trans": body(b["trans"]),
        "scale": body(b["scale"]),
        "log_beta_scales": body(b["log_beta_scales"]),
        "betas_trans": body(b["betas_trans"]),
        "fov": preds.camera["fov"][..., 0],
        "cam_rot": _axis_angle(preds.camera["cam_rot"]),
        "cam_trans": preds.camera["cam_trans"],
        "K": K,
        "R": R,
        "t": t,
        "joints3d": body(joints3d),
        "keypoints2d": keypoints,
    }
    if isinstance(source, DatasetSource):
        out["sample_index"] = source.indices.copy()
    # floats are written as float32; integer and bool arrays keep their type
    return {k: np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64 else np.asarray(v)
            for k, v in out.items()}


def _axes(body_per_view: bool) -> dict[str, list[str]]:
    b = ["frame", "view"] if body_per_view else ["frame"]
    return {
        "frame": ["frame"],
        "sample_index": ["frame"],
        "view_valid": ["frame", "view"],
        "image_size": ["frame", "view", "wh"],
        "input_affine": ["frame", "view", "3", "3"],
        "global_rot": b + ["axis_angle"],
        "global_rot_matrix": b + ["3", "3"],
        "joint_rot": b + ["joint-1", "axis_angle"],
        "joint_rot_matrix": b + ["joint-1", "3", "3"],
        "betas": b + ["beta"],
        "trans": b + ["xyz"],
        "scale": b,
        "log_beta_scales": b + ["joint", "xyz"],
        "betas_trans": b + ["joint", "xyz"],
        "fov": ["frame", "view"],
        "cam_rot": ["frame", "view", "axis_angle"],
        "cam_trans": ["frame", "view", "xyz"],
        "K": ["frame", "view", "3", "3"],
        "R": ["frame", "view", "3", "3"],
        "t": ["frame", "view", "xyz"],
        "joints3d": b + ["joint", "xyz"],
        "keypoints2d": ["frame", "view", "joint", "xy"],
    }


def _sidecar(trained: TrainedModel, source: Source, options: InferOptions, smoothing: SmoothingSettings | None,
             arrays: dict[str, np.ndarray], F: int, V: int, npz_path: Path,
             K: np.ndarray, R: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    body = trained.body
    cameras = []
    sizes = arrays["image_size"]
    for v, name in enumerate(source.view_names):
        cal = source.calibration(v)
        entry: dict[str, Any] = {"name": name}
        if isinstance(source, FrameSource):
            entry["source"] = str(source.views[v].path)
        size_ok = sizes[:, v][arrays["view_valid"][:, v]]
        entry["image_size"] = size_ok[0].tolist() if len(size_ok) and (size_ok == size_ok[:1]).all() else None
        entry["dist"] = np.asarray(cal.dist, float).tolist() if cal is not None else []
        if all(_constant(a[:, v]) for a in (K, R, t)):
            i = int(np.flatnonzero(np.isfinite(K[:, v]).all(axis=(1, 2)))[0])
            entry.update({"per_frame": False, "K": K[i, v].tolist(), "R": R[i, v].tolist(), "t": t[i, v].tolist()})
        else:
            entry.update({"per_frame": True, "K": None, "R": None, "t": None})
        cameras.append(entry)
    axes = _axes(source.body_per_view)
    return {
        "format": OUTPUT_FORMAT,
        "format_version": OUTPUT_FORMAT_VERSION,
        "smil_version": __version__,
        "arrays_file": npz_path.name,
        "num_frames": F,
        "num_views": V,
        "fps": source.fps,
        "fps_source": source.fps_source,
        "source": source.describe(),
        "model": {
            "path": str(Path(trained.path).resolve()),
            "sha256": file_sha256(trained.path),
            "mode": trained.mode,
            "image_size": trained.image_size,
            "rig": list(trained.spec.rig),
            "camera_mode": trained.spec.camera_mode,
        },
        "body_model": {"path": body.path, "sha256": body.sha256 or ""},
        "joint_names": list(trained.joint_names),
        "parents": [int(p) for p in body.parents],
        "body_per_view": bool(source.body_per_view),
        "crop": {"mode": options.resolved_crop() if source.kind != "hdf5" else "stored",
                 "bbox_padding": options.bbox_padding if options.resolved_crop() == "bbox" else None,
                 "bboxes": str(options.bboxes) if options.bboxes else None},
        "smoothing": smoothing.describe() if smoothing is not None else None,
        "cameras": cameras,
        "conventions": {
            "pixels": "original frame pixels (HDF5: stored image), (x, y), centre of the top-left pixel = (0, 0)",
            "camera": "x_cam = R·X + t (OpenCV); K of the original (undistorted) frame; keypoints2d are distorted "
                      "with the calibration's dist when one is given",
            "rotations": "axis-angle (angle = norm, radians); *_matrix act on column vectors",
            "fov": "vertical field of view of the network input image, radians",
            "world_units": "those of the training data",
        },
        "arrays": {k: axes[k] for k in arrays if k in axes},
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
    }
