"""Find the parts of a SLEAP multi-camera session and match its cameras to a calibration by name.

Two layouts are understood (``docs/ingest-sleap.md``):

* **session folder** (sleap-anipose): ``PATH/calibration.toml`` (aniposelib), one sub-folder per
  camera *named after the camera* holding exactly one ``.slp`` (that camera's labels), the video
  it labels, and optionally ``PATH/points3d.h5`` (``tracks`` of shape (frames, tracks, nodes, 3),
  calibration units). Other files (board TOMLs, ``*.analysis.h5``, calibration images) are ignored.
* **recording session** (SLEAP multi-view ``.slp``): one file whose ``RecordingSession`` holds
  the calibration and links each camera to one of the file's videos; optional frame groups hold
  cross-view instance groups.

Cameras are matched by *name*, never by list position: the video order inside a ``.slp`` and the
order of sub-folders on disk are unrelated to the calibration's order. A camera that has labels
but no calibration entry is an error naming both lists. A calibration camera without labels is
allowed (it simply contributes no views) and is reported. The calibration's file order defines
the canonical camera slots.

Videos are resolved by file name when the stored path does not exist here (``.slp`` files often
store absolute paths from the machine that made them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import cv2
import numpy as np

from smil.data.calibration import CameraCalibration, read_calibration_toml
from smil.errors import DataError

Layout = Literal["session-folder", "recording-session"]


@dataclass
class VideoInfo:
    """A resolved video file and what OpenCV reports about it."""

    path: Path
    image_size: tuple[int, int]  # (width, height)
    frame_count: int  # 0 when the container does not say


@dataclass
class CameraStream:
    """One camera's labels: its calibration, its video, and its instances per video frame."""

    calibration: CameraCalibration
    video: VideoInfo
    labels_path: Path
    frames: dict[int, list] = field(default_factory=dict)  # video frame index -> sleap-io instances


@dataclass
class SleapSession:
    """Everything the ingest needs from one recording session, cameras keyed by name."""

    name: str
    layout: Layout
    source: Path  # the session folder or the .slp
    calibration_source: str  # a TOML path, or "<file.slp> (embedded)"
    cameras: list[CameraCalibration]  # calibration file order = camera slots
    streams: dict[str, CameraStream]  # camera name -> labels (only cameras that have labels)
    node_names: list[str]
    track_names: list[str]  # order of the tracks axis of points3d.h5
    # frame index -> animals, each a {camera name: instance} instance group (recording sessions
    # with frame groups only; empty otherwise)
    instance_groups: dict[int, list[tuple[str, dict[str, object]]]] = field(default_factory=dict)
    points3d_path: Path | None = None

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def cameras_without_labels(self) -> list[str]:
        return [c.name for c in self.cameras if c.name not in self.streams]


# --------------------------------------------------------------------------------------------
# Entry point


def discover_sessions(
    path: str | Path,
    *,
    calibration: str | Path | None = None,
    video_dirs: Iterable[str | Path] = (),
    session_name: str | None = None,
) -> list[SleapSession]:
    """Open a session folder or a multi-view ``.slp`` and return its session(s).

    Args:
        path: a session folder (layout a) or a ``.slp`` holding a ``RecordingSession`` (layout b).
        calibration: an aniposelib TOML that replaces the folder's ``calibration.toml`` or the
            calibration embedded in the ``.slp``.
        video_dirs: extra folders searched for videos by file name.
        session_name: the session name (split group); default the folder name or the ``.slp`` stem.
    """
    path = Path(path)
    extra = [Path(d) for d in video_dirs]
    if path.is_dir():
        return [_session_folder(path, calibration, extra, session_name)]
    if path.is_file() and path.suffix == ".slp":
        return _recording_sessions(path, calibration, extra, session_name)
    if not path.exists():
        raise DataError("does not exist (expected a session folder or a .slp file)", path=path)
    raise DataError("expected a session folder or a .slp file", path=path)


# --------------------------------------------------------------------------------------------
# Camera matching


