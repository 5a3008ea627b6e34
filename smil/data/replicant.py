"""``smil ingest replicant``: replicAnt (Unreal Engine) renders → a sample manifest.

``DIR`` is one replicAnt batch folder, or a folder whose sub-folders are batches (file layout:
:mod:`smil.data.replicant_format`; the user's view: ``docs/ingest-replicant.md``).

Conventions of what is written:

* **Cameras and world** are converted once, at ingest, from Unreal's left-handed centimetres
  (:mod:`smil.data.unreal`): right-handed world = Unreal with y flipped, unit centimetres
  (``world_unit_m = 0.01``); OpenCV ``K`` for the full source image and world→camera ``R, t``; pixel
  coordinates with the centre of the top-left pixel at ``(0, 0)`` (Unreal's ``2DPos`` − ½). A file
  whose converted camera does not reproduce its own ``2DPos`` (median > 1 px) is bad.
* **A sample is one subject in one render** (single-view; ``camera_names = ["cam"]``), or one subject
  at one frame across the ``CAM`` views of a multi-camera batch (``camera_names`` = the ``CAM{id}``
  names in numeric order; all views of a frame must show the same 3D keypoints). ``sample_id`` is the
  file stem (multi-view: ``{batch}_{frame}``), prefixed ``{batch folder}/`` when ``DIR`` holds several
  batches and suffixed ``#{subject id}`` when a render holds several subjects.
* **Split group** ``"{batch}:{frame}"`` by default (``group_by="sample"``): each replicAnt iteration is
  an independent random scene (camera, pose, background, lighting), so renders of one batch may go to
  different splits, while all views and subjects of one frame stay together. ``group_by="batch"``
  keeps a whole batch in one split. ``session`` = batch, ``frame`` = the number in the file name.
* **Keypoints** map onto the target joint names (:mod:`smil.data.joint_mapping`): the body model's,
  else the first file's keypoint names. Missing joints get NaN and visibility 0. Visibility is 1 for a
  point in front of the camera and inside the image, else 0 (behind the camera: NaN coordinates).
  replicAnt stores no occlusion; where an ``_ID.png`` mask exists, a point with no pixel of its subject
  within :data:`MASK_OCCLUSION_RADIUS_PX` is occluded (visibility 0) unless ``mask_occlusion=False``.
* **Masks**: ``{"path": the _ID.png, "value": subject id}`` (id = ``R + 256·G + 65536·B``).
* **Body parameters** (:mod:`smil.data.replicant_pose`): ``shape betas`` when a body model is given and
  the counts match; rotations only where verified by posing the body model.
* ``2DBounds`` is dropped (it equals the bounding box of the subject's ``2DPos``); so are the local
  ``eulerAngles``/``transform``/``quaternion`` (``globalRotation`` carries the same pose).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from smil.data.joint_mapping import build_joint_mapping
from smil.data.manifest import ManifestHeader, SampleRecord, ViewRecord, write_manifest
from smil.data.replicant_format import (  # noqa: F401  (re-exported: RawSample, load_raw_sample)
    MULTI_NAME,
    RawSample,
    ReplicantBatch,
    ReplicantFile,
    SubjectAnnotation,
    ViewAnnotation,
    discover_batches,
    get_field,
    load_json,
    load_raw_sample,
    project_points,
    read_annotation,
)
from smil.data.replicant_pose import BodyTargets, attach_betas, attach_rotations, read_body_targets
from smil.errors import DataError

__all__ = [
    "IngestReport",
    "RawSample",
    "add_cli",
    "discover_batches",
    "ingest_replicant",
    "load_raw_sample",
    "read_annotation",
]

WORLD_UNIT_M = 0.01  # Unreal centimetres
SINGLE_VIEW_CAMERA = "cam"
MASK_OCCLUSION_RADIUS_PX = 2
MULTI_VIEW_3D_TOLERANCE = 1e-3  # world units (cm) between the views of one frame
_MAX_REASONS = 20


@dataclass
class IngestReport:
    """Counts and diagnostics of one ingest (also stored in the manifest header's ``info``)."""

    files: int = 0
    samples: int = 0
    views: int = 0
    skipped_bad: int = 0
    bad_reasons: list[str] = field(default_factory=list)
    files_without_subjects: int = 0
    views_missing_joint: dict[str, int] = field(default_factory=dict)
    occluded_by_mask: int = 0
    camera_sources: dict[str, int] = field(default_factory=dict)
    reprojection_px: list[np.ndarray] = field(default_factory=list)
    betas: str = ""
    betas_stored: int = 0
    rotations: str = ""
    rotations_stored: int = 0

    def to_json(self) -> dict[str, Any]:
        err = np.concatenate(self.reprojection_px) if self.reprojection_px else np.zeros(0)
        return {
            "files": self.files,
            "samples": self.samples,
            "views": self.views,
            "skipped_bad": self.skipped_bad,
            "bad_reasons": self.bad_reasons,
            "files_without_subjects": self.files_without_subjects,
            "views_missing_joint": self.views_missing_joint,
            "keypoints_occluded_by_mask": self.occluded_by_mask,
            "camera_sources": self.camera_sources,
            "reprojection_px": {
                "median": float(np.median(err)) if err.size else None,
                "max": float(err.max()) if err.size else None,
            },
            "betas": self.betas,
            "samples_with_betas": self.betas_stored,
            "rotations": self.rotations,
            "samples_with_rotations": self.rotations_stored,
        }


class _Targets(NamedTuple):
    joint_names: list[str]
    joint_map: Path | None
    body: BodyTargets | None


def ingest_replicant(
    directory: str | Path,
    *,
    body_model: str | Path | None = None,
    joint_names: Sequence[str] | None = None,
    joint_map: str | Path | None = None,
    skip_bad: bool = False,
    group_by: str = "sample",
    mask_occlusion: bool = True,
) -> tuple[ManifestHeader, list[SampleRecord], IngestReport]:
    """Read the replicAnt batches under ``directory`` into manifest samples.

    Args:
        directory: a batch folder, or a folder of batch folders.
        body_model: SMIL model file: its joint names are the targets, its betas count decides whether
            ``shape betas`` are stored, and it is posed to verify joint rotations.
        joint_names: target joint names when there is no body model (default: the first file's
            keypoint names); no body parameters are stored then.
        joint_map: CSV table ``source,joint`` (:mod:`smil.data.joint_mapping`).
        skip_bad: skip (and count) bad files instead of failing on the first one.
        group_by: ``"sample"`` (one split group per frame) or ``"batch"``.
        mask_occlusion: use ``_ID.png`` masks to mark occluded keypoints invisible.
    """
    if group_by not in ("sample", "batch"):
        raise DataError(f"expected 'sample' or 'batch', got {group_by!r}", field="group_by")
    batches = discover_batches(directory)
    report = IngestReport()
    targets = _targets(batches, body_model, joint_names, joint_map, skip_bad)
    cache: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]] = {}
    collected: list[tuple[SampleRecord, SubjectAnnotation | None, np.ndarray | None]] = []
    camera_names: set[str] = set()
    for batch in batches:
        for bad in batch.bad_names:
            _bad(
                report,
                skip_bad,
                DataError(
                    "file name does not follow {batch}_{iteration}.json or {batch}_{frame}_CAM{id}.json",
                    path=bad,
                ),
            )
        for frame_files in _frames(batch):
            try:
                views = [(f, read_annotation(f.json_path, batch.resolution)) for f in frame_files]
                built = _frame_samples(
                    batch, views, targets, cache, group_by, mask_occlusion, len(batches) > 1, report
                )
            except DataError as exc:
                _bad(report, skip_bad, exc)
                continue
            report.files += len(frame_files)
            for f, ann in views:
                report.camera_sources[ann.camera_source] = report.camera_sources.get(ann.camera_source, 0) + 1
                report.reprojection_px.append(ann.self_reprojection_px)
                report.files_without_subjects += not ann.subjects
                camera_names.add(f.camera or SINGLE_VIEW_CAMERA)
            collected += built
    samples = [s for s, _, _ in collected]
    _body_parameters(collected, targets, report)
    report.samples = len(samples)
    report.views = sum(len(s.views) for s in samples)
    header = ManifestHeader(
        source_kind="replicant",
        joint_names=targets.joint_names,
        world_unit_m=WORLD_UNIT_M,
        camera_names=sorted(camera_names, key=_camera_order) or [SINGLE_VIEW_CAMERA],
        body_model_sha256=None if targets.body is None else targets.body.sha256,
        info={
            "source": str(Path(directory).resolve()),
            "batches": [_batch_info(b) for b in batches],
            "world_frame": "Unreal world with y flipped (right-handed: x forward, y left, z up), centimetres",
            "pixel_convention": "OpenCV: the centre of the top-left pixel is (0, 0) (Unreal 2DPos - 0.5)",
            "visibility": "1 = in front of the camera and inside the image"
            + (
                f", and a pixel of the subject within {MASK_OCCLUSION_RADIUS_PX} px where an _ID.png mask exists"
                if mask_occlusion
                else ""
            ),
            "group_by": group_by,
            "body_model": None if targets.body is None else str(targets.body.path),
            "joint_mapping": _mapping_info(cache, targets),
            "dropped": [
                "2DBounds (equals the bounding box of the subject's 2DPos)",
                "eulerAngles, transform, quaternion (local bone rotations; globalRotation carries the pose)",
            ],
            **report.to_json(),
        },
    )
    return header, samples, report


