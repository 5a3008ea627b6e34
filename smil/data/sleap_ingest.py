"""``smil ingest sleap``: SLEAP multi-camera sessions → a sample manifest.

Conventions of what is written (``docs/ingest-sleap.md`` has the user's view):

* **Cameras** are matched to labels by name (:mod:`smil.data.sleap_session`); the manifest's
  ``camera_names`` are the calibration's cameras in the calibration file's order.
* **A sample is one animal at one video frame, across views.** Animals are told apart by the
  recording session's instance groups for that frame when present, else by track name, else
  a frame must hold a single instance per view. A view is kept when the animal has at least one
  visible mapped keypoint in it.
* **User labels win over predictions**: per view and animal, a user ``Instance`` replaces the
  ``PredictedInstance`` (an instance group's prediction is replaced by the user instance made
  from it).
* **Keypoints are undistorted** at ingest with the camera's OpenCV ``dist``; the view record keeps
  ``dist`` so that ``smil preprocess`` undistorts the image with the same ``K`` and ``dist``.
  Points that are ``NaN`` or marked not visible are invisible (weight 0, coordinates ``NaN``);
  visible points have weight 1.
* **Frames** are ``{"video": absolute path, "frame": i}`` with ``i`` the video frame index
  (sleap-io's ``LabeledFrame.frame_idx``).
* **3D keypoints**: ``points3d.h5`` of a session folder when present (calibration units), else
  DLT triangulation of the undistorted keypoints where at least two views see a point.
* **World unit**: aniposelib calibrations are in the units of the calibration board's
  ``square_length``, millimetres by convention, so ``world_unit_m`` defaults to 0.001.
* **Split group** = session name, so a whole session stays in one split.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from smil.data.joint_mapping import build_joint_mapping
from smil.data.manifest import ManifestHeader, SampleRecord, ViewRecord, write_manifest
from smil.data.sleap_session import CameraStream, SleapSession, discover_sessions
from smil.errors import DataError

# smil.geometry (torch) is imported where it is used: the command line registers this module, and
# every smil command would otherwise start by importing torch

DEFAULT_WORLD_UNIT_M = 0.001  # aniposelib: board square_length units, millimetres by convention
_MAX_REASONS = 20


class _BadFrame(Exception):
    """A frame that cannot become a sample; skipped with ``--skip-bad``, else a DataError."""


@dataclass
class IngestReport:
    """Counts and diagnostics of one ingest (also stored in the manifest header's ``info``)."""

    samples: int = 0
    views: int = 0
    user_views: int = 0
    predicted_views: int = 0
    skipped_bad: int = 0
    bad_reasons: list[str] = field(default_factory=list)
    without_keypoints: int = 0
    untracked_ignored: int = 0
    keypoints3d_source: dict[str, str] = field(default_factory=dict)
    reprojection_median_px: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "views": self.views,
            "user_views": self.user_views,
            "predicted_views": self.predicted_views,
            "skipped_bad_frames": self.skipped_bad,
            "bad_frame_reasons": self.bad_reasons,
            "animals_without_keypoints": self.without_keypoints,
            "untracked_instances_ignored": self.untracked_ignored,
            "keypoints3d_source": self.keypoints3d_source,
            "reprojection_median_px": self.reprojection_median_px,
        }


