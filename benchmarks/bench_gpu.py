"""GPU check of the training step: ViT-B single-view (batch 32) and ViT-B 4-view multi-view (batch 8 ×
4 views) with bf16 autocast, each against the backbone alone in the same run, plus peak memory.

Goal: the full step (head + loss + rendering) costs at most 30 % more than the backbone alone
(``overhead`` ≤ 0.30, i.e. ``ratio`` ≥ 0.77).

What runs, per mode (the training code itself: ``Trainer.setup()`` on the experiment config, and the
trainer's inner step from ``benchmarks/bench_train.py``):

- ``singleview``: ``config/experiments/vitb_singleview.json`` (ViT-B/16, 224 px, batch 32, transformer
  IEF head, 3 iterations, bf16). The full step is timed at the epoch the backbone unfreezes (5: no
  silhouette term) and at the first epoch of the silhouette curriculum (10: silhouette weight 0.1, the
  soft rasteriser at 64², forward and backward).
- ``multiview``: ``config/experiments/vitl_multiview_stick.json`` with the backbone set to
  ``vit_base_patch16_224`` and random view subsets off (every sample has all 4 views: 32 images per
  step); accumulation 2 as configured. Epoch 3 (no silhouette) and epoch 10 (silhouette 0.05).
- the reference: the same backbone on the same batches, ``mean(pooled²)``, backward, gradient
  clipping and AdamW over the backbone (bf16 autocast likewise).

Data: small synthetic datasets made on the fly on the CPU (default body model → ``smil synth`` →
``smil preprocess`` at 224², library calls): 64 single-view samples, 32 samples × 4 views. Batches are
pre-fetched to the GPU, so data loading is not in the step; the config's DataLoader is timed alone
(``loader_images_per_s``) to show whether it can feed the GPU.

``--compile MODE ...`` (default on a GPU: ``reduce-overhead``) adds the same full steps of a second
trainer made with ``optim.compile=MODE`` (heads and loss compiled, CUDA graphs with reduce-overhead;
the backbone as it is), timed in the same interleaved rounds against the same reference; their first
step, which compiles, is reported (``first_step_s``) and not timed.

Also reported per mode: stage times of one step with the device synchronised between stages
(``stages_ms``), an operator census (ATen operators ≈ kernel launches, and host-device
synchronisations) per stage, ``SmilLoss`` forward + backward per term alone, and peak GPU memory
(``torch.cuda.max_memory_allocated``) of two steps of each kind, with the memory already resident
before them (weights, both optimisers' states, the pre-fetched batches), and on a GPU the host's
waits for it in one step of each kind (``host_waits``: CUDA's sync debug mode, by place in the code).

    python benchmarks/bench_gpu.py [--device cuda] [--out results.json] [--seconds 20]
    python benchmarks/bench_gpu.py --device cpu --tiny        # smoke test of the script on a CPU

``benchmarks/gpu_check.sh`` wraps this with a time limit and the environment for the GPU machine.
Prints a short table last (with each variant's launches, host waits and CUDA graph skips); the full
JSON goes to ``--out`` (and to stdout when no ``--out``).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train as BT  # noqa: E402  (sets OMP_WAIT_POLICY, puts the repository on sys.path)
import torch  # noqa: E402

from smil.config import load_config  # noqa: E402
from smil.losses import curriculum_weights  # noqa: E402

REPO = BT.REPO

#: Per mode: config, overrides, the epochs timed (label → epoch).
MODES: dict[str, dict[str, Any]] = {
    "singleview": {
        "config": "config/experiments/vitb_singleview.json",
        "overrides": [],
        "epochs": {"no_silhouette": 5, "silhouette": 10},
    },
    "multiview": {
        "config": "config/experiments/vitl_multiview_stick.json",
        "overrides": ["model.backbone=vit_base_patch16_224", "data.random_view_subsets=false"],
        "epochs": {"no_silhouette": 3, "silhouette": 10},
    },
}

#: ``--tiny``: the same code paths at toy sizes, for a CPU smoke test.
TINY_OVERRIDES = [
    "model.backbone=vit_tiny_patch16_224", "data.image_size=64", "model.hidden_dim=64", "model.head_depth=1",
    "model.num_heads=2", "loss.silhouette_size=32", "data.num_workers=0",
]
TINY_BATCH = {"singleview": 4, "multiview": 2}


def gpu_memory(fn, batches: list[dict], device: torch.device) -> dict[str, float]:
    """Peak allocated memory (MiB) over two calls of ``fn``, and what was resident before them."""
    if device.type != "cuda":
        return {}
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device)
    for b in batches[:2]:
        fn(b)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    mib = 1024.0**2
    return {"peak_mib": round(peak / mib, 1), "resident_mib": round(resident / mib, 1),
            "step_mib": round((peak - resident) / mib, 1)}


def render_sweep(trainer, batch: dict, epoch: int, seconds: float, errors: dict[str, str]) -> dict[str, Any]:
    """The silhouette term's renderer alone (forward + backward, ms per call) on this batch's predicted
    meshes and cameras, drawn as the loss draws them (every view, those without a mask left empty by
    ``image_mask``), at the loss's settings, with work chunks of at most 2¹⁶, 2²⁰ and 2²² (pixel, face)
    pairs (the loss uses the renderer's default for the device, 2²² on a GPU), with back-face
    culling (the default model is closed), and on a GPU as a compiled training step draws it
    (``default_chunk_compiled``: called from a compiled function, which traces the projection,
    culling and tile census, with its chunks compiled; its first call, which compiles, is timed apart
    as ``compiled_first_call_s``)."""
    from smil.losses import body_forward, predicted_cameras, render_intrinsics
    from smil.render.soft import soft_silhouette
    from smil.train.loop import as_float32, run_model

    s_cfg = trainer.loss.s
    size, image_size = s_cfg.silhouette_size, s_cfg.image_size
    trainer.model.train()  # the predictions a training step sees
    with torch.no_grad():
        with trainer._autocast():
            pred = as_float32(run_model(trainer.model, batch, trainer.cfg.mode))
        verts = body_forward(trainer.body, pred).vertices
        K, R, t = predicted_cameras(pred, image_size)
    draw = batch["has_mask"].bool() & batch["view_mask"].bool()
    B, V = draw.shape
    v_all = verts.unsqueeze(1).expand(B, V, *verts.shape[1:]).reshape(B * V, *verts.shape[1:])
    cams = (render_intrinsics(K, image_size, size).reshape(-1, 3, 3), R.reshape(-1, 3, 3), t.reshape(-1, 3))
    faces = trainer.body.faces

    def call(chunk: int | None, cull: bool, compile_options: dict | None = None):
        def render(v: torch.Tensor) -> torch.Tensor:
            return soft_silhouette(v, faces, *cams, (size, size), sigma=s_cfg.silhouette_sigma,
                                   backface_culling=cull, max_pairs_per_chunk=chunk,
                                   image_mask=draw.reshape(-1), check_faces=False, compile_options=compile_options)

        if compile_options is not None:  # as a compiled loss calls it (its graphs without CUDA graphs)
            render = torch.compile(render, **compile_options)

        def run(_batch: dict) -> None:
            render(v_all.detach().requires_grad_(True)).pow(2).mean().backward()

        return run

    variants = {f"chunk_{c}": call(c, False) for c in (1 << 16, 1 << 20, 1 << 22)}
    variants["default_chunk"] = call(None, False)
    variants["default_chunk_backface_culling"] = call(None, True)
    out: dict[str, Any] = {"images": int(draw.sum()), "size": size, "sigma": s_cfg.silhouette_sigma, "epoch": epoch}
    if trainer.device.type != "cpu":  # where the loss compiles the chunks (SmilLoss.render_compile_options)
        compiled = call(None, False, {"backend": os.environ.get("SMIL_COMPILE_BACKEND", "inductor")})
        t0 = time.perf_counter()
        if attempt(errors, "render_compiled", lambda: compiled(batch)):
            out["compiled_first_call_s"] = round(time.perf_counter() - t0, 1)
            variants["default_chunk_compiled"] = compiled
    t = BT.time_interleaved(variants, [batch], trainer.device, seconds, min_rounds=3)
    out["fwd_bwd_ms"] = {k: round(1000 * v, 2) for k, v in t.items() if k != "rounds"}
    out["launches"] = {k: BT.launch_census(lambda: variants[k](batch))
                       for k in ("default_chunk", "default_chunk_compiled") if k in variants}
    return out


def attempt(errors: dict[str, str], name: str, fn) -> bool:
    """Run ``fn``; on an exception record it under ``name`` (with the traceback's last lines) and go on."""
    try:
        fn()
        return True
    except Exception as exc:  # noqa: BLE001 - a one-shot GPU run reports every failure and keeps going
        import traceback

        tb = traceback.format_exc().strip().splitlines()
        errors[name] = f"{type(exc).__name__}: {exc} | " + " | ".join(tb[-6:])
        BT.log(f"{name} FAILED: {errors[name]}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return False


def run_mode(mode: str, args: argparse.Namespace, root: Path, device: torch.device, save) -> dict[str, Any]:
    """One mode's numbers; ``save(row)`` is called whenever a stage's numbers are in, so a run stopped
    by its time limit keeps them."""
    spec = MODES[mode]
    overrides = list(spec["overrides"])
    if args.tiny:
        overrides += TINY_OVERRIDES + [f"data.batch_size={TINY_BATCH[mode]}"]
    overrides += args.overrides
    cfg = load_config(REPO / spec["config"], overrides=overrides)
    t0 = time.perf_counter()
    data = BT.build_datasets(
        root / "data", image_size=cfg.data.image_size,
        single_samples=args.single_samples if mode == "singleview" else 0,
        multi_samples=args.multi_samples if mode == "multiview" else 0,
        synth_size=max(cfg.data.image_size, 256) if not args.tiny else 2 * cfg.data.image_size,
    )
    data_s = time.perf_counter() - t0
    trainer = BT.make_trainer(REPO / spec["config"], data["body_model"], data[mode], root / f"out_{mode}",
                              overrides, device=str(device))
    cfg = trainer.cfg
    epochs: dict[str, int] = dict(spec["epochs"])
    BT.log(f"{mode}: {cfg.model.backbone} at {cfg.data.image_size} px, batch {cfg.data.batch_size}, "
           f"amp {cfg.optim.amp if trainer.use_amp else 'off'}, device {device}, epochs {epochs}")
    batches = BT.prefetch(trainer, args.batches, max(epochs.values()))
    n_img = sum(BT.images_in(b) for b in batches)
    errors: dict[str, str] = {}
    row: dict[str, Any] = {
        "mode": mode,
        "config": spec["config"],
        "overrides": overrides,
        "network": cfg.model.backbone,
        "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size,
        "views": int(batches[0]["view_mask"].shape[1]),
        "accumulate": cfg.optim.accumulate,
        "amp": cfg.optim.amp if trainer.use_amp else "off",
        "images_per_step": n_img / len(batches),
        "data_build_s": round(data_s, 1),
        "errors": errors,
    }
    steps = {"backbone": BT.backbone_step_fn(trainer)}
    variants: dict[str, int] = {}  # full-step variant → epoch
    for label, ep in epochs.items():
        steps[f"full_{label}"] = BT.full_step_fn(trainer, ep)
        variants[f"full_{label}"] = ep
    # 1. the eager steps against the backbone (saved before anything slower is tried)
    if not time_variants(row, steps, variants, batches, cfg, args, device, errors):
        return row
    epochs = {k: v for k, v in epochs.items() if f"full_{k}" in variants}
    save(row)
    # 2. compiled steps, against the backbone again in their own rounds
    compiled: dict[str, Any] = {}
    # CUDA graphs cannot accumulate gradients (see optim.compile): with reduce-overhead, a config that
    # accumulates steps the optimiser after every micro-batch instead (more optimiser work, not less).
    cmodes = [m for m in args.compile if not (m == "reduce-overhead" and cfg.optim.accumulate > 1)]
    single = [m for m in args.compile if m not in cmodes]
    for group, extra in ((cmodes, []), (single, ["optim.accumulate=1"])):
        if group:
            attempt(errors, "compiled set-up", lambda: compiled.update(BT.compiled_trainers(
                REPO / spec["config"], data["body_model"], data[mode], root / f"out_{mode}", overrides + extra,
                group, str(device))))
    if single:
        row["compiled_accumulate_1"] = single
    if compiled:
        csteps = {"backbone": steps["backbone"]}
        cvariants: dict[str, int] = {}
        for cmode, other in compiled.items():
            for label, ep in epochs.items():
                csteps[f"full_{label}_compiled_{cmode}"] = BT.full_step_fn(other, ep)
                cvariants[f"full_{label}_compiled_{cmode}"] = ep
        time_variants(row, csteps, cvariants, batches, cfg, args, device, errors, label="compiled_rounds")
        steps.update(csteps)
        variants.update(cvariants)
        save(row)
    # Where the time goes (at the heaviest epoch timed), then memory and the DataLoader alone.
    ep_last = max(epochs.values()) if epochs else 0
    for label, ep in epochs.items():
        attempt(errors, f"stages_{label}", lambda: row[f"full_{label}"].update(
            stages_ms=BT.stage_profile(trainer, ep, batches)))
    attempt(errors, "op_census", lambda: row.update(op_census=BT.census_by_stage(trainer, ep_last, batches[0])))
    for name in ["backbone", *variants]:  # eager operators and compiled-graph calls (CUDA graph replays)
        attempt(errors, f"launches_{name}", lambda: row[name].update(launches=BT.launch_census(
            lambda: steps[name](batches[0]))))
    if device.type == "cuda":  # the host's waits for the GPU per step, compiled graphs included
        for name in ["backbone", *variants]:
            attempt(errors, f"host_waits_{name}", lambda: row[name].update(host_waits=BT.host_waits(
                lambda: steps[name](batches[0]), device)))
    attempt(errors, "loss_breakdown", lambda: row.update(
        loss=BT.loss_breakdown(trainer, batches, ep_last, max(args.seconds / 4, 1.0))))
    if any("silhouette" in row[f"full_{label}"]["loss_terms"] for label in epochs):
        attempt(errors, "render_sweep", lambda: row.update(
            render=render_sweep(trainer, batches[0], ep_last, max(args.seconds / 4, 1.0), errors)))
    attempt(errors, "memory_backbone", lambda: row["backbone"].update(memory=gpu_memory(steps["backbone"], batches, device)))
    for name in variants:
        attempt(errors, f"memory_{name}", lambda: row[name].update(memory=gpu_memory(steps[name], batches, device)))
    if args.loader_seconds > 0:
        attempt(errors, "loader", lambda: row.update(
            loader_images_per_s=round(BT.loader_throughput(trainer, args.loader_seconds, 0), 1),
            loader_workers=cfg.data.num_workers))
    BT.log(json.dumps({k: row[k] for k in row if k.startswith(("full_", "backbone"))}))
    return row  # the trainer goes with this frame; main() empties the CUDA cache


def time_variants(
    row: dict[str, Any], steps: dict[str, Any], variants: dict[str, int], batches: list[dict], cfg,
    args: argparse.Namespace, device: torch.device, errors: dict[str, str], label: str = "rounds",
) -> bool:
    """Time ``steps`` (the backbone and full-step ``variants``) in interleaved rounds and put each
    variant's numbers, against this round's backbone, in ``row``. A variant whose first call fails is
    dropped with its error (the first call also compiles, timed as ``first_step_s``). False when the
    backbone itself fails."""
    first_s: dict[str, float] = {}
    compiled: dict[str, dict[str, Any]] = {}
    for name in list(steps):  # one failing variant must not cost the others' numbers
        before, t0 = BT.compile_counters(), time.perf_counter()
        if attempt(errors, name, lambda: steps[name](batches[0])):
            first_s[name] = round(time.perf_counter() - t0, 1)
            compiled[name] = BT.counter_change(before, BT.compile_counters())
        else:
            del steps[name]
            variants.pop(name, None)
    if "backbone" not in steps:
        return False
    t = BT.time_interleaved(steps, batches, device, args.seconds, min_rounds=3, warmup_rounds=2)
    n_img = sum(BT.images_in(b) for b in batches)
    row[label] = t["rounds"]
    row.setdefault("backbone", {
        "steps_per_s": round(len(batches) / t["backbone"], 3),
        "images_per_s": round(n_img / t["backbone"], 1),
        "ms_per_step": round(1000 * t["backbone"] / len(batches), 2),
    })
    for name, ep in variants.items():
        tt = t[name]
        weights = curriculum_weights(cfg.loss.weights, cfg.loss.curriculum, ep)
        row[name] = {
            "epoch": ep,
            "loss_terms": {k: v for k, v in weights.items() if v != 0},
            "steps_per_s": round(len(batches) / tt, 3),
            "images_per_s": round(n_img / tt, 1),
            "ms_per_step": round(1000 * tt / len(batches), 2),
            "backbone_ms_per_step": round(1000 * t["backbone"] / len(batches), 2),  # this round's reference
            "ratio": round(t["backbone"] / tt, 3),
            "overhead": round(tt / t["backbone"] - 1.0, 3),
            "goal_met": tt / t["backbone"] - 1.0 <= 0.30,
            "first_step_s": first_s.get(name),
        }
        if compiled[name]["graphs"]:  # what its first step compiled
            row[name]["compiled"] = compiled[name]
    return True


def environment(device: torch.device) -> dict[str, Any]:
    import timm

    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 1024**3, 1), cuda=torch.version.cuda,
                   multiprocessors=p.multi_processor_count,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, cudnn=torch.backends.cudnn.version())
    return env


def summary_table(report: dict[str, Any]) -> str:
    lines = ["mode        variant                                       steps/s  images/s  ms/step  overhead  goal  peak MiB"
             "  launches  waits  cg skips",
             "----------  --------------------------------------------  -------  --------  -------  --------  ----  --------"
             "  --------  -----  --------"]
    for r in report["results"]:
        for name, err in r.get("errors", {}).items():
            lines.append(f"{r['mode']:<10}  {name:<44}  FAILED: {err[:90]}")
        for key in [k for k in r if k == "backbone" or k.startswith("full_")]:
            x = r[key]
            over = "" if key == "backbone" else f"{x['overhead']:+.1%}"
            goal = "" if key == "backbone" else ("ok" if x["goal_met"] else "MISS")
            mem = x.get("memory", {}).get("peak_mib", "")
            n = x.get("launches", {})
            launches = f"{n['eager_ops']}+{n['graph_calls']}" if n else ""
            hw = x.get("host_waits")  # on a GPU; else the census's reads (the CPU AdamW's included)
            waits = hw["count"] if hw else n.get("eager_syncs", "")
            skips = x.get("compiled", {}).get("cudagraph_skips", "")
            lines.append(f"{r['mode']:<10}  {key:<44}  {x['steps_per_s']:>7.2f}  {x['images_per_s']:>8.1f}  "
                         f"{x['ms_per_step']:>7.1f}  {over:>8}  {goal:>4}  {mem!s:>8}  {launches:>8}  {waits!s:>5}  "
                         f"{skips!s:>8}")
        if "loader_images_per_s" in r:
            lines.append(f"{r['mode']:<10}  {'DataLoader alone':<44}  {'':>7}  {r['loader_images_per_s']:>8.1f}  "
                         f"({r['loader_workers']} workers)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    parser.add_argument("--tiny", action="store_true",
                        help="toy sizes (ViT-Tiny at 64 px, small batches and datasets) for a quick smoke test")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per mode (default 20; tiny 2)")
    parser.add_argument("--batches", type=int, default=None, help="pre-fetched batches per pass (default 4; tiny 1)")
    parser.add_argument("--loader-seconds", type=float, default=None, help="DataLoader-only timing (default 5; tiny 0)")
    parser.add_argument("--single-samples", type=int, default=None, help="default 64 (tiny 6)")
    parser.add_argument("--multi-samples", type=int, default=None, help="default 32 (tiny 3)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep/reuse generated datasets here")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--compile", nargs="*", default=None, choices=["default", "reduce-overhead"],
                        help="also time the full steps with optim.compile set to these modes (default on cuda: "
                             "reduce-overhead; none on the CPU); give it no value to skip")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override key=value for every mode (repeatable)")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.seconds = args.seconds if args.seconds is not None else (2.0 if tiny else 20.0)
    args.batches = args.batches if args.batches is not None else (1 if tiny else 4)
    args.loader_seconds = args.loader_seconds if args.loader_seconds is not None else (0.0 if tiny else 5.0)
    args.single_samples = args.single_samples if args.single_samples is not None else (6 if tiny else 64)
    args.multi_samples = args.multi_samples if args.multi_samples is not None else (3 if tiny else 32)
    if args.compile is None:
        args.compile = [] if args.device == "cpu" else ["reduce-overhead"]

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: torch {torch.__version__} sees no CUDA GPU; run on the GPU machine "
              "(bash benchmarks/gpu_check.sh) or smoke-test with --device cpu --tiny", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "train_step_gpu",
        "tiny": tiny,
        "environment": environment(device),
        "reference": "same backbone, same batches: forward, mean(pooled²), backward, grad clip, AdamW (same run)",
        "goal": "full step overhead over the backbone alone ≤ 0.30",
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="smil_bench_gpu_") as tmp:
        root = args.data_dir or Path(tmp)
        for mode in args.modes:
            row: dict[str, Any] = {"mode": mode, "errors": {}}

            def save(partial: dict[str, Any]) -> None:
                if args.out is not None:
                    write_report(args.out, {**report, "results": [*report["results"], partial]})

            attempt(row["errors"], f"{mode} set-up", lambda: row.update(run_mode(mode, args, root, device, save)))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report["results"].append(row)
            report["wall_s"] = round(time.perf_counter() - t_start, 1)
            if args.out is not None:  # after every mode: a run stopped by its time limit keeps what it did
                write_report(args.out, report)
    if args.out is None:
        print(json.dumps(report, indent=2))
    print(summary_table(report))
    return 0


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = path.with_name(path.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    tmp_out.replace(path)
    print(f"bench_gpu: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