def _targets(
    batches: list[ReplicantBatch],
    body_model: str | Path | None,
    joint_names: Sequence[str] | None,
    joint_map: str | Path | None,
    skip_bad: bool,
) -> _Targets:
    jm = None if joint_map is None else Path(joint_map)
    body = None
    if body_model is not None:
        if joint_names is not None:
            raise DataError("give either a body model or joint names, not both", path=body_model)
        body = read_body_targets(body_model)
        names = body.joint_names
    elif joint_names is not None:
        names = [str(n) for n in joint_names]
    elif jm is not None:
        raise DataError("a joint map needs --body-model (its joint names are the map's targets)", path=jm)
    else:
        names = _first_keypoint_names(batches, skip_bad)
    if jm is not None:
        build_joint_mapping([], names, jm)  # check the table before reading any file
    return _Targets(names, jm, body)


def _first_keypoint_names(batches: list[ReplicantBatch], skip_bad: bool) -> list[str]:
    for batch in batches:
        for f in batch.files:
            try:
                subjects = get_field(
                    load_json(f.json_path), ("iterationData", "subject Data"), f.json_path, list
                )
            except DataError:
                if skip_bad:
                    continue
                raise
            for entry in subjects:
                for sub in entry.values() if isinstance(entry, dict) else ():
                    kps = sub.get("keypoints") if isinstance(sub, dict) else None
                    if isinstance(kps, dict) and kps:
                        return [str(k) for k in kps]
    raise DataError("no subject with keypoints in any annotation file", path=batches[0].folder)


