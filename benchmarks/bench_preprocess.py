"""Preprocessing throughput: ``smil preprocess`` vs a bare decode + crop/resize + encode loop.

Usage::

    python benchmarks/bench_preprocess.py [--repeats 3] [--inputs replicant,synthetic,smil-synth]
        [--synthetic-samples 150] [--smil-synth-samples 1024] [--image-size 256] [--smil-synth-image-size 224]

Three inputs (built in a temporary folder, not timed), each measured in the same run against its own
references:

* ``replicant``: the real replicAnt renders in ``$SMIL_FIXTURES/replicant/replicAnt-x-SMIL-demo``
  (20 × 1024² JPEG, no masks), ingested with ``smil.data.replicant.ingest_replicant``;
* ``synthetic``: generated 1280×960 JPEG images (textured background, an ellipse "animal" of varying
  size, 24 keypoints, no masks);
* ``smil-synth``: ``smil synth`` output, as ``bench_data.py`` builds it: ``write_synthetic_dataset`` with
  the default body model, 256² images with silhouette masks and full ground-truth body parameters,
  one view; stored at ``--smil-synth-image-size`` (224).

References, each timed over the same views:

* ``bare``: read each image file, decode it at full size with ``cv2.imdecode``, cut the same square crop
  ``smil preprocess`` cuts (around the keypoints and the mask, see ``SampleProcessor.crop_plan``), resize
  it (``INTER_AREA`` down, ``INTER_LINEAR`` up) and encode it as JPEG at the same quality — nothing else;
* ``floor``: the bare loop plus the work any preprocessing of the input must also do: parsing every
  manifest line (``parse_manifest_line``, the parser preprocess uses) and, for views with a mask,
  decoding the mask (``load_mask``), cropping and resizing it to the same box, thresholding and PNG encoding. ``bare / floor`` is the best ``ratio``
  that code with no overhead at all could reach.

``smil preprocess`` is timed end to end (manifest parsing, crop planning, decoding, encoding, HDF5
writes, splits, summary, and starting and stopping its worker processes): as shipped (``--workers`` and
``--threads`` default 0, as ``smil preprocess``: here one forked worker process per available CPU, at
most 4; JPEGs decoded at 1/2, 1/4 or 1/8 size by libjpeg when the crop is that much larger than the
stored size); with ``reduced_decode=False`` (the same full-size decode as the bare loop); in one
thread (``ratio_one_thread``); and in threads of one process instead of worker processes
(``ratio_threads``, ``--workers 1``). Each timing is the best of ``--repeats`` runs (at least 5 for
replicant), the loops interleaved. ``ratio`` = preprocess throughput / bare-loop throughput (goal
≥ 0.8); ``ratio_to_floor`` = preprocess / floor. The bare and floor loops are one thread each: they are the plain
single loop a script would run. Every loop runs with glibc malloc tuned as ``smil preprocess``
tunes it (``keep_freed_image_memory``: freed image buffers are reused instead of being page-faulted in
again). The load average is recorded at the start and the end (the machine may be shared).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from smil.data import crop as C
from smil.data.images import load_mask
from smil.data.manifest import (
    ManifestHeader,
    SampleRecord,
    ViewRecord,
    iter_manifest,
    manifest_folder,
    parse_manifest_line,
    read_manifest_header,
    resolve_in,
    write_manifest,
)
from smil.data.preprocess import (
    PreprocessSettings,
    SampleProcessor,
    keep_freed_image_memory,
    preprocess,
)


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


@dataclass(frozen=True)
class BareJob:
    """One view for the reference loops: its files and the crop ``smil preprocess`` makes of it."""

    image: str
    box: C.CropBox  # in full-resolution source pixels
    mask: dict[str, Any] | None  # resolved mask reference, or None


def bare_jobs(manifest: Path, settings: PreprocessSettings) -> list[BareJob]:
    """Every view with the crop box preprocess uses at full resolution (keypoints ∪ mask, or the fallbacks)."""
    full = PreprocessSettings(**{**settings.__dict__, "reduced_decode": False})
    proc = SampleProcessor(manifest, read_manifest_header(manifest), full)
    base = manifest_folder(manifest)
    jobs = []
    for rec in iter_manifest(manifest):
        kp3 = np.full((len(proc.header.joint_names), 3), np.nan) if rec.keypoints3d is None else rec.keypoints3d
        for view in rec.views:
            plan = proc.crop_plan(view, kp3, proc.view_mask(view), jpeg=False)
            mask = None if view.mask is None else resolve_in(base, view.mask)
            jobs.append(BareJob(resolve_in(base, view.image)["path"], plan.box, mask))
    proc.close()
    return jobs


def _crop_resize(img: np.ndarray, box: C.CropBox, out_size: int) -> np.ndarray:
    h, w = img.shape[:2]
    xa, ya = max(box.x0, 0), max(box.y0, 0)
    xb, yb = min(box.x0 + box.size, w), min(box.y0 + box.size, h)
    patch = img[ya:yb, xa:xb]
    pads = (ya - box.y0, box.y0 + box.size - yb, xa - box.x0, box.x0 + box.size - xb)
    if any(pads):
        patch = cv2.copyMakeBorder(patch, *pads, borderType=cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if box.size > out_size else cv2.INTER_LINEAR
    return cv2.resize(patch, (out_size, out_size), interpolation=interp)


def bare_loop(jobs: list[BareJob], out_size: int, quality: int) -> float:
    """Decode + crop/resize + encode of the images, nothing else; returns seconds."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    t0 = time.perf_counter()
    for job in jobs:
        img = cv2.imdecode(np.fromfile(job.image, dtype=np.uint8), cv2.IMREAD_COLOR)
        cv2.imencode(".jpg", _crop_resize(img, job.box, out_size), params)
    return time.perf_counter() - t0


