"""Data figures in one run, each a ratio against a reference measured in the same run.

Usage::

    python benchmarks/bench_data.py [--repeats 3] [--items 1024] [--synthetic-samples 1024] [--synth-samples 64]

Inputs (built in a temporary folder, not timed):

* ``replicant``: the 20 real replicAnt renders (1024² JPEG) of ``$SMIL_FIXTURES/replicant/replicAnt-x-SMIL-demo``,
  ingested with ``smil.data.replicant.ingest_replicant`` + ``write_manifest``;
* ``synthetic``: ``--synthetic-samples`` samples at 256² from ``smil.data.synth.write_synthetic_dataset`` with
  the default body model (``build_default_model``, one view, random cameras, silhouette masks);

both preprocessed to HDF5 at 224² (``smil.data.preprocess.preprocess``).

Figures:

* ``preprocess``: ``bench_preprocess.measure`` (``smil preprocess`` vs a bare decode + crop/resize + encode
  loop over the same images; goal ≥ 0.8): as shipped (worker processes, one per CPU, as
  ``smil preprocess`` and the workflow run it), in one thread (``ratio_one_thread``) and in threads of
  one process (``ratio_threads``);
* ``loader``: a torch ``DataLoader`` (batch 32, ``collate_fn=smil.data.batching.collate_items``) over the
  real ``SingleViewDataset`` at image size 224, with ``num_workers`` 0 and 2, augmentation off and on
  (and, 2 workers without augmentation, torch's default collation: ``*_default_collate``), vs a **bare
  decode loop** over the same stored images
  in this one process (the JPEG bytes read from the HDF5 once into memory, then ``cv2.imdecode`` per
  image). ``--items`` items per pass (the sample list repeated as needed). Workers are persistent and
  warmed up by one pass, so the figure is the steady state; ``cold_epoch_s`` adds a fresh two-worker
  pass (what an epoch with ``persistent_workers=False`` pays). Goal ≥ 0.8 with augmentation off. Also
  timed: the bare loop split over two forked processes (what a second process gains on this machine
  now), ``masks=False`` where the file has masks, and ``stage_ms_per_image`` (decode, decode + the
  item's channel-first ``uint8`` copy ``to_channels_first``, a ``dataset[i]`` loop, the loader with 0
  workers, and ``normalise_images`` of the loader's batches on this CPU: the float32 network input that
  ``run_model`` makes on the training device, not part of the loader);
* ``raw``: ``smil.data.replicant.load_raw_sample`` (JSON + 1024² JPEG decode + resize to 224²) per sample
  over the 20 renders vs the loader on the replicAnt dataset (goal ≥ 20);
* ``synthetic_generation``: ``bench_synth.main`` (samples/s at 256², 1 and 4 views, vs the JPEG + PNG
  encode floor).

Timings are the best of ``--repeats`` interleaved rounds. ``OMP_WAIT_POLICY=PASSIVE`` (unless set), torch
and OpenCV at one thread in this process (DataLoader workers run one torch thread each anyway); glibc
malloc tuned as ``smil preprocess`` tunes its process (``keep_freed_image_memory``), before everything,
so that every loop runs alike. Prints one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_preprocess  # noqa: E402
import bench_synth  # noqa: E402

from smil.data.batching import collate_items  # noqa: E402
from smil.data.datasets import SingleViewDataset  # noqa: E402
from smil.data.images import normalise_images, to_channels_first  # noqa: E402
from smil.data.preprocess import PreprocessSettings, keep_freed_image_memory  # noqa: E402
from smil.data.replicant import load_raw_sample  # noqa: E402
from smil.data.replicant_format import BATCH_PREFIX  # noqa: E402

IMAGE_SIZE = 224
BATCH_SIZE = 32
WORKERS = 2
LOADER_GOAL = 0.8
RAW_GOAL = 20.0
PREPROCESS_GOAL = 0.8


def replicant_dir() -> Path:
    return bench_preprocess.fixtures_dir() / "replicant" / "replicAnt-x-SMIL-demo"


def synthetic_manifest(folder: Path, num_samples: int) -> tuple[Path, str]:
    """``write_synthetic_dataset`` with the default body model at 256², one view per sample."""
    from smil.data.synth import SynthSettings, write_synthetic_dataset

    model, name = bench_synth._model(None)
    return write_synthetic_dataset(folder, model, SynthSettings(image_size=256, seed=0), num_samples), name


# -- the training loader vs a bare decode loop ------------------------------------------------------
_BLOBS: list[np.ndarray] = []  # the bare loop's bytes, inherited by the forked 2-process reference


def _decode_all(order: list[int]) -> int:
    for i in order:
        cv2.imdecode(_BLOBS[i], cv2.IMREAD_COLOR)
    return len(order)


class LoaderBench:
    """Every timed loop over one dataset file; ``round()`` runs each once."""

    def __init__(self, path: Path, items: int):
        self.path = path
        self.datasets = {(aug, masks): SingleViewDataset(path, None, IMAGE_SIZE, augment=aug, masks=masks)
                         for aug in (False, True) for masks in (True, False)}
        self.has_masks = bool(self.datasets[False, True].reader.has_mask.any())
        pairs = self.datasets[False, True].pairs
        self.order = [i % len(pairs) for i in range(items)]  # item indices, the pair list repeated
        with h5py.File(path, "r") as f:  # the bare loop's bytes: read once, kept in memory
            images = f["images"][:]
            self.blobs = [np.frombuffer(bytes(images[idx, view]), dtype=np.uint8) for idx, view in pairs]
        self.pool: Any = None
        self.loaders: dict[str, DataLoader] = {}
        for (aug, masks), ds in self.datasets.items():
            if not masks and (aug or not self.has_masks):
                continue  # masks off: only where the file has masks, augmentation off
            for workers in (0, WORKERS):
                key = f"workers{workers}_aug_{'on' if aug else 'off'}" + ("" if masks else "_masks_off")
                self.loaders[key] = self._loader(ds, workers)
        self.loaders[f"workers{WORKERS}_aug_off_default_collate"] = self._loader(
            self.datasets[False, True], WORKERS, collate_fn=None)
        for loader in self.loaders.values():
            self._pass(loader)  # warm-up: starts the workers, fills the page cache
        names = ["bare", "bare_2proc", "decode_copy", "dataset_items", "normalise", *self.loaders, "cold_epoch"]
        self.times: dict[str, list[float]] = {k: [] for k in names}

    def _loader(self, ds: SingleViewDataset, workers: int, collate_fn: Any = collate_items) -> DataLoader:
        return DataLoader(ds, batch_size=BATCH_SIZE, sampler=self.order, num_workers=workers,
                          persistent_workers=workers > 0, collate_fn=collate_fn)

    @staticmethod
    def _pass(loader: DataLoader) -> float:
        t0 = time.perf_counter()
        n = 0
        for batch in loader:
            n += batch["image"].shape[0]
        return time.perf_counter() - t0

    def _bare(self) -> float:
        blobs = self.blobs
        t0 = time.perf_counter()
        for i in self.order:
            cv2.imdecode(blobs[i], cv2.IMREAD_COLOR)
        return time.perf_counter() - t0

    def _bare_2proc(self) -> float:
        """The bare loop split over two forked processes (what two cores give this machine now)."""
        global _BLOBS
        if self.pool is None:
            _BLOBS = self.blobs
            self.pool = multiprocessing.get_context("fork").Pool(WORKERS)
            self.pool.map(_decode_all, [self.order[:4]] * WORKERS)
        t0 = time.perf_counter()
        self.pool.map(_decode_all, [self.order[w::WORKERS] for w in range(WORKERS)])
        return time.perf_counter() - t0

    def _decode_copy(self) -> float:
        """Decode + the item's channel-first RGB ``uint8`` copy (what an item does per image)."""
        out = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        t0 = time.perf_counter()
        for i in self.order:
            to_channels_first(cv2.imdecode(self.blobs[i], cv2.IMREAD_COLOR), out=out, bgr=True)
        return time.perf_counter() - t0

    def _normalise(self) -> float:
        """``normalise_images`` on this CPU over batches of the loader's shape (the device's share)."""
        batch = torch.zeros((BATCH_SIZE, 1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
        n = 0
        t0 = time.perf_counter()
        while n < len(self.order):
            normalise_images(batch)
            n += BATCH_SIZE
        return (time.perf_counter() - t0) * len(self.order) / n

    def _items(self) -> float:
        ds = self.datasets[False, True]
        t0 = time.perf_counter()
        for i in self.order:
            ds[i]
        return time.perf_counter() - t0

    def _cold(self) -> float:
        loader = DataLoader(self.datasets[False, True], batch_size=BATCH_SIZE, sampler=self.order,
                            num_workers=WORKERS, collate_fn=collate_items)
        return self._pass(loader)

    def round(self) -> None:
        self.times["bare"].append(self._bare())
        self.times["bare_2proc"].append(self._bare_2proc())
        self.times["decode_copy"].append(self._decode_copy())
        self.times["dataset_items"].append(self._items())
        self.times["normalise"].append(self._normalise())
        for key, loader in self.loaders.items():
            self.times[key].append(self._pass(loader))
        self.times["cold_epoch"].append(self._cold())

    def result(self) -> dict[str, Any]:
        n = len(self.order)
        best = {k: min(v) for k, v in self.times.items()}
        out: dict[str, Any] = {
            "file": self.path.name,
            "stored_views": len(self.blobs),
            "items_per_pass": n,
            "mean_stored_jpeg_kib": round(float(np.mean([len(b) for b in self.blobs])) / 1024, 1),
            "has_masks": self.has_masks,
            "bare_decode_images_per_s": round(n / best["bare"], 1),
            "bare_decode_ms_per_image": round(1e3 * best["bare"] / n, 3),
            f"bare_decode_{WORKERS}proc_images_per_s": round(n / best["bare_2proc"], 1),
            f"bare_decode_{WORKERS}proc_speedup": round(best["bare"] / best["bare_2proc"], 3),
            "stage_ms_per_image": {
                "decode": round(1e3 * best["bare"] / n, 3),
                "decode_copy": round(1e3 * best["decode_copy"] / n, 3),
                "dataset_item": round(1e3 * best["dataset_items"] / n, 3),
                "loader_workers0": round(1e3 * best["workers0_aug_off"] / n, 3),
                "normalise_images_cpu": round(1e3 * best["normalise"] / n, 3),
            },
        }
        for key in self.loaders:
            out[f"loader_{key}_images_per_s"] = round(n / best[key], 1)
            out[f"loader_{key}_ms_per_image"] = round(1e3 * best[key] / n, 3)
            out[f"ratio_{key}"] = round(best["bare"] / best[key], 3)
        out[f"ratio_workers{WORKERS}_aug_off_vs_bare_{WORKERS}proc"] = round(
            best["bare_2proc"] / best[f"workers{WORKERS}_aug_off"], 3)
        out[f"cold_epoch_workers{WORKERS}_aug_off_s"] = round(best["cold_epoch"], 3)
        out[f"ratio_cold_epoch_workers{WORKERS}_aug_off"] = round(best["bare"] / best["cold_epoch"], 3)
        return out

    def close(self) -> None:
        self.loaders.clear()  # persistent workers exit when their loader is collected
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None


def raw_pass(jsons: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in jsons:
        load_raw_sample(p, IMAGE_SIZE)
    return time.perf_counter() - t0


# -- main ----------------------------------------------------------------------------------------
def synthetic_generation(samples: int, repeats: int) -> dict[str, Any]:
    """``bench_synth``'s own measurement (its JSON), at 256²."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench_synth.main(["--samples", str(samples), "--repeats", str(repeats), "--image-size", "256"])
    res = json.loads(buf.getvalue())
    return {
        "body_model": res["body_model"],
        "image_size": res["image_size"],
        "threads": res["threads"],
        "configs": [
            {k: c[k] for k in ("views", "rig", "samples", "samples_per_s", "views_per_s", "reference_views_per_s",
                               "ratio_to_encode_floor")}
            for c in res["configs"]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best is reported")
    ap.add_argument("--items", type=int, default=1024, help="loader items per timed pass")
    ap.add_argument("--synthetic-samples", type=int, default=1024,
                    help="synthetic samples to preprocess and load (default 1024; see bench_preprocess "
                         "--smil-synth-samples)")
    ap.add_argument("--synth-samples", type=int, default=64, help="samples per bench_synth generation run")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    malloc_tuned = keep_freed_image_memory()  # preprocess tunes its process: tune first, so all loops run alike
    load_start = os.getloadavg()
    settings = PreprocessSettings(image_size=IMAGE_SIZE)
    result: dict[str, Any] = {
        "benchmark": "data",
        "goals": {
            "preprocess_ratio": f">= {PREPROCESS_GOAL} (preprocess / bare decode+crop/resize+encode)",
            "loader_ratio": f">= {LOADER_GOAL} (loader, {WORKERS} workers, augmentation off / bare decode loop, 1 process)",
            "raw_ratio": f">= {RAW_GOAL} (loader / load_raw_sample JSON+JPEG+resize)",
        },
        "settings": {"image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE, "workers": [0, WORKERS],
                     "items_per_pass": args.items, "repeats": args.repeats,
                     "synthetic_samples": args.synthetic_samples, "synth_samples": args.synth_samples},
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "opencv": cv2.__version__, "h5py": h5py.__version__,
            "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "malloc_tuned": malloc_tuned,
            "load_average_start": [round(x, 2) for x in load_start],
        },
    }
    src = replicant_dir()
    with tempfile.TemporaryDirectory(prefix="smil-bench-data-") as tmp:
        work = Path(tmp)
        inputs: dict[str, Path] = {}
        if src.is_dir():
            (work / "replicant").mkdir()
            inputs["replicant"] = bench_preprocess.replicant_manifest(work / "replicant")
        else:
            result["replicant_skipped"] = f"fixture not found under {src}"
        inputs["synthetic"], model_name = synthetic_manifest(work / "synthetic", args.synthetic_samples)
        result["synthetic_body_model"] = model_name

        # 1. preprocessing (writes work/{name}_preprocess.h5, the loader's input)
        result["preprocess"] = {name: bench_preprocess.measure_lean(name, manifest, work, settings, args.repeats)
                                for name, manifest in inputs.items()}

        # 2. loader vs bare decode, and 3. raw replicAnt reading, interleaved
        benches = {name: LoaderBench(work / f"{name}_preprocess.h5", args.items) for name in inputs}
        jsons = sorted(p for p in src.glob("*.json") if not p.name.startswith(BATCH_PREFIX)) if src.is_dir() else []
        raw_times: list[float] = []
        if jsons:
            raw_pass(jsons[:2])  # warm-up
        for _ in range(args.repeats):
            for bench in benches.values():
                bench.round()
            if jsons:
                raw_times.append(raw_pass(jsons))
        result["loader"] = {name: b.result() for name, b in benches.items()}
        for b in benches.values():
            b.close()
        if jsons:
            rep = result["loader"]["replicant"]
            raw_rate = len(jsons) / min(raw_times)
            result["raw"] = {
                "samples": len(jsons),
                "source_image_size": [1024, 1024],
                "raw_samples_per_s": round(raw_rate, 1),
                "raw_ms_per_sample": round(1e3 / raw_rate, 3),
                "ratio_loader_workers0": round(rep["loader_workers0_aug_off_images_per_s"] / raw_rate, 1),
                f"ratio_loader_workers{WORKERS}": round(rep[f"loader_workers{WORKERS}_aug_off_images_per_s"] / raw_rate, 1),
                "ratio_loader_workers0_aug_on": round(rep["loader_workers0_aug_on_images_per_s"] / raw_rate, 1),
                "ratio_bare_decode_limit": round(rep["bare_decode_images_per_s"] / raw_rate, 1),
            }

    # 4. synthetic generation (bench_synth's measurement)
    result["synthetic_generation"] = synthetic_generation(args.synth_samples, args.repeats)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    key = f"ratio_workers{WORKERS}_aug_off"
    result["summary"] = {
        "preprocess_ratio": {n: r["ratio"] for n, r in result["preprocess"].items()},
        "preprocess_ratio_one_thread": {n: r["ratio_one_thread"] for n, r in result["preprocess"].items()},
        "preprocess_ratio_threads": {n: r["ratio_threads"] for n, r in result["preprocess"].items()},
        "loader_ratio_workers2_aug_off": {n: r[key] for n, r in result["loader"].items()},
        "loader_ratio_workers0_aug_off": {n: r["ratio_workers0_aug_off"] for n, r in result["loader"].items()},
        "loader_ratio_workers2_aug_on": {n: r[f"ratio_workers{WORKERS}_aug_on"] for n, r in result["loader"].items()},
        "loader_ratio_workers2_aug_off_default_collate": {n: r[f"{key}_default_collate"]
                                                          for n, r in result["loader"].items()},
        "bare_decode_2proc_speedup": {n: r[f"bare_decode_{WORKERS}proc_speedup"] for n, r in result["loader"].items()},
        "bare_decode_ms_per_image": {n: r["bare_decode_ms_per_image"] for n, r in result["loader"].items()},
        "raw_ratio_workers0": result.get("raw", {}).get("ratio_loader_workers0"),
        f"raw_ratio_workers{WORKERS}": result.get("raw", {}).get(f"ratio_loader_workers{WORKERS}"),
        "synthetic_samples_per_s_256": {f"{c['views']}_view": c["samples_per_s"]
                                        for c in result["synthetic_generation"]["configs"]},
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
