"""Speed, memory, size and accuracy of a trained model: ``smil benchmark``.

What is timed: one inference of a batch already on the device, i.e. the network forward pass plus the
body-model forward (posed vertices and joints) and the predicted cameras, under ``torch.no_grad`` with
the model in eval mode. Data loading and JPEG decoding are not included (they are the dataset's cost,
not the model's). Each batch size gets ``warmup`` untimed runs, then ``repeats`` timed ones; on CUDA
every run ends with ``torch.cuda.synchronize``. Inputs are real test-split items, repeated cyclically
when the split has fewer items than the batch size.

Throughput: ``samples_per_s = batch_size / median latency``; ``images_per_s`` counts the valid views
of those samples (equal to samples/s for single-view models).

Peak memory (``memory.method`` says which):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, per batch size: the
  tensors' peak, not the caching allocator's reserve;
- CPU on Linux: the process's peak resident set size (``VmHWM`` in ``/proc/self/status``), reset
  before each batch size through ``/proc/self/clear_refs``; it includes the interpreter, torch and the
  model weights, so it is what the process needs, not what one batch adds;
- CPU elsewhere: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the peak since the process started
  (it cannot be reset, so it never decreases with the batch size order).

Benchmark JSON layout (``format`` ``smil-benchmark``, ``format_version`` 1)::

    {format, format_version, smil_version, model_path, dataset_path, split, mode,
     device, device_name, torch_version, cpu_threads, image_size, views_per_sample,
     timed: "…", memory: {method, unit: "bytes"},
     parameters: {total, backbone, head, trainable},
     accuracy: {samples, items, model: {KEY: value}, baseline: {KEY: value}, ratio_to_baseline: {…}},
     throughput: [{batch_size, repeats, warmup, latency_ms: {median, mean, min, max, p90},
                   samples_per_s, images_per_s, peak_memory_bytes}]}

``accuracy`` holds :data:`ACCURACY_KEYS` of ``smil evaluate``'s headline (same definitions).
"""

from __future__ import annotations

import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from smil.errors import SmilError

__all__ = ["ACCURACY_KEYS", "FORMAT", "benchmark", "markdown_report", "parameter_counts", "peak_memory"]

FORMAT = "smil-benchmark"
FORMAT_VERSION = 1

#: The headline metrics of ``smil evaluate`` a benchmark reports.
ACCURACY_KEYS = (
    "keypoints2d_mean_px",
    "keypoints2d_mean_stored_px",
    "pck_5px",
    "pck_bbox_0.1",
    "pck_silhouette_0.15",
    "reprojection_mean_px",
    "mpjpe_mm",
    "pa_mpjpe_mm",
    "pa_mpvpe_mm",
    "silhouette_iou",
    "camera_rotation_deg",
)