def _body_parameters(
    collected: list[tuple[SampleRecord, SubjectAnnotation | None, np.ndarray | None]],
    targets: _Targets,
    report: IngestReport,
) -> None:
    if targets.body is None:
        report.betas = "not stored: no body model given to check the betas count against"
        report.rotations = "not stored: no body model given to verify them with"
        return
    report.betas_stored, report.betas = attach_betas(
        [(s, None if sub is None else sub.betas) for s, sub, _ in collected], targets.body.num_betas
    )
    quats = []
    for sample, sub, index in collected:
        q = None
        if (
            sub is not None
            and sub.global_quaternions is not None
            and index is not None
            and (index >= 0).all()
        ):
            q = sub.global_quaternions[index]
        quats.append((sample, q))
    report.rotations_stored, report.rotations = attach_rotations(quats, targets.body, len(collected))


def _mapping_info(
    cache: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]], targets: _Targets
) -> dict[str, Any]:
    if len(cache) == 1:
        return next(iter(cache.values()))[1]
    if not cache:
        return {"table": None if targets.joint_map is None else str(targets.joint_map)}
    return {
        "table": None if targets.joint_map is None else str(targets.joint_map),
        "missing_joints": sorted({j for _, info in cache.values() for j in info["missing_joints"]}),
        "per_keypoint_set": [info for _, info in cache.values()],
    }


def _frames(batch: ReplicantBatch) -> Iterator[list[ReplicantFile]]:
    if not batch.multi_camera:
        for f in sorted(batch.files, key=lambda f: (f.frame, f.json_path.name)):
            yield [f]
        return
    by_frame: dict[int, list[ReplicantFile]] = {}
    for f in batch.files:
        by_frame.setdefault(f.frame, []).append(f)
    for frame in sorted(by_frame):
        yield sorted(by_frame[frame], key=lambda f: _camera_order(f.camera or ""))


def _camera_order(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"CAM(\d+)", name)
    return (int(m[1]), name) if m else (-1, name)


