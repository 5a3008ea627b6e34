"""Body-model LBS throughput (meshes/s) against a bare skinning loop, in the same run.

The bare loop is the least work any LBS forward must do: the shape blend
``v = template + shapedirs · betas`` and skinning with random per-joint transforms as one matrix
product (``weights (V, J) @ transforms (J, B·12)``), applied to the vertices — no rotation
conversion, no joint regression, no kinematic chain. It uses the same vertex layout and
contraction as ``SMILModel`` so the ratio measures the model's overhead, not a weaker baseline.

Rounds of bare and full runs are interleaved and the median time per call is reported, so a busy
machine slows both sides alike. OpenMP workers are told to sleep rather than spin between parallel
regions (``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already set): on a machine whose
cores are shared with other jobs, spinning workers take the main thread's core and every operator
becomes a lottery of scheduler time slices. Run with ``OMP_WAIT_POLICY=ACTIVE`` to measure with
spinning workers.

    python benchmarks/bench_body.py [--model PATH] [--threads N] [--batch 1 64 512] [--seconds S]

Prints one JSON object; ``ratio_*`` = full / bare throughput (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see above)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smil.body import SMILModel  # noqa: E402


def default_model_path() -> Path:
    fixtures = Path(os.environ.get("SMIL_FIXTURES", REPO.parent / "shared" / "fixtures"))
    return fixtures / "models" / "SMILy_STICK.pkl"


def make_bare(model: SMILModel, batch: int, grad: bool):
    """The bare loop: shape blend + skinning as two matrix products (channel-first vertices)."""
    V, J, nb = model.num_vertices, model.num_joints, model.num_betas
    g = torch.Generator().manual_seed(0)
    template = model.template.t().reshape(-1).contiguous()               # (3V,)
    shapedirs = model.shapedirs.permute(2, 1, 0).reshape(nb, -1).contiguous()  # (nb, 3V)
    weights_t = model.weights.t()                                          # (J, V) view
    betas = torch.randn(batch, nb, generator=g).requires_grad_(grad)
    transforms = torch.randn(batch, J, 3, 4, generator=g).requires_grad_(grad)
    upstream = torch.randn(batch, V, 3, generator=g)

    def forward():
        v = torch.addmm(template, betas, shapedirs).view(batch, 3, V)
        t = (transforms.permute(0, 2, 3, 1).reshape(batch * 12, J) @ weights_t)
        t = t.view(batch, 3, 4, V)
        out = torch.addcmul(t[:, :, 3], t[:, :, 0], v[:, None, 0])
        out = torch.addcmul(out, t[:, :, 1], v[:, None, 1])
        out = torch.addcmul(out, t[:, :, 2], v[:, None, 2])
        return out.transpose(1, 2).contiguous()

    def step():
        if grad:
            forward().backward(upstream)
        else:
            with torch.no_grad():
                forward()

    return step


def make_full(model: SMILModel, batch: int, grad: bool, rotation_format: str):
    """The full SMILModel forward with every input in use (PCA scale/translation when present)."""
    J, nb, V = model.num_joints, model.num_betas, model.num_vertices
    g = torch.Generator().manual_seed(1)
    rdim = {"axis_angle": (3,), "6d": (6,), "matrix": (3, 3), "quaternion": (4,)}[rotation_format]
    inputs = {
        "betas": torch.randn(batch, nb, generator=g),
        "global_rot": 0.3 * torch.randn(batch, *rdim, generator=g),
        "joint_rot": 0.3 * torch.randn(batch, J - 1, *rdim, generator=g),
        "trans": torch.randn(batch, 3, generator=g),
        "scale": torch.rand(batch, generator=g) + 0.5,
        "joint_log_scales": 0.1 * torch.randn(batch, J, 3, generator=g),
        "joint_trans": 0.01 * torch.randn(batch, J, 3, generator=g),
    }
    if rotation_format == "6d":
        inputs["global_rot"] += torch.tensor([1.0, 0, 0, 0, 1, 0])
        inputs["joint_rot"] += torch.tensor([1.0, 0, 0, 0, 1, 0])
    if model.has_scaledirs:
        inputs["scale_weights"] = 0.1 * torch.randn(batch, model.num_scale_dirs, generator=g)
    if model.has_transdirs:
        inputs["trans_weights"] = 0.1 * torch.randn(batch, model.num_trans_dirs, generator=g)
    for x in inputs.values():
        x.requires_grad_(grad)
    upstream = torch.randn(batch, V, 3, generator=g)

    def step():
        if grad:
            model(**inputs, rotation_format=rotation_format).vertices.backward(upstream)
        else:
            with torch.no_grad():
                model(**inputs, rotation_format=rotation_format)

    return step


def time_pair(step_a, step_b, seconds: float, min_rounds: int = 5) -> tuple[float, float]:
    """Median seconds per call of two functions, measured in interleaved rounds."""
    for _ in range(3):
        step_a()
        step_b()
    times_a, times_b = [], []
    deadline = time.perf_counter() + seconds
    while len(times_a) < min_rounds or time.perf_counter() < deadline:
        for step, times in ((step_a, times_a), (step_b, times_b)):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model pickle (SMILy_STICK)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all, torch's default)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measuring time per batch size and mode (default 3)")
    parser.add_argument("--rotation-format", default="axis_angle",
                        choices=["axis_angle", "6d", "matrix", "quaternion"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    path = args.model or default_model_path()
    model = SMILModel.from_file(path)

    results = []
    for batch in args.batch:
        row: dict = {"batch": batch}
        for grad, tag in ((False, "fwd"), (True, "fwd_bwd")):
            bare = make_bare(model, batch, grad)
            full = make_full(model, batch, grad, args.rotation_format)
            seconds = args.seconds if batch > 1 else min(args.seconds, 1.5)
            t_bare, t_full = time_pair(bare, full, seconds)
            row[f"bare_{tag}_meshes_per_s"] = round(batch / t_bare, 1)
            row[f"full_{tag}_meshes_per_s"] = round(batch / t_full, 1)
            row[f"ratio_{tag}"] = round(t_bare / t_full, 3)
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    goal = next((r for r in results if r["batch"] == 64), None)
    report = {
        "benchmark": "body_lbs",
        "model": Path(path).name,
        "vertices": model.num_vertices,
        "joints": model.num_joints,
        "tree_levels": model.num_levels,
        "device": "cpu",
        "dtype": "float32",
        "rotation_format": args.rotation_format,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "reference": "bare loop: shape blend + skinning as two matrix products, same run",
        "results": results,
        "goal": {
            "batch": 64,
            "ratio_fwd_min": 0.7,
            "ratio_fwd": None if goal is None else goal["ratio_fwd"],
            "met": None if goal is None else goal["ratio_fwd"] >= 0.7,
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