def ingest_sleap(
    path: str | Path,
    *,
    joint_names: list[str] | None = None,
    joint_map: str | Path | None = None,
    calibration: str | Path | None = None,
    world_unit_m: float | None = None,
    skip_bad: bool = False,
    video_dirs: tuple[str | Path, ...] = (),
    session_name: str | None = None,
    body_model_sha256: str | None = None,
) -> tuple[ManifestHeader, list[SampleRecord], IngestReport]:
    """Read a SLEAP session (folder or multi-view ``.slp``) into manifest samples.

    Args:
        path: session folder (layout a) or ``.slp`` with a RecordingSession (layout b).
        joint_names: target joint names (the body model's); ``None`` uses the skeleton's nodes.
        joint_map: CSV table ``source,joint`` mapping skeleton nodes to joint names; without it
            nodes map to joints of the same name.
        calibration: aniposelib TOML replacing the session's own calibration.
        world_unit_m: metres per calibration unit (default 0.001, millimetres).
        skip_bad: skip frames that cannot become samples (counted) instead of failing.
        video_dirs: extra folders searched for videos by file name.
        session_name: split group / session name (default: folder name or ``.slp`` stem).
        body_model_sha256: recorded in the header when the joint names come from a body model.
    """
    if world_unit_m is not None and not (np.isfinite(world_unit_m) and world_unit_m > 0):
        raise DataError(f"expected a positive number of metres, got {world_unit_m}", field="world_unit_m")
    sessions = discover_sessions(
        path, calibration=calibration, video_dirs=video_dirs, session_name=session_name
    )
    nodes = sessions[0].node_names
    targets = list(joint_names) if joint_names is not None else list(nodes)
    source_of, mapping_report = build_joint_mapping(nodes, targets, joint_map)
    if not (source_of >= 0).any():
        raise DataError(
            f"no skeleton node maps to a joint (nodes {nodes}; joints {_preview(targets)}); "
            "give a --joint-map table with columns source,joint",
            path=joint_map if joint_map is not None else path,
        )

    camera_names: list[str] = []
    for s in sessions:
        camera_names += [n for n in s.camera_names if n not in camera_names]

    report = IngestReport()
    errors: dict[str, list[np.ndarray]] = {n: [] for n in camera_names}
    samples: list[SampleRecord] = []
    for s in sessions:
        samples += _session_samples(s, source_of, skip_bad, report, errors)
    report.samples = len(samples)
    report.reprojection_median_px = {
        n: (float(np.median(np.concatenate(e))) if e and np.concatenate(e).size else None)
        for n, e in errors.items()
    }
    header = ManifestHeader(
        source_kind="sleap",
        joint_names=targets,
        world_unit_m=float(world_unit_m if world_unit_m is not None else DEFAULT_WORLD_UNIT_M),
        camera_names=camera_names,
        body_model_sha256=body_model_sha256,
        info={
            "source": str(path),
            "layout": sessions[0].layout,
            "sessions": [s.name for s in sessions],
            "calibration": [s.calibration_source for s in sessions],
            "world_unit_m_source": (
                "--world-unit-m"
                if world_unit_m is not None
                else "default: aniposelib calibrations are in board units, millimetres by convention"
            ),
            "skeleton_nodes": list(nodes),
            "joint_mapping": mapping_report,
            "cameras_without_labels": {s.name: s.cameras_without_labels for s in sessions},
            "keypoints_undistorted": True,
            **report.to_json(),
        },
    )
    return header, samples, report


def _preview(names: list[str], limit: int = 8) -> str:
    return str(names) if len(names) <= limit else f"{names[:limit]} … ({len(names)} in all)"


# --------------------------------------------------------------------------------------------
# Samples


def _session_samples(
    s: SleapSession,
    source_of: np.ndarray,
    skip_bad: bool,
    report: IngestReport,
    errors: dict[str, list[np.ndarray]],
) -> list[SampleRecord]:
    points3d = _load_points3d(s)
    report.keypoints3d_source[s.name] = (
        f"{s.points3d_path} (frames without a row: triangulated)"
        if points3d is not None
        else "triangulated (DLT, ≥ 2 views)"
    )
    frames = sorted({f for st in s.streams.values() for f in st.frames})
    samples = []
    for fidx in frames:
        try:
            animals = _animals(s, fidx, report)
            built = [
                _sample(s, fidx, name, members, source_of, points3d, report) for name, members in animals
            ]
        except _BadFrame as exc:
            where = f"session '{s.name}' frame {fidx}: {exc}"
            if not skip_bad:
                raise DataError(
                    f"{exc} (use --skip-bad to skip such frames)", path=s.source, field=f"frame {fidx}"
                ) from None
            report.skipped_bad += 1
            if len(report.bad_reasons) < _MAX_REASONS:
                report.bad_reasons.append(where)
            continue
        for sample in built:
            if sample is None:
                report.without_keypoints += 1
                continue
            samples.append(sample)
            _collect_errors(sample, errors)
    return samples


def _animals(s: SleapSession, fidx: int, report: IngestReport) -> list[tuple[str, dict[str, Any]]]:
    """The animals seen at ``fidx``: ``(animal id, {camera name: chosen instance})``."""
    if fidx in s.instance_groups:
        out = []
        for name, members in s.instance_groups[fidx]:
            chosen = {}
            for cam in s.camera_names:
                if cam in members and cam in s.streams:
                    chosen[cam] = _user_for(members[cam], s.streams[cam].frames.get(fidx, []))
            out.append((name, chosen))
        return out
    per_cam = {cam: st.frames[fidx] for cam, st in s.streams.items() if fidx in st.frames}
    tracked = any(i.track is not None for insts in per_cam.values() for i in insts)
    if not tracked:
        chosen = {}
        for cam, insts in per_cam.items():
            pick = _select(insts, cam, "untracked")
            if pick is not None:
                chosen[cam] = pick
        return [("animal0", chosen)]
    names: list[str] = []
    for insts in per_cam.values():
        for i in insts:
            if i.track is None:
                report.untracked_ignored += 1
            elif i.track.name not in names:
                names.append(i.track.name)
    out = []
    for name in names:
        chosen = {}
        for cam, insts in per_cam.items():
            pick = _select([i for i in insts if i.track is not None and i.track.name == name], cam, name)
            if pick is not None:
                chosen[cam] = pick
        out.append((name, chosen))
    return out