def _frame_samples(
    batch: ReplicantBatch,
    views: list[tuple[ReplicantFile, ViewAnnotation]],
    targets: _Targets,
    cache: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]],
    group_by: str,
    mask_occlusion: bool,
    several_batches: bool,
    report: IngestReport,
) -> list[tuple[SampleRecord, SubjectAnnotation | None, np.ndarray | None]]:
    """One sample per subject seen in this frame's views: ``(sample, first annotation, its joint index)``."""
    first = views[0][0]
    subject_ids: list[str] = []
    for _, ann in views:
        subject_ids += [s.subject_id for s in ann.subjects if s.subject_id not in subject_ids]
    if batch.multi_camera:
        stem = f"{_batch_prefix(first.json_path.stem)}_{first.frame_text}"
    else:
        stem = first.json_path.stem
    if several_batches:
        stem = f"{batch.name}/{stem}"
    group = batch.name if group_by == "batch" else f"{batch.name}:{first.frame}"
    out = []
    for sid in subject_ids:
        records: list[ViewRecord] = []
        first_sub: tuple[SubjectAnnotation, np.ndarray] | None = None
        kp3d = None
        for f, ann in views:
            sub = next((s for s in ann.subjects if s.subject_id == sid), None)
            index = None
            if sub is not None:
                index = _mapping(sub.keypoint_names, targets, cache, report, ann.json_path)
                first_sub = first_sub or (sub, index)
                mapped3d = _take(sub.keypoints3d, index)
                if kp3d is None:
                    kp3d = mapped3d
                else:
                    _check_same_scene(kp3d, mapped3d, ann.json_path, views[0][1].json_path, sid)
            records.append(
                _view(
                    f.camera or SINGLE_VIEW_CAMERA,
                    ann,
                    sub,
                    index,
                    len(targets.joint_names),
                    mask_occlusion,
                    report,
                )
            )
        sample_id = stem if len(subject_ids) == 1 else f"{stem}#{sid}"
        sample = SampleRecord(
            sample_id=sample_id,
            group=group,
            views=records,
            keypoints3d=kp3d,
            params=None,
            session=batch.name,
            frame=first.frame,
        )
        out.append((sample, *(first_sub or (None, None))))
    return out


def _batch_prefix(stem: str) -> str:
    m = MULTI_NAME.match(stem)
    return m["batch"] if m else stem


def _mapping(
    names: list[str],
    targets: _Targets,
    cache: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]],
    report: IngestReport,
    path: Path,
) -> np.ndarray:
    key = tuple(names)
    if key not in cache:
        index, info = build_joint_mapping(names, targets.joint_names, targets.joint_map)
        if not (index >= 0).any():
            raise DataError(
                f"no keypoint maps to a body-model joint (keypoints {names[:5]}…; joints "
                f"{targets.joint_names[:5]}…); give a --joint-map table with columns source,joint",
                path=targets.joint_map if targets.joint_map is not None else path,
            )
        cache[key] = (index, info)
    index = cache[key][0]
    for j, i in zip(targets.joint_names, index, strict=True):
        if i < 0:
            report.views_missing_joint[j] = report.views_missing_joint.get(j, 0) + 1
    return index


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    out = np.full((len(index),) + values.shape[1:], np.nan)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


def _check_same_scene(a: np.ndarray, b: np.ndarray, path: Path, first: Path, sid: str) -> None:
    both = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if not both.any():
        return
    dev = float(np.abs(a[both] - b[both]).max())
    if dev > MULTI_VIEW_3D_TOLERANCE:
        raise DataError(
            f"subject {sid}'s 3DPos differ from {first.name} by up to {dev:.3g} cm; all views of one frame "
            "must show the same scene",
            path=path,
            field="3DPos",
        )


def _view(
    camera: str,
    ann: ViewAnnotation,
    sub: SubjectAnnotation | None,
    index: np.ndarray | None,
    num_joints: int,
    mask_occlusion: bool,
    report: IngestReport,
) -> ViewRecord:
    W, H = ann.image_size
    kp2d = np.full((num_joints, 2), np.nan)
    vis = np.zeros(num_joints)
    mask_ref = None
    if sub is not None and index is not None:
        kp2d = _take(sub.keypoints2d, index)
        kp3d = _take(sub.keypoints3d, index)
        ok = index >= 0
        _, z = project_points(np.where(ok[:, None], kp3d, 0.0), ann.K, ann.R, ann.t)
        front = ok & (z > 0)
        kp2d[~front] = np.nan
        with np.errstate(invalid="ignore"):
            inside = (
                front
                & (kp2d[:, 0] >= -0.5)
                & (kp2d[:, 0] <= W - 0.5)
                & (kp2d[:, 1] >= -0.5)
                & (kp2d[:, 1] <= H - 0.5)
            )
        vis = inside.astype(np.float64)
        if ann.mask_path is not None:
            mask_ref = {
                "path": str(ann.mask_path.resolve()),
                "value": _subject_value(sub.subject_id, ann.json_path),
            }
            if mask_occlusion:
                seen = _near_subject(mask_ref, kp2d, inside)
                report.occluded_by_mask += int((inside & ~seen).sum())
                vis = (inside & seen).astype(np.float64)
    return ViewRecord(
        camera=camera,
        image={"path": str(ann.image_path.resolve())},
        K=ann.K,
        R=ann.R,
        t=ann.t,
        image_size=ann.image_size,
        keypoints2d=kp2d,
        visibility=vis,
        mask=mask_ref,
    )


