"""Preprocessing throughput: ``smil preprocess`` vs a bare decode + crop/resize + encode loop.

Usage::

    python benchmarks/bench_preprocess.py [--repeats 3] [--synthetic-samples 150] [--image-size 256]

Two inputs, each measured in the same run against its own reference:

* ``replicant``: the real replicAnt renders in ``$SMIL_FIXTURES/replicant/replicAnt-x-SMIL-demo``
  (20 × 1024² JPEG), ingested with ``smil.data.replicant.ingest_replicant`` (not timed);
* ``synthetic``: a manifest built here in a temporary folder from generated 1280×960 JPEG images
  (textured background, an ellipse "animal" of varying size, 24 keypoints; not timed).

The reference ("bare") loop reads each image file, decodes it at full size with ``cv2.imdecode``,
cuts the same square crop ``smil preprocess`` uses, resizes it with ``INTER_AREA`` and encodes it as
JPEG at the same quality — nothing else. ``smil preprocess`` is timed end to end (manifest parsing,
crop planning, decoding, encoding, HDF5 writes, splits, summary), once as shipped (JPEGs decoded at
1/2, 1/4 or 1/8 size by libjpeg when the crop is that much larger than the stored size) and once with
``reduced_decode=False`` (the same full-size decode as the bare loop). Each timing is the best of
``--repeats`` runs, the three loops interleaved. ``ratio`` = preprocess throughput / bare-loop throughput
(goal ≥ 0.8). Both loops run with glibc malloc tuned as ``smil preprocess`` tunes it
(``keep_freed_image_memory``: freed image buffers are reused instead of being page-faulted in again).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from smil.data import crop as C
from smil.data.manifest import (
    ManifestHeader,
    SampleRecord,
    ViewRecord,
    iter_manifest,
    resolve_reference,
    write_manifest,
)
from smil.data.preprocess import PreprocessSettings, keep_freed_image_memory, preprocess


def fixtures_dir() -> Path:
    env = os.environ.get("SMIL_FIXTURES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def replicant_manifest(folder: Path) -> Path | None:
    """Ingest the replicAnt demo batch into ``folder/manifest.jsonl`` (None when the fixture is absent)."""
    src = fixtures_dir() / "replicant" / "replicAnt-x-SMIL-demo"
    if not src.is_dir():
        return None
    from smil.data.replicant import ingest_replicant

    header, samples, _ = ingest_replicant(src)
    path = folder / "manifest.jsonl"
    write_manifest(path, header, samples)
    return path


def synthetic_manifest(folder: Path, num_samples: int, size: tuple[int, int] = (1280, 960)) -> Path:
    """Generated JPEGs: blurred-noise background, an ellipse body with legs, 24 keypoints on it."""
    rng = np.random.default_rng(0)
    W, H = size
    K = np.array([[1000.0, 0, (W - 1) / 2], [0, 1000.0, (H - 1) / 2], [0, 0, 1]])
    samples = []
    for n in range(num_samples):
        bg = cv2.GaussianBlur(rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8), (5, 5), 1)
        img = cv2.resize(bg, (W, H), interpolation=cv2.INTER_LINEAR)
        length = rng.uniform(150, 700)
        cx, cy = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H
        angle = rng.uniform(0, np.pi)
        axis = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-axis[1], axis[0]])
        s = np.linspace(-0.5, 0.5, 8)[:, None] * length
        spine = np.array([cx, cy]) + s * axis
        legs = np.concatenate([spine + 0.25 * length * normal, spine - 0.25 * length * normal])
        kp = np.concatenate([spine, legs])
        cv2.ellipse(img, (int(cx), int(cy)), (int(length / 2), int(length / 8)), np.degrees(angle), 0, 360,
                    (40, 60, 200), -1)
        for a, b in zip(spine, legs[:8]):
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (30, 30, 30), 4)
        for a, b in zip(spine, legs[8:]):
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (30, 30, 30), 4)
        name = f"img_{n:04d}.jpg"
        cv2.imwrite(str(folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        views = [ViewRecord(camera="cam", image={"path": name}, K=K, R=np.eye(3), t=np.array([0, 0, 5.0]),
                            image_size=(W, H), keypoints2d=kp, visibility=np.ones(len(kp)))]
        samples.append(SampleRecord(sample_id=f"s{n}", group=f"g{n}", views=views, frame=n))
    header = ManifestHeader(source_kind="synthetic", joint_names=[f"k{i}" for i in range(24)], world_unit_m=0.01,
                            camera_names=["cam"])
    path = folder / "manifest.jsonl"
    write_manifest(path, header, samples)
    return path


def bare_jobs(manifest: Path, settings: PreprocessSettings) -> list[tuple[str, C.CropBox]]:
    """(image file, crop box) for every view: the same boxes preprocess uses at full resolution."""
    jobs = []
    for rec in iter_manifest(manifest):
        for view in rec.views:
            pts = view.keypoints2d[np.isfinite(view.keypoints2d).all(axis=1) & (view.visibility > 0)]
            plan = C.plan_crop(C.points_bbox(pts), view.image_size, settings.image_size, padding=settings.padding,
                               border=settings.border, allow_reduce=False)
            jobs.append((resolve_reference(manifest, view.image)["path"], plan.box))
    return jobs


def bare_loop(jobs: list[tuple[str, C.CropBox]], out_size: int, quality: int) -> float:
    """Decode + crop/resize + encode, nothing else; returns seconds."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    t0 = time.perf_counter()
    for path, box in jobs:
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        xa, ya = max(box.x0, 0), max(box.y0, 0)
        xb, yb = min(box.x0 + box.size, w), min(box.y0 + box.size, h)
        patch = img[ya:yb, xa:xb]
        pads = (ya - box.y0, box.y0 + box.size - yb, xa - box.x0, box.x0 + box.size - xb)
        if any(pads):
            patch = cv2.copyMakeBorder(patch, *pads, borderType=cv2.BORDER_CONSTANT, value=0)
        interp = cv2.INTER_AREA if box.size > out_size else cv2.INTER_LINEAR
        small = cv2.resize(patch, (out_size, out_size), interpolation=interp)
        cv2.imencode(".jpg", small, params)
    return time.perf_counter() - t0


