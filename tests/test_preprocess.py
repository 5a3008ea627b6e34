"""smil.data.preprocess: manifest → dataset.h5 on synthetic images with exactly known cameras."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pytest

from smil.data import schema as S
from smil.data.images import decode_image, encode_png_mask
from smil.data.manifest import (
    ManifestHeader, SampleRecord, ViewRecord, iter_manifest, read_manifest_header, write_manifest,
)
from smil.data import preprocess as P
from smil.data.preprocess import SUMMARY_NAME, WRITE_BLOCK, PreprocessSettings, SampleProcessor, preprocess
from smil.data.store import open_dataset
from smil.errors import ConfigError, DataError

RED = (255, 0, 0)  # RGB


def look_at(eye: np.ndarray, target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world→camera (R, t) for a camera at ``eye`` looking at ``target``, world +z up."""
    target = np.zeros(3) if target is None else target
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def project(X: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    uv = (X @ R.T + t) @ K.T
    return uv[:, :2] / uv[:, 2:3]


def make_manifest(
    folder: Path,
    *,
    num_samples: int = 6,
    num_views: int = 1,
    num_joints: int = 6,
    size: tuple[int, int] = (320, 240),
    focal: float = 300.0,
    dist: np.ndarray | None = None,
    masks: bool = False,
    red: bool = False,
    fmt: str = "jpg",
    drop_views: dict[int, list[int]] | None = None,
    group_of: Any = None,
    params: bool = True,
    video: bool = False,
    spread: float = 0.25,
    dot_radius: int = 2,
) -> Path:
    """Write a manifest of random 3D keypoints seen by ``num_views`` ring cameras.

    Each keypoint is a small white dot on a dark background (optionally inside a pure red disc);
    with ``dist`` the dots are drawn at their *distorted* positions while the manifest keeps the
    undistorted keypoints (the ingest contract). Returns the manifest path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    W, H = size
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1.0]])
    cams = [look_at(np.array([3 * np.cos(a), 3 * np.sin(a), 1.0]))
            for a in np.linspace(0, 2 * np.pi, num_views, endpoint=False)]
    names = [f"j{i}" for i in range(num_joints)]
    camera_names = [f"cam{v}" for v in range(num_views)]
    writers: dict[int, cv2.VideoWriter] = {}
    samples = []
    for n in range(num_samples):
        X = rng.normal(scale=spread, size=(num_joints, 3))
        views = []
        for v, (R, t) in enumerate(cams):
            if v in (drop_views or {}).get(n, []):
                continue
            uv = project(X, K, R, t)
            drawn = uv
            if dist is not None:
                rvec, _ = cv2.Rodrigues(R)
                drawn = cv2.projectPoints(X, rvec, t, K, dist)[0].reshape(-1, 2)
            img = np.full((H, W, 3), 30, np.uint8)
            mask = np.zeros((H, W), np.uint8)
            centre = tuple(int(c) for c in np.round(drawn.mean(0)))
            if red:
                cv2.circle(img, centre, 40, RED, -1)
            cv2.circle(mask, centre, 40, 255, -1)
            for x, y in drawn:
                cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), dot_radius * 16, (255, 255, 255), -1,
                           lineType=cv2.LINE_AA, shift=4)
            stem = f"s{n}_v{v}"
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            if video:
                if v not in writers:
                    writers[v] = cv2.VideoWriter(str(folder / f"cam{v}.avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                                                 10, (W, H))
                writers[v].write(bgr)
                image_ref: dict[str, Any] = {"video": f"cam{v}.avi", "frame": n}
            else:
                cv2.imwrite(str(folder / f"{stem}.{fmt}"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])
                image_ref = {"path": f"{stem}.{fmt}"}
            mask_ref = None
            if masks:
                ids = np.zeros((H, W), np.uint8)
                ids[mask > 0] = 3
                cv2.imwrite(str(folder / f"{stem}_ID.png"), ids)
                mask_ref = {"path": f"{stem}_ID.png", "value": 3}
            views.append(ViewRecord(camera=camera_names[v], image=image_ref, K=K, R=R, t=t, image_size=(W, H),
                                    keypoints2d=uv, visibility=np.ones(num_joints), mask=mask_ref, dist=dist))
        group = f"g{n}" if group_of is None else group_of(n)
        prm = {"betas": rng.normal(size=4), "trans": X.mean(0)} if params else None
        samples.append(SampleRecord(sample_id=f"s{n}", group=group, views=views, keypoints3d=X, params=prm,
                                    session="sess", frame=n))
    for w in writers.values():
        w.release()
    header = ManifestHeader(source_kind="synthetic", joint_names=names, world_unit_m=0.01,
                            camera_names=camera_names)
    path = folder / "manifest.jsonl"
    write_manifest(path, header, samples)
    return path


def rewrite_sample(manifest: Path, index: int, change: Any) -> None:
    """Apply ``change(obj)`` to the JSON of sample ``index`` (0-based) in place."""
    lines = manifest.read_text().splitlines()
    obj = json.loads(lines[index + 1])
    change(obj)
    lines[index + 1] = json.dumps(obj)
    manifest.write_text("\n".join(lines) + "\n")


def dot_centroid(image: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    """Intensity-weighted centroid of the bright pixels within ``radius`` of ``near``."""
    gray = image.astype(np.float64).mean(axis=2)
    x0, y0 = int(round(near[0])), int(round(near[1]))
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    patch = gray[ys, xs]
    w = np.clip(patch - 100, 0, None)
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def isolated(kp: np.ndarray, size: int, min_dist: float = 16, margin: int = 10) -> np.ndarray:
    """Keypoints inside the image and far from every other keypoint (their dots do not merge)."""
    d = np.linalg.norm(kp[:, None] - kp[None], axis=-1) + np.eye(len(kp)) * 1e9
    inside = (kp > margin).all(1) & (kp < size - margin).all(1)
    return inside & (d.min(1) > min_dist)


def check_dots(path: Path, tol: float) -> int:
    """Every isolated stored keypoint sits on its dot in the stored image; returns how many were checked."""
    checked = 0
    with open_dataset(path) as ds:
        for i in range(len(ds)):
            s = ds.get_sample(i)
            for v in np.flatnonzero(s["view_valid"]):
                kp = s["keypoints2d"][v]
                for j in np.flatnonzero(isolated(kp, ds.image_size[0])):
                    err = np.linalg.norm(dot_centroid(s["images"][v], kp[j]) - kp[j])
                    assert err < tol, f"sample {i} view {v} joint {j}: dot {err:.2f} px from its keypoint"
                    checked += 1
    return checked


# --- tests ------------------------------------------------------------------------------------


def test_dataset_matches_manifest_geometry(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=5, num_views=2)
    out = tmp_path / "out" / "dataset.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=64), progress=False)
    assert summary["samples_written"] == 5
    with open_dataset(out) as ds:
        assert (len(ds), ds.num_views, ds.num_joints, ds.image_size) == (5, 2, 6, (64, 64))
        assert ds.camera_names == ["cam0", "cam1"]
        for i in range(len(ds)):
            s = ds.get_sample(i)
            assert s["images"].shape == (2, 64, 64, 3)
            for v in range(2):
                # projecting the 3D keypoints with the stored camera gives the stored 2D keypoints
                np.testing.assert_allclose(project(s["keypoints3d"].astype(np.float64), s["K"][v].astype(np.float64),
                                                   s["R"][v].astype(np.float64), s["t"][v].astype(np.float64)),
                                           s["keypoints2d"][v], atol=2e-3)
        assert set(ds.param_names) == {"betas", "trans"}
        assert ds.preprocess_settings["manifest"] == "manifest.jsonl"
        assert ds.preprocess_settings["image_size"] == 64


def test_keypoints_land_on_the_drawn_dots(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=4, size=(320, 240))
    out = tmp_path / "d.h5"
    preprocess(manifest, out, PreprocessSettings(image_size=96, padding=1.3), progress=False)
    assert check_dots(out, tol=0.6) >= 8


def test_reduced_jpeg_decoding_keeps_keypoints_aligned(tmp_path: Path) -> None:
    # a large image with a large animal: the crop is >= 4x the stored size, so JPEG decodes at 1/4
    manifest = make_manifest(tmp_path / "m", num_samples=4, size=(1600, 1200), focal=1500, spread=0.3, dot_radius=20)
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=128, padding=1.3), progress=False)
    assert set(summary["decode_reduction"]) - {"1"}, summary["decode_reduction"]
    assert check_dots(out, tol=0.6) >= 6
    # the same run with full decoding gives nearly the same images
    full = tmp_path / "full.h5"
    preprocess(manifest, full, PreprocessSettings(image_size=128, padding=1.3, reduced_decode=False), progress=False)
    with open_dataset(out) as a, open_dataset(full) as b:
        for i in range(len(a)):
            sa, sb = a.get_sample(i), b.get_sample(i)
            # the crop box rounds to whole reduced pixels: below a pixel of the stored image
            np.testing.assert_allclose(sa["K"], sb["K"], rtol=5e-3, atol=1.0)
            diff = np.abs(sa["images"].astype(int) - sb["images"].astype(int)).mean()
            assert diff < 4, diff


def test_red_stays_red(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=2, red=True, fmt="png")
    out = tmp_path / "d.h5"
    preprocess(manifest, out, PreprocessSettings(image_size=64, padding=2.0), progress=False)
    with h5py.File(out, "r") as f:
        raw = f[S.IMAGES][0, 0]
    img = decode_image(raw)  # the documented way: JPEG bytes decode to RGB
    with open_dataset(out) as ds:
        via_reader = ds.get_sample(0)["images"][0]
        kp = ds.get_sample(0)["keypoints2d"][0]
    # a pixel of the red disc away from the white dots
    ys, xs = np.mgrid[0:64, 0:64]
    far = np.min(np.hypot(xs[..., None] - kp[:, 0], ys[..., None] - kp[:, 1]), axis=-1) > 6
    centre = kp.mean(0)
    disc = np.hypot(xs - centre[0], ys - centre[1]) < 12
    sel = far & disc
    assert sel.sum() > 10
    for im in (img, via_reader):
        r, g, b = (im[..., c][sel].mean() for c in range(3))
        assert r > 220 and g < 40 and b < 40, (r, g, b)


def test_undistorts_pixels_to_match_undistorted_keypoints(tmp_path: Path) -> None:
    dist = np.array([-0.25, 0.08, 0.0, 0.0, 0.0])
    manifest = make_manifest(tmp_path / "m", num_samples=3, size=(320, 240), dist=dist, spread=0.35)
    out = tmp_path / "d.h5"
    preprocess(manifest, out, PreprocessSettings(image_size=128, padding=1.3), progress=False)
    assert check_dots(out, tol=0.8) >= 6


def test_masks_follow_the_crop(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=3, masks=True, red=True, fmt="png")
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=64, padding=1.5), progress=False)
    assert summary["masks_written"] == 3
    with open_dataset(out) as ds:
        s = ds.get_sample(0)
        assert s["has_mask"].all()
        mask, img = s["masks"][0], s["images"][0]
        assert set(np.unique(mask)) <= {0, 255}
        kernel = np.ones((5, 5), np.uint8)
        inside, outside = cv2.erode(mask, kernel) > 0, cv2.dilate(mask, kernel) == 0
        assert inside.sum() > 100 and outside.sum() > 100
        # the mask is the red disc (dots drawn on top are white, so compare the red channel)
        assert (img[..., 0][inside] > 200).mean() > 0.98
        assert (img[..., 0][outside] < 60).mean() > 0.98


@pytest.mark.parametrize("border", ["pad", "shift"])
def test_one_bit_masks_give_the_same_crops_as_id_images(tmp_path: Path, border: str) -> None:
    """``smil synth``'s 1-bit PNG masks stay packed in preprocessing (only the crop's rows are
    unpacked); the stored masks equal those cut from the same masks given as 8-bit id images, also
    where the crop runs over the image border."""
    manifest = make_manifest(tmp_path / "m", num_samples=6, masks=True, spread=0.6)
    packed = tmp_path / "m" / "packed.jsonl"
    with open(manifest, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for i in range(1, len(lines)):
        obj = json.loads(lines[i])
        ref = obj["views"][0]["mask"]
        ids = cv2.imread(str(tmp_path / "m" / ref["path"]), cv2.IMREAD_UNCHANGED)
        ref["path"] = ref["path"].replace("_ID.png", "_bits.png")
        ref["value"] = 255
        (tmp_path / "m" / ref["path"]).write_bytes(encode_png_mask(np.where(ids == 3, 255, 0).astype(np.uint8)))
        lines[i] = json.dumps(obj)
    packed.write_text("\n".join(lines) + "\n")
    settings = PreprocessSettings(image_size=40, padding=2.5, border=border)
    preprocess(manifest, tmp_path / "ids.h5", settings, progress=False)
    preprocess(packed, tmp_path / "bits.h5", settings, progress=False)
    with h5py.File(tmp_path / "ids.h5", "r") as a, h5py.File(tmp_path / "bits.h5", "r") as b:
        assert np.array_equal(a[S.K][()], b[S.K][()])  # the same crops
        for x, y in zip(a[S.MASKS][:, 0], b[S.MASKS][:, 0]):
            mx, my = (cv2.imdecode(np.asarray(m), cv2.IMREAD_UNCHANGED) for m in (x, y))
            assert mx.any() and np.array_equal(mx, my)
    # the case where the unpacked rows are clipped: some crops run over the top or bottom edge
    proc = SampleProcessor(packed, read_manifest_header(packed), settings)
    boxes = [proc.crop_plan(r.views[0], r.keypoints3d, proc.view_mask(r.views[0]), jpeg=True).box
             for r in iter_manifest(packed)]
    assert any(b.y0 < 0 or b.y0 + b.size > 240 for b in boxes) or border == "shift"


def test_multiview_pads_missing_views(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=4, num_views=3, drop_views={1: [2], 3: [0, 1]})
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=48), progress=False)
    assert summary["views_padded"] == 3
    with open_dataset(out) as ds:
        assert ds.view_valid.tolist() == [[True] * 3, [True, True, False], [True] * 3, [False, False, True]]
        s = ds.get_sample(3)
        assert not s["images"][:2].any() and s["images"][2].any()
        assert np.isnan(s["keypoints2d"][:2]).all() and (s["visibility"][:2] == 0).all()
        with h5py.File(out, "r") as f:
            assert len(f[S.IMAGES][3, 0]) == 0 and len(f[S.IMAGES][3, 2]) > 0


def test_video_frames_in_any_order(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=5, video=True, size=(320, 240))
    # read frames out of order: reverse the samples
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=96, padding=1.3), progress=False)
    with open_dataset(out) as ds:
        assert list(ds.sample_id) == ["s4", "s3", "s2", "s1", "s0"]
    assert check_dots(out, tol=1.0) >= 8
    # automatic threads read videos in one thread (threads taking turns would each seek); asked for, more
    assert summary["settings"]["threads"] == 1
    again = preprocess(manifest, tmp_path / "e.h5", PreprocessSettings(image_size=96, padding=1.3, threads=2),
                       progress=False)
    assert again["settings"]["threads"] == 2
    forked = preprocess(manifest, tmp_path / "f.h5", PreprocessSettings(image_size=96, padding=1.3, workers=2),
                        progress=False)
    assert forked["settings"]["workers"] == 2
    with h5py.File(out, "r") as a, h5py.File(tmp_path / "e.h5", "r") as b, h5py.File(tmp_path / "f.h5", "r") as c:
        assert all(bytes(x) == bytes(y) == bytes(z) for x, y, z in zip(a[S.IMAGES][:, 0], b[S.IMAGES][:, 0],
                                                                       c[S.IMAGES][:, 0]))


def test_splits_keep_groups_together(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=30, num_joints=3, group_of=lambda n: f"g{n // 3}")
    out = tmp_path / "d.h5"
    preprocess(manifest, out, PreprocessSettings(image_size=32, seed=3), progress=False)
    with open_dataset(out) as ds:
        for g in set(ds.group):
            assert len(set(ds.split[ds.group == g])) == 1
        sizes = ds.split_sizes()
        assert all(n > 0 for n in sizes.values())
        assert ds.split_seed == 3


@pytest.mark.parametrize("parallel", [{"workers": 2}, {"workers": 3}, {"workers": 1, "threads": 3}],
                         ids=["2 workers", "3 workers", "threads"])
def test_parallel_preprocessing_gives_identical_output(tmp_path: Path, parallel: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "PROCESS_CHUNK", 4)  # several chunks per worker process
    manifest = make_manifest(tmp_path / "m", num_samples=29, num_joints=4, masks=True)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    s1 = preprocess(manifest, one, PreprocessSettings(image_size=48, workers=1, threads=1), progress=False)
    interval = sys.getswitchinterval()
    s2 = preprocess(manifest, two, PreprocessSettings(image_size=48, **parallel), progress=False)
    assert sys.getswitchinterval() == interval  # the caller's GIL switch interval is restored
    assert (s2["settings"]["workers"], s2["settings"]["threads"]) == (parallel["workers"], parallel.get("threads", 1))
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for name in (S.K, S.R, S.T, S.KEYPOINTS2D, S.VISIBILITY, S.KEYPOINTS3D, S.SPLIT, S.SAMPLE_ID, S.FRAME,
                     S.param_path("betas"), S.VIEW_VALID, S.HAS_MASK):
            assert np.array_equal(a[name][:], b[name][:], equal_nan=a[name].dtype.kind == "f"), name
        assert all(bytes(x) == bytes(y) for x, y in zip(a[S.IMAGES][:, 0], b[S.IMAGES][:, 0]))
        assert all(bytes(x) == bytes(y) for x, y in zip(a[S.MASKS][:, 0], b[S.MASKS][:, 0]))
        assert a.attrs[S.ATTR_PREPROCESS_SETTINGS] == b.attrs[S.ATTR_PREPROCESS_SETTINGS]
    assert s1["samples_written"] == s2["samples_written"] == 29
    assert s1["views_written"] == s2["views_written"] and s1["masks_written"] == s2["masks_written"]


@pytest.mark.parametrize("parallel", [{"workers": 1, "threads": 3}, {"workers": 2}], ids=["threads", "workers"])
def test_parallel_runs_report_the_first_bad_line_in_manifest_order(tmp_path: Path, parallel: dict,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "PROCESS_CHUNK", 1)  # bad lines 2 and 4 go to different worker processes
    manifest = _bad_manifest(tmp_path)
    with pytest.raises(DataError) as one:
        preprocess(manifest, tmp_path / "a.h5", PreprocessSettings(image_size=32, workers=1, threads=1),
                   progress=False)
    with pytest.raises(DataError) as many:
        preprocess(manifest, tmp_path / "b.h5", PreprocessSettings(image_size=32, **parallel), progress=False)
    assert str(one.value) == str(many.value) and "s1_v0.jpg" in str(many.value)
    assert not (tmp_path / "b.h5").exists()
    summary = preprocess(manifest, tmp_path / "c.h5", PreprocessSettings(image_size=32, skip_bad=True, **parallel),
                         progress=False)
    assert summary["samples_skipped"] == 3 and summary["samples_written"] == 3
    assert summary["skipped_by_reason"] == {"bad image": 1, "image not found": 1, "no keypoints": 1}
    # a malformed line raises in the worker; the parent raises the same error, with its file and field
    rewrite_sample(manifest, 2, lambda o: o.update(keypoints3d=[[0.0, 1.0]]))
    with pytest.raises(DataError, match=r"manifest.jsonl:4: field 'keypoints3d'") as err:
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, skip_bad=True, **parallel),
                   progress=False)
    assert err.value.field == "keypoints3d"


def test_a_worker_process_that_dies_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=6)
    process_line = P.SampleProcessor.process_line

    def dies_on_line_5(self: P.SampleProcessor, line: int, text: str) -> Any:
        if line == 5:
            os._exit(3)  # as a crash in native code would end the process
        return process_line(self, line, text)

    monkeypatch.setattr(P.SampleProcessor, "process_line", dies_on_line_5)
    monkeypatch.setattr(P, "PROCESS_CHUNK", 2)
    with pytest.raises(DataError, match=r"worker process smil-preprocess-1 stopped unexpectedly \(exit code 3\)"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, workers=2), progress=False)
    assert not (tmp_path / "d.h5").exists()


def test_parallelism_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not both"):
        PreprocessSettings(workers=2, threads=2)
    assert PreprocessSettings(workers=2).plan_parallelism() == (2, 1)
    assert PreprocessSettings(workers=1, threads=3).plan_parallelism() == (1, 3)
    assert PreprocessSettings(threads=3).plan_parallelism() == (1, 3)  # threads asked for: no processes
    assert PreprocessSettings().plan_parallelism(videos=True) == (1, 1)  # one reader per video
    cpus = min(4, P.available_cpus())
    want = (cpus, 1) if cpus > 1 and sys.platform.startswith("linux") else (1, cpus)
    assert PreprocessSettings().plan_parallelism() == want
    assert PreprocessSettings(workers=1).plan_parallelism() == (1, cpus)
    monkeypatch.setattr(P, "_CAN_FORK", False)  # elsewhere than Linux: threads, and asking for workers is an error
    assert PreprocessSettings().plan_parallelism() == (1, cpus)
    with pytest.raises(ConfigError, match="needs Linux"):
        PreprocessSettings(workers=2).plan_parallelism()


def test_summary_is_written_beside_the_output(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=3)
    out = tmp_path / "out" / "dataset.h5"
    preprocess(manifest, out, PreprocessSettings(image_size=32), progress=False)
    summary = json.loads((out.parent / SUMMARY_NAME).read_text())
    assert summary["samples_written"] == 3 and summary["samples_skipped"] == 0
    assert summary["settings"]["image_size"] == 32


# --- bad input --------------------------------------------------------------------------------


def _bad_manifest(tmp_path: Path) -> Path:
    """Six samples: 1 has a missing image, 3 a corrupt JPEG, 4 only NaN keypoints."""
    manifest = make_manifest(tmp_path / "m", num_samples=6)
    (tmp_path / "m" / "s1_v0.jpg").unlink()
    (tmp_path / "m" / "s3_v0.jpg").write_bytes(b"\xff\xd8 this is not really a JPEG")

    def nan_keypoints(obj: dict[str, Any]) -> None:
        obj["keypoints3d"] = None
        for v in obj["views"]:
            v["keypoints2d"] = [[None, None]] * len(v["keypoints2d"])

    rewrite_sample(manifest, 4, nan_keypoints)
    return manifest


def test_first_bad_sample_fails_with_one_clear_message(tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    out = tmp_path / "d.h5"
    with pytest.raises(DataError) as err:
        preprocess(manifest, out, PreprocessSettings(image_size=32), progress=False)
    msg = str(err.value)
    assert "s1_v0.jpg" in msg and "not found" in msg and "manifest.jsonl:3" in msg and "--skip-bad" in msg
    assert not out.exists()
    assert not list(tmp_path.glob(".d.h5*")), "temporary file left behind"


@pytest.mark.parametrize(
    ("index", "words"),
    [(3, ["s3_v0.jpg", "cannot decode"]), (4, ["keypoint", "NaN", "manifest.jsonl:3", "s4"])],
)
def test_corrupt_jpeg_and_nan_keypoints_are_named(tmp_path: Path, index: int, words: list[str]) -> None:
    manifest = _bad_manifest(tmp_path)
    lines = manifest.read_text().splitlines()
    keep = [lines[0], *[ln for k, ln in enumerate(lines[1:]) if k in (0, index)]]
    manifest.write_text("\n".join(keep) + "\n")
    with pytest.raises(DataError) as err:
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32), progress=False)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_skip_bad_counts_and_skips(tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=32, skip_bad=True), progress=False)
    assert summary["samples_written"] == 3 and summary["samples_skipped"] == 3
    assert summary["skipped_by_reason"] == {"bad image": 1, "image not found": 1, "no keypoints": 1}
    assert [s["sample_id"] for s in summary["skipped"]] == ["s1", "s3", "s4"]
    with open_dataset(out) as ds:
        assert list(ds.sample_id) == ["s0", "s2", "s5"]
    on_disk = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert on_disk["skipped_by_reason"] == summary["skipped_by_reason"]


def test_failure_midway_keeps_the_previous_output(tmp_path: Path) -> None:
    good = make_manifest(tmp_path / "good", num_samples=3)
    out = tmp_path / "d.h5"
    preprocess(good, out, PreprocessSettings(image_size=32), progress=False)
    before = out.read_bytes()
    bad = make_manifest(tmp_path / "bad", num_samples=WRITE_BLOCK + 20, num_joints=3)  # a block written first
    (tmp_path / "bad" / f"s{WRITE_BLOCK + 10}_v0.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"s{WRITE_BLOCK + 10}_v0.jpg"):
        preprocess(bad, out, PreprocessSettings(image_size=32), progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "d.h5", "good", SUMMARY_NAME]


def test_image_size_mismatch_is_bad(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=2)
    rewrite_sample(manifest, 1, lambda o: o["views"][0].update(image_size=[640, 480]))
    with pytest.raises(DataError, match="320×240 but the manifest says 640×480"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32), progress=False)


def test_unknown_camera_is_a_manifest_error(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=2)
    rewrite_sample(manifest, 0, lambda o: o["views"][0].update(camera="side"))
    with pytest.raises(DataError, match="camera 'side' is not one of"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, skip_bad=True), progress=False)


def test_everything_bad_is_an_error(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=2)
    for p in (tmp_path / "m").glob("*.jpg"):
        p.unlink()
    with pytest.raises(DataError, match="no sample could be preprocessed"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, skip_bad=True), progress=False)
    assert not (tmp_path / "d.h5").exists()


def test_manifest_contract_errors_name_the_line(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=3)
    rewrite_sample(manifest, 1, lambda o: o["params"].update(trans=[1.0, 2.0]))
    with pytest.raises(DataError, match=r"manifest.jsonl:3: field 'params.trans'"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, skip_bad=True), progress=False)
    manifest = make_manifest(tmp_path / "n", num_samples=3)
    rewrite_sample(manifest, 2, lambda o: o.update(sample_id="s0"))
    with pytest.raises(DataError, match=r"manifest.jsonl:4: field 'sample_id': sample_id 's0' appears twice"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32), progress=False)
    assert not (tmp_path / "d.h5").exists()


def test_manifest_numbers_keep_float32_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    K = np.diag(rng.uniform(100, 2000, 3)) + np.triu(rng.normal(size=(3, 3)), 1)
    R, t = look_at(rng.normal(size=3) * 50)
    kp = rng.normal(size=(7, 2)) * 10 ** rng.uniform(-6, 3, size=(7, 1))
    kp[2] = np.nan  # missing stays missing
    view = ViewRecord(camera="cam0", image={"path": "a.jpg"}, K=K, R=R, t=t, image_size=(64, 48),
                      keypoints2d=kp, visibility=np.ones(7))
    header = ManifestHeader(source_kind="synthetic", joint_names=[f"j{i}" for i in range(7)], world_unit_m=0.01,
                            camera_names=["cam0"])
    path = tmp_path / "m.jsonl"
    write_manifest(path, header, [SampleRecord(sample_id="s", group="g", views=[view])])
    (back,) = iter_manifest(path)
    for name, a, b in (("K", K, back.views[0].K), ("R", R, back.views[0].R), ("kp", kp, back.views[0].keypoints2d)):
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        ok = ~np.isnan(a)
        # at most 5e-9 relative: a sixth of float32's own rounding step, and datasets store float32
        np.testing.assert_allclose(b[ok], a[ok], rtol=5e-9, atol=0, err_msg=name)
        assert np.abs(b[ok] - a[ok]).max() > 0, "numbers were not rounded"
    digits = [len((a + b).lstrip("0")) for a, b in re.findall(r"(\d+)\.(\d+)", path.read_text())]
    assert len(digits) > 30 and max(digits) <= 9  # no 17-digit floats


def test_per_joint_body_parameters_are_packed_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    J = 9
    params = {"joint_rot": rng.normal(size=(J - 1, 3)) / 7, "log_beta_scales": rng.normal(size=(J, 3)),
              "betas": rng.normal(size=5), "scale": np.float64(1 / 3)}
    params["log_beta_scales"][2] = np.nan  # missing stays missing
    view = ViewRecord(camera="cam0", image={"path": "a.jpg"}, K=np.eye(3), R=np.eye(3), t=np.zeros(3),
                      image_size=(64, 48), keypoints2d=rng.normal(size=(J, 2)), visibility=np.ones(J))
    header = ManifestHeader(source_kind="synthetic", joint_names=[f"j{i}" for i in range(J)], world_unit_m=0.01,
                            camera_names=["cam0"])
    path = tmp_path / "m.jsonl"
    write_manifest(path, header, [SampleRecord(sample_id="s", group="g", views=[view], params=params)])
    line = json.loads(path.read_text().splitlines()[1])
    assert set(line["params"]["joint_rot"]) == {"dtype", "shape", "base64"}  # per-joint: packed
    assert isinstance(line["params"]["betas"], list) and isinstance(line["views"][0]["keypoints2d"], list)
    (back,) = iter_manifest(path)
    for name, value in params.items():  # packed values are exact; lists keep 9 significant digits
        np.testing.assert_allclose(back.params[name], value, rtol=0 if np.size(value) > 16 else 5e-9, atol=0)
    back.params["joint_rot"][0, 0] = 1.0  # arrays read from packed values are ordinary writable arrays
    # version 1 manifests (before packed arrays) still read
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"version": 2', '"version": 1')
    line["params"]["joint_rot"] = params["joint_rot"].tolist()
    path.write_text("\n".join([lines[0], json.dumps(line)]) + "\n")
    (old,) = iter_manifest(path)
    np.testing.assert_array_equal(old.params["joint_rot"], params["joint_rot"])


def test_manifest_lines_from_other_writers(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", num_samples=2)
    # Python's json writes NaN literals; the reader still takes them (as missing keypoints)
    rewrite_sample(manifest, 0, lambda o: o["views"][0]["keypoints2d"].__setitem__(0, [float("nan")] * 2))
    assert "NaN" in manifest.read_text()
    (first, _) = iter_manifest(manifest)
    assert np.isnan(first.views[0].keypoints2d[0]).all() and not np.isnan(first.views[0].keypoints2d[1:]).any()
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], "[1, 2]", lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl:2: expected a JSON object, got list"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32), progress=False)
    manifest.write_text("\n".join([lines[0], lines[1][:-9], lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl:2: not JSON"):
        preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32), progress=False)
    manifest.write_bytes("\n".join([lines[0], lines[1], ""]).encode() + b'{"sample_id": "\xff"}\n')
    for parallel in ({"workers": 1}, {"workers": 2}):
        with pytest.raises(DataError, match=r"manifest.jsonl:3: not UTF-8 text"):
            preprocess(manifest, tmp_path / "d.h5", PreprocessSettings(image_size=32, **parallel), progress=False)


def test_real_replicant_renders_with_masks(tmp_path: Path, fixtures_dir: Path) -> None:
    from smil.data.replicant import ingest_replicant

    header, samples, _ = ingest_replicant(fixtures_dir / "replicant" / "SMIL")
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, header, samples)
    out = tmp_path / "d.h5"
    summary = preprocess(manifest, out, PreprocessSettings(image_size=96), progress=False)
    assert summary["samples_written"] == 10 and summary["masks_written"] == 10
    with open_dataset(out) as ds:
        on_mask = []
        for i in range(len(ds)):
            s = ds.get_sample(i)
            K, R, t = (s[k][0].astype(np.float64) for k in ("K", "R", "t"))
            X = s["keypoints3d"].astype(np.float64)
            ok = np.isfinite(X).all(1)
            np.testing.assert_allclose(project(X[ok], K, R, t), s["keypoints2d"][0][ok], atol=0.05)
            mask = cv2.dilate(s["masks"][0], np.ones((5, 5), np.uint8))
            kp = np.rint(s["keypoints2d"][0]).astype(int)
            seen = (s["visibility"][0] > 0) & (kp >= 0).all(1) & (kp < 96).all(1)
            on_mask.extend(mask[kp[seen, 1], kp[seen, 0]] == 255)
        assert len(on_mask) > 100 and np.mean(on_mask) > 0.95, np.mean(on_mask)