def _subject_value(sid: str, path: Path) -> int:
    try:
        return int(sid)
    except ValueError:
        raise DataError(
            f"subject id {sid!r} is not an integer, so it cannot select the subject in the _ID.png mask",
            path=path,
            field="iterationData.subject Data",
        ) from None


def _near_subject(mask_ref: dict[str, Any], kp2d: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """True where a pixel of the subject lies within :data:`MASK_OCCLUSION_RADIUS_PX` of the point."""
    import cv2

    from smil.data.images import load_mask

    mask = load_mask(mask_ref)
    r = MASK_OCCLUSION_RADIUS_PX
    near = cv2.dilate(mask, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    out = np.zeros(len(kp2d), dtype=bool)
    h, w = near.shape
    idx = np.flatnonzero(inside)
    if idx.size:
        ij = np.rint(kp2d[idx]).astype(np.int64)
        ij[:, 0] = ij[:, 0].clip(0, w - 1)
        ij[:, 1] = ij[:, 1].clip(0, h - 1)
        out[idx] = near[ij[:, 1], ij[:, 0]] > 0
    return out


def _bad(report: IngestReport, skip_bad: bool, exc: DataError) -> None:
    if not skip_bad:
        raise DataError(f"{exc.detail} (use --skip-bad to skip such files)", path=exc.path, field=exc.field)
    report.skipped_bad += 1
    if len(report.bad_reasons) < _MAX_REASONS:
        report.bad_reasons.append(str(exc))


def _batch_info(b: ReplicantBatch) -> dict[str, Any]:
    subjects = b.batch_data.get("Subject Variations")
    return {
        "name": b.name,
        "batch_name": b.batch_data.get("Name"),
        "folder": str(b.folder.resolve()),
        "layout": "multi-camera" if b.multi_camera else "single-camera",
        "image_resolution": None if b.resolution is None else list(b.resolution),
        "seed": b.batch_data.get("Seed"),
        "subject_variations": subjects if isinstance(subjects, dict) else None,
    }


# --------------------------------------------------------------------------------------------
# CLI


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``replicant`` under ``smil ingest``."""
    p = subparsers.add_parser(
        "replicant",
        help="replicAnt (Unreal Engine) renders -> sample manifest",
        description=(
            "Read replicAnt batches (a batch folder, or a folder of batch folders) and write a sample "
            "manifest. Unreal's left-handed centimetres become a right-handed world in centimetres "
            "(world_unit_m 0.01) and OpenCV cameras."
        ),
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="replicAnt batch folder (or a folder of them)")
    p.add_argument("--out", type=Path, required=True, help="manifest.jsonl to write")
    p.add_argument(
        "--body-model", type=Path, help="SMIL model file: target joint names, betas count, pose check"
    )
    p.add_argument(
        "--joint-map", type=Path, help="CSV table source,joint (replicAnt keypoint -> model joint)"
    )
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad files instead of failing")
    p.add_argument(
        "--group-by",
        choices=("sample", "batch"),
        default="sample",
        help="split group: one per frame (default) or one per batch",
    )
    p.add_argument(
        "--no-mask-occlusion",
        dest="mask_occlusion",
        action="store_false",
        help="do not use _ID.png masks to mark occluded keypoints invisible",
    )
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    header, samples, report = ingest_replicant(
        args.directory,
        body_model=args.body_model,
        joint_map=args.joint_map,
        skip_bad=args.skip_bad,
        group_by=args.group_by,
        mask_occlusion=args.mask_occlusion,
    )
    if not samples:
        raise DataError("no samples: no annotation file holds a usable subject", path=args.directory)
    write_manifest(args.out, header, samples)
    reproj = {k: "-" if v is None else f"{v:.3f}" for k, v in header.info["reprojection_px"].items()}
    missing = len(report.views_missing_joint)
    print(
        f"wrote {report.samples} samples ({report.views} views) from {report.files} files to {args.out}; "
        f"skipped {report.skipped_bad} bad files; {missing} of {len(header.joint_names)} joints missing "
        f"somewhere; reprojection median {reproj['median']} px, max {reproj['max']} px; "
        f"betas for {report.betas_stored}, rotations for {report.rotations_stored} of {report.samples} samples"
    )
    return 0