def measure(name: str, manifest: Path, work: Path, settings: PreprocessSettings, repeats: int) -> dict[str, Any]:
    jobs = bare_jobs(manifest, settings)
    no_reduce = PreprocessSettings(**{**settings.__dict__, "reduced_decode": False})
    times: dict[str, list[float]] = {"bare": [], "preprocess": [], "preprocess_full_decode": []}
    bare_loop(jobs[:3], settings.image_size, settings.jpeg_quality)  # warm the page cache and OpenCV
    for _ in range(repeats):
        times["bare"].append(bare_loop(jobs, settings.image_size, settings.jpeg_quality))
        for key, st in (("preprocess", settings), ("preprocess_full_decode", no_reduce)):
            t0 = time.perf_counter()
            preprocess(manifest, work / f"{name}_{key}.h5", st, progress=False,
                       summary_path=work / f"{name}_{key}.json")
            times[key].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    views = len(jobs)
    with h5py.File(work / f"{name}_preprocess.h5", "r") as f:
        stored_bytes = int(sum(len(b) for b in f["images"][:].ravel()))
    shipped = json.loads((work / f"{name}_preprocess.json").read_text())
    return {
        "views": views,
        "source_image_size": list(iter_manifest(manifest).__next__().views[0].image_size),
        "bare_views_per_s": round(views / best["bare"], 1),
        "preprocess_views_per_s": round(views / best["preprocess"], 1),
        "preprocess_full_decode_views_per_s": round(views / best["preprocess_full_decode"], 1),
        "ratio": round(best["bare"] / best["preprocess"], 3),
        "ratio_full_decode": round(best["bare"] / best["preprocess_full_decode"], 3),
        "decode_reduction": shipped["decode_reduction"],
        "mean_stored_jpeg_kib": round(stored_bytes / views / 1024, 1),
        "seconds_best": {k: round(v, 4) for k, v in best.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic-samples", type=int, default=150)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--padding", type=float, default=1.2)
    ap.add_argument("--jpeg-quality", type=int, default=90)
    args = ap.parse_args(argv)
    settings = PreprocessSettings(image_size=args.image_size, padding=args.padding, jpeg_quality=args.jpeg_quality)
    # preprocess tunes glibc malloc in its process; do it first so both loops always run alike
    malloc_tuned = keep_freed_image_memory()
    result: dict[str, Any] = {
        "benchmark": "preprocess",
        "settings": {"image_size": args.image_size, "padding": args.padding, "jpeg_quality": args.jpeg_quality,
                     "workers": 1, "repeats": args.repeats},
        "goal": "ratio >= 0.8 (preprocess throughput / bare decode+crop/resize+encode loop)",
        "machine": {"python": platform.python_version(), "opencv": cv2.__version__, "h5py": h5py.__version__,
                    "cpus": os.cpu_count(), "cv2_threads": cv2.getNumThreads(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2), "malloc_tuned": malloc_tuned},
    }
    with tempfile.TemporaryDirectory(prefix="smil-bench-preprocess-") as tmp:
        work = Path(tmp)
        (work / "replicant").mkdir()
        rep = replicant_manifest(work / "replicant")
        if rep is None:
            result["replicant"] = {"skipped": f"fixture not found under {fixtures_dir()}"}
        else:
            result["replicant"] = measure("replicant", rep, work, settings, max(args.repeats, 5))
        (work / "synthetic").mkdir()
        syn = synthetic_manifest(work / "synthetic", args.synthetic_samples)
        result["synthetic"] = measure("synthetic", syn, work, settings, args.repeats)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