def floor_loop(jobs: list[BareJob], lines: list[str], out_size: int, quality: int) -> float:
    """The bare loop plus the rest of the work no preprocessing can skip; returns seconds.

    Added per view with a mask: decoding the mask (``load_mask``), cropping and resizing it to the same
    box, thresholding, PNG encoding; per sample: parsing its manifest line.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    t0 = time.perf_counter()
    for text in lines:
        parse_manifest_line(text, "")
    for job in jobs:
        img = cv2.imdecode(np.fromfile(job.image, dtype=np.uint8), cv2.IMREAD_COLOR)
        cv2.imencode(".jpg", _crop_resize(img, job.box, out_size), params)
        if job.mask is not None:
            small = _crop_resize(load_mask(job.mask), job.box, out_size)
            cv2.imencode(".png", cv2.threshold(small, 127, 255, cv2.THRESH_BINARY)[1])
    return time.perf_counter() - t0


def measure(name: str, manifest: Path, work: Path, settings: PreprocessSettings, repeats: int) -> dict[str, Any]:
    keep_freed_image_memory()  # as smil preprocess does in its process (idempotent)
    jobs = bare_jobs(manifest, settings)
    with open(manifest, encoding="utf-8") as fh:
        lines = [text for text in fh.readlines()[1:] if text.strip()]

    def variant(**changes: Any) -> PreprocessSettings:
        return PreprocessSettings(**{**settings.__dict__, **changes})

    runs = [("preprocess", settings), ("preprocess_full_decode", variant(reduced_decode=False)),
            ("preprocess_one_thread", variant(workers=1, threads=1)),
            ("preprocess_threads", variant(workers=1, threads=0))]
    times: dict[str, list[float]] = {"bare": [], "floor": [], **{key: [] for key, _ in runs}}
    floor_loop(jobs[:3], lines[:3], settings.image_size, settings.jpeg_quality)  # warm the page cache and OpenCV
    for _ in range(repeats):
        times["bare"].append(bare_loop(jobs, settings.image_size, settings.jpeg_quality))
        times["floor"].append(floor_loop(jobs, lines, settings.image_size, settings.jpeg_quality))
        for key, st in runs:
            t0 = time.perf_counter()
            preprocess(manifest, work / f"{name}_{key}.h5", st, progress=False,
                       summary_path=work / f"{name}_{key}.json")
            times[key].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    views = len(jobs)
    with h5py.File(work / f"{name}_preprocess.h5", "r") as f:
        stored_bytes = int(sum(len(b) for b in f["images"][:].ravel()))
    shipped = json.loads((work / f"{name}_preprocess.json").read_text())
    threaded = json.loads((work / f"{name}_preprocess_threads.json").read_text())
    return {
        "views": views,
        "views_with_mask": sum(job.mask is not None for job in jobs),
        "image_size": settings.image_size,
        "source_image_size": list(iter_manifest(manifest).__next__().views[0].image_size),
        "bare_views_per_s": round(views / best["bare"], 1),
        "floor_views_per_s": round(views / best["floor"], 1),
        "preprocess_views_per_s": round(views / best["preprocess"], 1),
        "preprocess_full_decode_views_per_s": round(views / best["preprocess_full_decode"], 1),
        "workers": shipped["settings"]["workers"],
        "threads": shipped["settings"]["threads"],
        "ratio": round(best["bare"] / best["preprocess"], 3),
        "ratio_full_decode": round(best["bare"] / best["preprocess_full_decode"], 3),
        "ratio_one_thread": round(best["bare"] / best["preprocess_one_thread"], 3),
        "ratio_threads": round(best["bare"] / best["preprocess_threads"], 3),
        "threads_in_threads_run": threaded["settings"]["threads"],
        "floor_ratio": round(best["bare"] / best["floor"], 3),
        "ratio_to_floor": round(best["floor"] / best["preprocess"], 3),
        "decode_reduction": shipped["decode_reduction"],
        "mean_stored_jpeg_kib": round(stored_bytes / views / 1024, 1),
        "ms_per_view_best": {k: round(1e3 * v / views, 3) for k, v in best.items()},
    }


def smil_synth_manifest(folder: Path, num_samples: int) -> Path:
    """``smil synth`` output: ``write_synthetic_dataset`` with the default body model, 256², one view, masks."""
    from smil.body.default_model import build_default_model
    from smil.body.io import save_model
    from smil.body.model import SMILModel
    from smil.data.synth import SynthSettings, write_synthetic_dataset

    save_model(folder / "default.pkl", build_default_model())
    model = SMILModel.from_file(folder / "default.pkl")
    return write_synthetic_dataset(folder, model, SynthSettings(image_size=256, seed=0), num_samples)


INPUTS = ("replicant", "synthetic", "smil-synth")


def measure_lean(name: str, manifest: Path, work: Path, settings: PreprocessSettings, repeats: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process that imports only what ``smil preprocess`` needs (not torch,
    which building the ``smil synth`` input loads): forking a process costs about 4 ms with those
    modules loaded and about 17 ms with torch's as well, which a 256-sample run would count."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, name, manifest, work, settings, repeats).result()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inputs", default=",".join(INPUTS), help=f"comma-separated subset of {','.join(INPUTS)}")
    ap.add_argument("--synthetic-samples", type=int, default=150)
    ap.add_argument("--smil-synth-samples", type=int, default=1024,
                    help="smil synth samples (default 1024: a run's constant costs, about 40-50 ms for starting "
                         "worker processes, creating the file and its last block write, are then under 5 %%, "
                         "as for the default pipeline's 2880-sample datasets; earlier sessions used 256)")
    ap.add_argument("--image-size", type=int, default=256, help="stored size for replicant and synthetic")
    ap.add_argument("--smil-synth-image-size", type=int, default=224, help="stored size for smil-synth")
    ap.add_argument("--padding", type=float, default=1.2)
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--workers", type=int, default=0,
                    help="preprocess worker processes (default 0: as smil preprocess, see plan_parallelism)")
    ap.add_argument("--threads", type=int, default=0, help="preprocess threads (default 0: as smil preprocess)")
    args = ap.parse_args(argv)
    inputs = [name.strip() for name in args.inputs.split(",") if name.strip()]
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        ap.error(f"unknown input(s) {unknown}; expected some of {list(INPUTS)}")
    settings = PreprocessSettings(image_size=args.image_size, padding=args.padding, jpeg_quality=args.jpeg_quality,
                                  workers=args.workers, threads=args.threads)
    # preprocess tunes glibc malloc in its process; do it first so every loop always runs alike
    malloc_tuned = keep_freed_image_memory()
    result: dict[str, Any] = {
        "benchmark": "preprocess",
        "settings": {"image_size": args.image_size, "smil_synth_image_size": args.smil_synth_image_size,
                     "padding": args.padding, "jpeg_quality": args.jpeg_quality, "workers": args.workers,
                     "threads": args.threads, "repeats": args.repeats},
        "goal": "ratio >= 0.8 (preprocess throughput / bare decode+crop/resize+encode loop)",
        "machine": {"python": platform.python_version(), "opencv": cv2.__version__, "h5py": h5py.__version__,
                    "cpus": os.cpu_count(), "cv2_threads": cv2.getNumThreads(), "platform": platform.platform(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()], "malloc_tuned": malloc_tuned},
    }
    with tempfile.TemporaryDirectory(prefix="smil-bench-preprocess-") as tmp:
        work = Path(tmp)
        for name in inputs:
            (work / name).mkdir()
            if name == "replicant":
                rep = replicant_manifest(work / name)
                result[name] = ({"skipped": f"fixture not found under {fixtures_dir()}"} if rep is None else
                                measure_lean(name, rep, work, settings, max(args.repeats, 5)))
            elif name == "synthetic":
                syn = synthetic_manifest(work / name, args.synthetic_samples)
                result[name] = measure_lean(name, syn, work, settings, args.repeats)
            else:
                smil = smil_synth_manifest(work / name, args.smil_synth_samples)
                at = PreprocessSettings(**{**settings.__dict__, "image_size": args.smil_synth_image_size})
                result[name] = measure_lean(name, smil, work, at, args.repeats)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