TIMED = "network forward + body-model forward + predicted cameras, batch already on the device, no_grad"


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters of a regressor: ``total``, ``backbone``, ``head`` (everything else: regression and
    camera heads, view embeddings, cross-view fusion) and ``trainable``."""
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters()) if hasattr(model, "backbone") else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": int(total), "backbone": int(backbone), "head": int(total - backbone), "trainable": int(trainable)}


class _PeakMemory:
    """Peak memory of the code between :meth:`reset` and :meth:`read` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated (reset per batch size)"
        elif self._can_reset_rss():
            self.method = "peak RSS of the process: VmHWM, reset per batch size via /proc/self/clear_refs"
        else:
            self.method = "peak RSS of the process since it started: resource.getrusage ru_maxrss (not resettable)"

    @staticmethod
    def _vm_hwm() -> int | None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
        return int(m.group(1)) * 1024 if m else None

    def _can_reset_rss(self) -> bool:
        if self._vm_hwm() is None:
            return False
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method.startswith("peak RSS of the process: VmHWM"):
            Path("/proc/self/clear_refs").write_text("5")

    def read(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.method.startswith("peak RSS of the process: VmHWM"):
            return int(self._vm_hwm() or 0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def peak_memory(device: str | torch.device) -> _PeakMemory:
    """A peak-memory probe for ``device`` (``reset()``, run, ``read()`` → bytes; ``method`` says how)."""
    return _PeakMemory(torch.device(device))


def _tile(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """The first ``size`` items of ``batch``, repeated cyclically when it has fewer."""
    n = int(batch["image"].shape[0])
    idx = torch.arange(size) % n
    return {k: v[idx] for k, v in batch.items()}


def _input_batch(trained: Any, dataset: str | Path, split: str | None, size: int) -> dict[str, torch.Tensor]:
    from smil.evaluate.inference import iterate_dataset

    keys = ("image", "view_mask", "K", "R", "t")
    parts = []
    have = 0
    for batch in iterate_dataset(trained, dataset, split, batch_size=min(size, 64)):
        parts.append({k: batch[k] for k in keys})
        have += int(batch["image"].shape[0])
        if have >= size:
            break
    if not parts:
        raise SmilError(f"the {split or 'whole'} split has no samples with a valid view", path=dataset, field="split")
    joined = {k: torch.cat([p[k] for p in parts]) for k in keys}
    return _tile(joined, size)


def _time_batch(trained: Any, batch: dict[str, torch.Tensor], warmup: int, repeats: int) -> list[float]:
    from smil.losses import body_forward, predicted_cameras
    from smil.train.loop import run_model

    device = trained.device
    batch = {k: v.to(device) for k, v in batch.items()}

    def once() -> None:
        pred = run_model(trained.model, batch, trained.mode)
        body_forward(trained.body, pred)
        predicted_cameras(pred, trained.image_size)

    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            once()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def benchmark(
    trained: Any,
    dataset: str | Path,
    *,
    split: str | None = "test",
    batch_sizes: Sequence[int] = (1, 8, 32),
    repeats: int = 10,
    warmup: int = 2,
    eval_batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Benchmark a :class:`~smil.evaluate.inference.TrainedModel` (JSON layout in the module docstring)."""
    from smil import __version__
    from smil.evaluate.evaluate import evaluate, metrics_json

    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise SmilError(f"batch sizes must be ≥ 1, got {list(batch_sizes)}", field="batch_sizes")
    if repeats < 1 or warmup < 0:
        raise SmilError(f"--repeats must be ≥ 1 and --warmup ≥ 0, got {repeats} and {warmup}", field="repeats")
    ev = evaluate(trained, dataset, split=split, batch_size=eval_batch_size, progress=progress)
    doc = metrics_json(ev)
    accuracy = {
        "samples": doc["counts"]["samples"],
        "items": doc["counts"]["items"],
        "model": {k: doc["model"]["headline"][k] for k in ACCURACY_KEYS},
        "baseline": {k: doc["baseline"]["headline"][k] for k in ACCURACY_KEYS},
        "ratio_to_baseline": doc["ratio_to_baseline"],
    }
    inputs = _input_batch(trained, dataset, split, max(sizes))
    probe = peak_memory(trained.device)
    rows = []
    for b in sizes:
        batch = _tile(inputs, b)
        views = float(batch["view_mask"].sum()) / b
        probe.reset()
        times = _time_batch(trained, batch, warmup, repeats)
        peak = probe.read()
        ms = np.asarray(times) * 1e3
        median_s = float(np.median(times))
        rows.append({
            "batch_size": b,
            "repeats": repeats,
            "warmup": warmup,
            "latency_ms": {"median": float(np.median(ms)), "mean": float(ms.mean()), "min": float(ms.min()),
                           "max": float(ms.max()), "p90": float(np.percentile(ms, 90))},
            "samples_per_s": b / median_s,
            "images_per_s": b * views / median_s,
            "peak_memory_bytes": peak,
        })
        if progress:
            print(f"benchmark: batch {b}: {rows[-1]['latency_ms']['median']:.1f} ms, "
                  f"{rows[-1]['images_per_s']:.1f} images/s", file=sys.stderr, flush=True)
    device = trained.device
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "smil_version": __version__,
        "model_path": str(trained.path),
        "dataset_path": str(dataset),
        "split": split or "all",
        "mode": trained.mode,
        "device": str(device),
        "device_name": _device_name(device),
        "torch_version": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "image_size": trained.image_size,
        "views_per_sample": len(trained.spec.rig) or 1,
        "timed": TIMED,
        "memory": {"method": probe.method, "unit": "bytes"},
        "parameters": parameter_counts(trained.model),
        "accuracy": accuracy,
        "throughput": rows,
    }


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown_report(doc: dict[str, Any]) -> str:
    """The benchmark as Markdown: throughput table, parameters, accuracy table."""
    p = doc["parameters"]
    lines = [
        f"# Benchmark: `{Path(doc['model_path']).name}` ({doc['mode']})",
        "",
        f"Dataset `{doc['dataset_path']}`, split {doc['split']}; device {doc['device']} ({doc['device_name']}), "
        f"torch {doc['torch_version']}, {doc['cpu_threads']} CPU threads; input {doc['image_size']} px, "
        f"{doc['views_per_sample']} view slot(s).",
        "",
        f"Timed: {doc['timed']}. Memory: {doc['memory']['method']}.",
        "",
        "| batch size | latency median (ms) | latency p90 (ms) | samples/s | images/s | peak memory (MiB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["throughput"]:
        lines.append(
            f"| {r['batch_size']} | {r['latency_ms']['median']:.2f} | {r['latency_ms']['p90']:.2f} | "
            f"{r['samples_per_s']:.2f} | {r['images_per_s']:.2f} | {r['peak_memory_bytes'] / 2**20:.1f} |"
        )
    lines += [
        "",
        f"Parameters: {p['total']:,} total ({p['backbone']:,} backbone, {p['head']:,} head; "
        f"{p['trainable']:,} trainable).",
        "",
        f"Accuracy on {doc['accuracy']['samples']} samples ({doc['accuracy']['items']} items); definitions in "
        "docs/metrics.md:",
        "",
        "| metric | model | mean-pose baseline | model / baseline |",
        "|---|---:|---:|---:|",
    ]
    acc = doc["accuracy"]
    for key in ACCURACY_KEYS:
        lines.append(f"| {key} | {_fmt(acc['model'][key])} | {_fmt(acc['baseline'][key])} | "
                     f"{_fmt(acc['ratio_to_baseline'].get(key), '.3f')} |")
    return "\n".join(lines) + "\n"