def _is_predicted(inst: Any) -> bool:
    import sleap_io as sio

    return isinstance(inst, sio.PredictedInstance)


def _select(cands: list[Any], cam: str, animal: str) -> Any | None:
    """One instance per view and animal, user labels first; several is ambiguous."""
    users = [i for i in cands if not _is_predicted(i)]
    pool = users or cands
    if len(pool) > 1:
        kind = "user" if users else "predicted"
        raise _BadFrame(
            f"camera '{cam}' has {len(pool)} {kind} instances for animal '{animal}' "
            "(cannot tell animals apart: add tracks or instance groups)"
        )
    return pool[0] if pool else None


def _user_for(inst: Any, frame_instances: list[Any]) -> Any:
    """The user instance made from a predicted instance, if the frame has one."""
    if not _is_predicted(inst):
        return inst
    for other in frame_instances:
        if not _is_predicted(other) and other.from_predicted is inst:
            return other
    return inst


def _sample(
    s: SleapSession,
    fidx: int,
    animal: str,
    members: dict[str, Any],
    source_of: np.ndarray,
    points3d: np.ndarray | None,
    report: IngestReport,
) -> SampleRecord | None:
    from smil.geometry.camera import undistort_points

    mapped = source_of >= 0
    views: list[ViewRecord] = []
    und_by_cam: dict[str, np.ndarray] = {}
    n_user = 0
    for cam in s.camera_names:  # calibration order
        if cam not in members:
            continue
        st = s.streams[cam]
        _check_frame(st, fidx)
        inst = members[cam]
        xy = np.asarray(inst.numpy(invisible_as_nan=True), dtype=np.float64)
        if xy.shape != (len(s.node_names), 2):
            raise _BadFrame(
                f"camera '{cam}' instance has {xy.shape[0]} points, skeleton has {len(s.node_names)}"
            )
        xy[~np.isfinite(xy).all(axis=1)] = np.nan
        c = st.calibration
        und = undistort_points(xy, c.K, c.dist)
        kp = np.full((len(source_of), 2), np.nan)
        kp[mapped] = und[source_of[mapped]]
        vis = np.isfinite(kp).all(axis=1)
        if not vis.any():
            continue
        und_by_cam[cam] = und
        n_user += not _is_predicted(inst)
        views.append(
            ViewRecord(
                camera=cam,
                image={"video": str(st.video.path), "frame": int(fidx)},
                K=c.K,
                R=c.R,
                t=c.t,
                image_size=(int(c.image_size[0]), int(c.image_size[1])),
                keypoints2d=kp,
                visibility=vis.astype(np.float64),
                dist=np.asarray(c.dist, dtype=np.float64),
            )
        )
    if not views:
        return None
    report.views += len(views)
    report.user_views += n_user
    report.predicted_views += len(views) - n_user

    X = _points3d_row(s, points3d, fidx, animal)
    if X is None:
        X = _triangulate(s, und_by_cam)
    kp3 = np.full((len(source_of), 3), np.nan)
    kp3[mapped] = X[source_of[mapped]]
    return SampleRecord(
        sample_id=f"{s.name}/{fidx:06d}/{animal}",
        group=s.name,
        session=s.name,
        frame=int(fidx),
        views=views,
        keypoints3d=kp3 if np.isfinite(kp3).any() else None,
    )


def _check_frame(st: CameraStream, fidx: int) -> None:
    if fidx < 0 or (st.video.frame_count and fidx >= st.video.frame_count):
        raise _BadFrame(f"labels at frame {fidx} but video {st.video.path} has {st.video.frame_count} frames")