def match_cameras(
    data_cameras: Iterable[str], calibration: list[CameraCalibration], where: str | Path
) -> dict[str, CameraCalibration]:
    """Map every data camera name to its calibration entry, by exact name.

    Raises a :class:`DataError` naming both lists when a data camera has no calibration entry or
    the calibration repeats a name.
    """
    data = list(data_cameras)
    names = [c.name for c in calibration]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"calibration repeats camera name(s) {dupes}", path=where, field="name")
    by_name = {c.name: c for c in calibration}
    missing = [n for n in data if n not in by_name]
    if missing:
        raise DataError(
            f"camera(s) {missing} have labels but no calibration entry; "
            f"calibration cameras: {names}; cameras in the data: {data}",
            path=where,
            field="cameras",
        )
    return {n: by_name[n] for n in data}


# --------------------------------------------------------------------------------------------
# Layout (a): session folder


def _session_folder(
    folder: Path, calibration: str | Path | None, extra: list[Path], session_name: str | None
) -> SleapSession:
    calib_path = Path(calibration) if calibration is not None else folder / "calibration.toml"
    if not calib_path.is_file():
        raise DataError(
            "no calibration: a session folder needs calibration.toml (or pass --calibration)",
            path=calib_path,
        )
    cameras = read_calibration_toml(calib_path)

    slp_by_camera: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        slps = sorted(sub.glob("*.slp"))
        if len(slps) > 1:
            raise DataError(
                f"camera folder holds {len(slps)} .slp files {[p.name for p in slps]}; "
                "expected exactly one (the labels of that camera)",
                path=sub,
            )
        if slps:
            slp_by_camera[sub.name] = slps[0]
    if not slp_by_camera:
        raise DataError(
            "no camera folders with a .slp file found (expected one sub-folder per camera, "
            "named as in the calibration)",
            path=folder,
        )
    calib_by_cam = match_cameras(slp_by_camera, cameras, calib_path)

    streams: dict[str, CameraStream] = {}
    node_names: list[str] | None = None
    track_names: list[str] | None = None
    for cam in cameras:  # calibration order
        if cam.name not in slp_by_camera:
            continue
        slp = slp_by_camera[cam.name]
        labels = load_labels(slp)
        nodes = _node_names(labels, slp)
        if node_names is None:
            node_names = nodes
        elif nodes != node_names:
            raise DataError(
                f"skeleton nodes {nodes} differ from those of the other cameras {node_names}",
                path=slp,
                field="skeleton",
            )
        if track_names is None:
            track_names = [t.name for t in labels.tracks]
        if len(labels.videos) != 1:
            raise DataError(
                f"a camera's .slp must label exactly one video, found {len(labels.videos)}",
                path=slp,
                field="videos",
            )
        video = resolve_video(labels.videos[0], slp, [*extra, slp.parent])
        check_video_size(video, cam, slp)
        streams[cam.name] = CameraStream(
            calibration=calib_by_cam[cam.name],
            video=video,
            labels_path=slp,
            frames=_frames_by_index(labels.labeled_frames),
        )
    points3d = folder / "points3d.h5"
    return SleapSession(
        name=session_name or folder.resolve().name,
        layout="session-folder",
        source=folder,
        calibration_source=str(calib_path),
        cameras=cameras,
        streams=streams,
        node_names=node_names or [],
        track_names=track_names or [],
        points3d_path=points3d if points3d.is_file() else None,
    )


# --------------------------------------------------------------------------------------------
# Layout (b): a .slp holding a RecordingSession


def _recording_sessions(
    slp: Path, calibration: str | Path | None, extra: list[Path], session_name: str | None
) -> list[SleapSession]:
    labels = load_labels(slp)
    if not labels.sessions:
        raise DataError(
            "holds no RecordingSession (no multi-camera calibration); for one .slp per camera "
            "use a session folder with calibration.toml",
            path=slp,
            field="sessions",
        )
    nodes = _node_names(labels, slp)
    override = read_calibration_toml(calibration) if calibration is not None else None
    base = session_name or slp.stem
    many = len(labels.sessions) > 1
    out = []
    for k, rs in enumerate(labels.sessions):
        name = f"{base}_session{k}" if many else base
        out.append(_one_recording_session(labels, rs, slp, nodes, override, calibration, extra, name))
    return out