def _triangulate(s: SleapSession, und_by_cam: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from smil.geometry.triangulation import triangulate_dlt

    n = len(s.node_names)
    if len(und_by_cam) < 2:
        return np.full((n, 3), np.nan)
    cams = list(und_by_cam)
    pts = torch.as_tensor(np.stack([und_by_cam[c] for c in cams]), dtype=torch.float64)
    P = torch.as_tensor(
        np.stack([s.streams[c].calibration.projection_matrix() for c in cams]), dtype=torch.float64
    )
    return triangulate_dlt(pts, P).numpy()


def _load_points3d(s: SleapSession) -> np.ndarray | None:
    if s.points3d_path is None:
        return None
    path = s.points3d_path
    try:
        with h5py.File(path, "r") as f:
            if "tracks" not in f:
                raise DataError(
                    "missing (expected (frames, tracks, nodes, 3) array)", path=path, field="tracks"
                )
            arr = np.asarray(f["tracks"][()], dtype=np.float64)
    except OSError as exc:
        raise DataError(f"cannot read HDF5 ({exc})", path=path) from None
    if arr.ndim != 4 or arr.shape[2] != len(s.node_names) or arr.shape[3] != 3:
        raise DataError(
            f"expected shape (frames, tracks, {len(s.node_names)} nodes, 3), got {arr.shape}",
            path=path,
            field="tracks",
        )
    return arr


def _points3d_row(s: SleapSession, points3d: np.ndarray | None, fidx: int, animal: str) -> np.ndarray | None:
    if points3d is None or fidx >= points3d.shape[0]:
        return None
    if animal in s.track_names:
        k = s.track_names.index(animal)
    elif points3d.shape[1] == 1:
        k = 0
    else:
        return None
    if k >= points3d.shape[1]:
        raise DataError(
            f"has {points3d.shape[1]} track(s) but the labels have tracks {s.track_names}",
            path=s.points3d_path,
            field="tracks",
        )
    return points3d[fidx, k]


def _collect_errors(sample: SampleRecord, errors: dict[str, list[np.ndarray]]) -> None:
    """Pixel distance between the 3D keypoints projected into each view and its 2D keypoints."""
    if sample.keypoints3d is None:
        return
    for v in sample.views:
        xc = sample.keypoints3d @ v.R.T + v.t
        uv = xc @ v.K.T
        uv = uv[:, :2] / uv[:, 2:3]
        e = np.linalg.norm(uv - v.keypoints2d, axis=1)
        errors[v.camera].append(e[np.isfinite(e) & (v.visibility > 0)])


# --------------------------------------------------------------------------------------------
# CLI


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sleap`` under ``smil ingest``."""
    p = subparsers.add_parser(
        "sleap",
        help="SLEAP multi-camera session (folder or multi-view .slp) -> sample manifest",
        description=(
            "Read a sleap-anipose session folder (calibration.toml + one folder per camera) or a "
            "SLEAP .slp holding a RecordingSession, and write a sample manifest. Keypoints are "
            "undistorted; cameras are matched to the calibration by name."
        ),
    )
    p.add_argument("path", type=Path, help="session folder or multi-view .slp")
    p.add_argument("--out", type=Path, required=True, help="manifest.jsonl to write")
    p.add_argument("--calibration", type=Path, help="aniposelib TOML replacing the session's calibration")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--body-model", type=Path, help="SMIL model whose joint names are the targets")
    who.add_argument(
        "--joint-names-from-skeleton",
        action="store_true",
        help="use the SLEAP skeleton's node names as the joint names (no body model)",
    )
    p.add_argument("--joint-map", type=Path, help="CSV table source,joint (skeleton node -> joint)")
    p.add_argument(
        "--world-unit-m",
        type=float,
        help=f"metres per calibration unit (default {DEFAULT_WORLD_UNIT_M}: millimetres)",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip and count frames that cannot be used")
    p.add_argument(
        "--video-dir",
        type=Path,
        action="append",
        default=[],
        help="extra folder to find videos in (repeatable)",
    )
    p.add_argument("--session", help="session name / split group (default: folder name or .slp stem)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    joint_names = None
    sha = None
    if args.body_model is not None:
        from smil.body.model import SMILModel

        model = SMILModel.from_file(args.body_model)
        joint_names = list(model.joint_names)
        sha = model.sha256
    header, samples, report = ingest_sleap(
        args.path,
        joint_names=joint_names,
        joint_map=args.joint_map,
        calibration=args.calibration,
        world_unit_m=args.world_unit_m,
        skip_bad=args.skip_bad,
        video_dirs=tuple(args.video_dir),
        session_name=args.session,
        body_model_sha256=sha,
    )
    if not samples:
        raise DataError("no samples: no labeled animal has a visible mapped keypoint", path=args.path)
    write_manifest(args.out, header, samples)
    reproj = ", ".join(
        f"{k} {v:.1f}" if v is not None else f"{k} -" for k, v in report.reprojection_median_px.items()
    )
    print(
        f"wrote {report.samples} samples ({report.views} views: {report.user_views} user, "
        f"{report.predicted_views} predicted) to {args.out}; skipped {report.skipped_bad} bad frames; "
        f"median 3D reprojection px: {reproj}",
        file=sys.stderr,
    )
    return 0