def _one_recording_session(
    labels: Any,  # sleap_io.Labels
    rs: Any,  # sleap_io.RecordingSession
    slp: Path,
    nodes: list[str],
    override: list[CameraCalibration] | None,
    calibration: str | Path | None,
    extra: list[Path],
    name: str,
) -> SleapSession:
    """One RecordingSession: cameras from ``override`` (a TOML) or the embedded calibration."""
    embedded = [camera_from_sleap(c, slp) for c in rs.camera_group.cameras]
    cameras = override if override is not None else embedded
    calib_source = str(calibration) if override is not None else f"{slp} (embedded)"
    where = calibration if override is not None else slp

    # Which session camera labels which video (sleap-io links the objects; the file's video order is
    # unrelated to the camera order).
    cam_by_video = {}
    for sc in rs.camera_group.cameras:
        v = rs.get_video(sc)
        if v is not None:
            cam_by_video[id(v)] = sc
    by_video: dict[int, list] = {}
    for lf in labels.labeled_frames:
        by_video.setdefault(id(lf.video), []).append(lf)
    unlinked = [v.filename for v in labels.videos if id(v) in by_video and id(v) not in cam_by_video]
    if unlinked:
        raise DataError(
            f"labeled video(s) {unlinked} are not linked to any camera of the recording session "
            f"(session cameras: {[c.name for c in rs.camera_group.cameras]})",
            path=slp,
            field="sessions",
        )
    labeled_cams = [
        cam_by_video[id(v)].name for v in labels.videos if id(v) in by_video and id(v) in cam_by_video
    ]
    calib_by_cam = match_cameras(labeled_cams, cameras, where)

    streams: dict[str, CameraStream] = {}
    order = {c.name: i for i, c in enumerate(cameras)}
    for v in sorted(
        (v for v in labels.videos if id(v) in by_video), key=lambda v: order[cam_by_video[id(v)].name]
    ):
        cam_name = cam_by_video[id(v)].name
        video = resolve_video(v, slp, [*extra, slp.parent])
        check_video_size(video, calib_by_cam[cam_name], slp)
        streams[cam_name] = CameraStream(
            calibration=calib_by_cam[cam_name],
            video=video,
            labels_path=slp,
            frames=_frames_by_index(by_video[id(v)]),
        )

    groups: dict[int, list[tuple[str, dict[str, object]]]] = {}
    for fidx, fg in sorted(rs.frame_groups.items()):
        animals = []
        for k, ig in enumerate(fg.instance_groups):
            members = {cam.name: inst for cam, inst in ig.instance_by_camera.items()}
            if members:
                animals.append((str(ig.metadata.get("name") or f"group{k}"), members))
        if animals:
            groups[int(fidx)] = animals
    return SleapSession(
        name=name,
        layout="recording-session",
        source=slp,
        calibration_source=calib_source,
        cameras=cameras,
        streams=streams,
        node_names=nodes,
        track_names=[t.name for t in labels.tracks],
        instance_groups=groups,
    )


def camera_from_sleap(camera: Any, where: Path) -> CameraCalibration:
    """Convert a sleap-io ``Camera`` (aniposelib fields, Rodrigues rotation) to a calibration."""
    if not camera.name:
        raise DataError("a camera of the recording session has no name", path=where, field="calibration")
    R, _ = cv2.Rodrigues(np.asarray(camera.rvec, dtype=np.float64).reshape(3, 1))
    size = camera.size
    if size is None:
        raise DataError(f"camera '{camera.name}' has no image size", path=where, field="calibration.size")
    return CameraCalibration(
        name=str(camera.name),
        image_size=(int(size[0]), int(size[1])),
        K=np.asarray(camera.matrix, dtype=np.float64),
        dist=np.asarray(camera.dist, dtype=np.float64).ravel(),
        R=R,
        t=np.asarray(camera.tvec, dtype=np.float64).ravel(),
    )


# --------------------------------------------------------------------------------------------
# Shared helpers


def load_labels(path: Path) -> Any:
    """Load a ``.slp`` with sleap-io without opening its videos; an empty file is an error."""
    import sleap_io as sio

    try:
        labels = sio.load_slp(str(path), open_videos=False)
    except Exception as exc:  # sleap-io raises many types for unreadable files
        raise DataError(f"cannot read SLEAP labels ({type(exc).__name__}: {exc})", path=path) from None
    if len(labels.labeled_frames) == 0:
        raise DataError("holds no labeled frames", path=path, field="labeled_frames")
    return labels


def _node_names(labels: Any, path: Path) -> list[str]:
    if len(labels.skeletons) != 1:
        raise DataError(f"expected one skeleton, found {len(labels.skeletons)}", path=path, field="skeletons")
    return list(labels.skeletons[0].node_names)


def _frames_by_index(labeled_frames: Iterable[Any]) -> dict[int, list]:
    frames: dict[int, list] = {}
    for lf in labeled_frames:
        # LabeledFrame.frame_idx is the video frame; the raw file's frame_id is a row of /frames.
        frames.setdefault(int(lf.frame_idx), []).extend(lf.instances)
    return frames


_SPLIT = re.compile(r"[\\/]")
_FOREIGN_ABSOLUTE = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")


def resolve_video(video: Any, labels_path: Path, search: list[Path]) -> VideoInfo:
    """Find the file of a sleap-io ``Video`` and read its size.

    Tried in order: the stored path as given (absolute, or relative to the ``.slp``'s folder;
    a Windows drive path read elsewhere is skipped), then the stored file name in each ``search``
    folder (callers pass ``--video-dir`` folders, then the ``.slp``'s folder), in ``../videos`` and
    ``../../videos`` of the ``.slp``'s folder, and in its parent folder. The stored path may come
    from another operating system, so both ``/`` and ``\\`` separate its parts.
    """
    stored = video.filename
    if isinstance(stored, (list, tuple)):
        raise DataError(
            "image-sequence videos are not supported (expected one video file per camera)",
            path=labels_path,
            field="videos",
        )
    stored = str(stored)
    if Path(stored).resolve() == labels_path.resolve() or stored.endswith(".slp"):
        raise DataError(
            "frames embedded in a .slp are not supported (link the original video files)",
            path=labels_path,
            field="videos",
        )
    base = labels_path.parent
    foreign = bool(_FOREIGN_ABSOLUTE.match(stored))  # e.g. 'D:/...' read on Linux
    candidates: list[Path] = []
    if Path(stored).is_absolute():
        candidates.append(Path(stored))
    elif not foreign:
        candidates.append(base / stored)
    name = _SPLIT.split(stored)[-1]
    folders = [*search, base / ".." / "videos", base / ".." / ".." / "videos", base.parent]
    for folder in folders:
        candidates.append(folder / name)
    seen: list[str] = []
    for cand in candidates:
        key = os.path.normpath(cand)
        if key in seen:
            continue
        seen.append(key)
        if cand.is_file():
            return _video_info(cand.resolve())
    raise DataError(
        f"video not found: stored path '{stored}'; looked for it at {seen} "
        "(--video-dir DIR adds a folder to search)",
        path=labels_path,
        field="videos",
    )


def _video_info(path: Path) -> VideoInfo:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError("cannot open video", path=path)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return VideoInfo(path=path, image_size=(w, h), frame_count=max(n, 0))


def check_video_size(video: VideoInfo, camera: CameraCalibration, labels_path: Path) -> None:
    """The calibration's image size must be the video's frame size."""
    size = (int(camera.image_size[0]), int(camera.image_size[1]))
    if video.image_size != size:
        raise DataError(
            f"video {video.path} is {video.image_size[0]}×{video.image_size[1]} but camera "
            f"'{camera.name}' is calibrated for {size[0]}×{size[1]}",
            path=labels_path,
            field="videos",
        )
