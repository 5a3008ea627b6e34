"""Training throughput (images/s): the full training step against the backbone alone, in the same run.

The **full step** is the trainer's inner loop (``smil.train.loop.Trainer.train_epoch``) for one batch:
regressor forward (under autocast when AMP is on) → ``as_float32`` → ``SmilLoss`` with every term the
config weights (IEF intermediate losses included) → backward → gradient clipping → AdamW step. The model,
the loss and the optimiser come from ``Trainer.setup()`` on the config, so they are the ones training
uses (mean-parameter IEF start, parameter groups, joint weights, body unit).

The **reference** is the same backbone on the same batch: forward, a trivial loss on the pooled
features (``mean(pooled²)``), backward, the same gradient clipping and an AdamW step over the backbone's
parameters with the trainer's AdamW settings (fused on CUDA, multi-tensor elsewhere). Both run with
learning rate 0 (all of AdamW's arithmetic, weights unchanged: see ``make_trainer``). ``ratio`` = full /
backbone throughput; ``overhead`` = full / backbone time − 1, the cost that the head, the loss (body-model
forward, projections, rendering, …) and the head's optimiser state add to the backbone. Data loading is
measured separately (``loader_images_per_s``, the config's DataLoader on its own) and is not part of
either step: both run on the same pre-fetched batches.

Datasets are built first in a temporary folder the way the default pipeline builds them (default body
model → synthetic generator → preprocess at the config's image size; every sample in the train split).
Full and reference steps take turns on every pre-fetched batch, and each batch's median time over the
rounds is used, so a busy machine slows both sides alike. OpenMP workers sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE`` unless set; see ``benchmarks/bench_body.py``).

``--breakdown`` adds where the full step's extra time goes: the head with a trivial loss on its outputs
(no ``SmilLoss``); stage times of one step (forward, loss, backward, optimiser) with the device
synchronised between stages; ``SmilLoss`` forward + backward alone on fixed predictions — every
configured term on its own, all terms without and with the IEF intermediate losses; and an operator
census per stage (ATen operators, ≈ kernel launches on a GPU, and host-device synchronisations).

``--compile MODE ...`` adds the full step of a second trainer made with ``optim.compile=MODE`` (heads
and loss compiled, the backbone as it is), timed in the same interleaved rounds; its first step, which
compiles, is not timed (what it compiled: graphs, graph breaks). Every step's launches are counted
with ``torch.profiler`` (:func:`launch_census`: eager operators and compiled-graph calls), the GPU's
limit where a step is bound by launching operators.

    python benchmarks/bench_train.py [--configs config/experiments/tiny_singleview.json ...]
        [--batches 4] [--seconds 20] [--threads N] [--breakdown] [--compile default] [--data-dir DIR]

Prints one JSON object (progress on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see above)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smil.config import TrainConfig, load_config  # noqa: E402
from smil.data.images import normalise_images  # noqa: E402
from smil.device_reads import SYNC_OPS, is_device_read  # noqa: E402
from smil.losses import SmilLoss, curriculum_weights  # noqa: E402
from smil.train.loop import Trainer, as_float32, run_model  # noqa: E402
from smil.train.schedule import backbone_frozen, set_backbone_trainable, set_learning_rate  # noqa: E402

DEFAULT_CONFIGS = ("config/experiments/tiny_singleview.json", "config/experiments/tiny_multiview.json")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------


def build_datasets(
    root: Path, *, image_size: int, single_samples: int, multi_samples: int, views: int = 4,
    synth_size: int | None = None, seed: int = 0,
) -> dict[str, Path]:
    """Default body model → synthetic data → HDF5 datasets, as the default pipeline builds them.

    Library calls only (no CLI), so it runs wherever the ``smil`` package's core dependencies are.
    Returns ``{"body_model", "singleview", "multiview"}`` paths (a dataset is skipped when its sample
    count is 0). Every sample goes to the train split.
    """
    from smil.body.default_model import build_default_model
    from smil.body.io import save_model
    from smil.body.model import SMILModel
    from smil.data.preprocess import PreprocessSettings, preprocess
    from smil.data.synth import SynthSettings, write_synthetic_dataset

    root.mkdir(parents=True, exist_ok=True)
    body_path = root / "default.pkl"
    if not body_path.is_file():
        save_model(body_path, build_default_model(0))
    body = SMILModel.from_file(body_path)
    out: dict[str, Path] = {"body_model": body_path}
    size = synth_size or 2 * image_size
    for mode, samples, v, s in (("singleview", single_samples, 1, seed + 1), ("multiview", multi_samples, views, seed + 2)):
        if samples <= 0:
            continue
        h5 = root / f"{mode}_{image_size}.h5"
        if not h5.is_file():
            t0 = time.perf_counter()
            src = root / f"{mode}_source"
            rig = "random" if v == 1 else "fixed"
            manifest = write_synthetic_dataset(
                src, body, SynthSettings(image_size=size, views=v, rig=rig, seed=s), samples
            )
            preprocess(manifest, h5, PreprocessSettings(image_size=image_size, split=(1.0, 0.0, 0.0)), progress=False)
            log(f"built {h5.name}: {samples} samples × {v} view(s) in {time.perf_counter() - t0:.1f} s")
        out[mode] = h5
    return out


# -- trainer set-up and steps ----------------------------------------------------------------------


def make_trainer(
    config: str | Path | dict[str, Any], body_model: Path, dataset: Path, out_dir: Path,
    overrides: list[str] = (), device: str | None = None,
) -> Trainer:
    """A set-up :class:`Trainer` (model, loss, optimiser, loader) for a config file or mapping."""
    sets = [f"body_model={body_model}", f"data.dataset={dataset}", *overrides]
    if isinstance(config, dict):
        cfg = load_config(data=config, overrides=sets)
    else:
        cfg = load_config(config, overrides=sets)
    trainer = Trainer(cfg, out_dir, where=str(config) if not isinstance(config, dict) else "<config>")
    if device is not None:
        trainer.device = torch.device(device)
    trainer.setup()
    # Learning rate 0: every step still does all of AdamW's arithmetic, but the weights keep their
    # start-of-training values, so the predictions (and with them the rendering work of the
    # silhouette term, which depends on how large the predicted mesh appears) do not drift while
    # the benchmark runs.
    set_learning_rate(trainer.optimizer, 0.0)
    return trainer


def steady_epoch(cfg: TrainConfig) -> int:
    """The first epoch at which every curriculum stage has started and the backbone trains."""
    epochs = [0, *cfg.loss.curriculum]
    if cfg.model.freeze_backbone and cfg.model.unfreeze_epoch >= 0:
        epochs.append(cfg.model.unfreeze_epoch)
    return max(int(e) for e in epochs)


def prefetch(trainer: Trainer, count: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    """``count`` full batches from the trainer's DataLoader, on the trainer's device."""
    batches: list[dict[str, torch.Tensor]] = []
    e = epoch
    while len(batches) < count:
        trainer.sampler.set_epoch(e)
        trainer.train_ds.set_epoch(e)
        for batch in trainer.loader:
            if batch["image"].shape[0] == trainer.cfg.data.batch_size:
                batches.append(trainer.prepare(batch))
            if len(batches) == count:
                break
        e += 1
    return batches


def images_in(batch: dict[str, torch.Tensor]) -> int:
    """Images the backbone sees for this batch (valid views)."""
    return int(batch["view_mask"].bool().sum())


def loader_throughput(trainer: Trainer, seconds: float, epoch: int) -> float:
    """Images/s of the config's DataLoader alone (workers, decoding, augmentation, collation) over
    about ``seconds``, after the first batch (worker start-up is not throughput)."""
    from torch.utils.data import DataLoader

    ds = trainer.train_ds
    ds.set_epoch(epoch)
    order = [i % len(ds) for i in range(10**6)]  # cycles through the data; stopped by the clock
    loader = DataLoader(ds, batch_size=trainer.cfg.data.batch_size, sampler=order,
                        num_workers=trainer.cfg.data.num_workers, pin_memory=trainer.device.type == "cuda")
    it = iter(loader)
    next(it)
    n_img, t0 = 0, time.perf_counter()
    for batch in it:
        n_img += images_in(batch)
        if time.perf_counter() - t0 >= seconds:
            break
    rate = n_img / max(time.perf_counter() - t0, 1e-9)
    del it
    return rate


class _Accumulator:
    """Steps the optimiser every ``accumulate`` calls, as the trainer does within an epoch."""

    def __init__(self, accumulate: int) -> None:
        self.accumulate = max(int(accumulate), 1)
        self.calls = 0

    def last_of_group(self) -> bool:
        self.calls += 1
        return self.calls % self.accumulate == 0


def full_step_fn(trainer: Trainer, epoch: int, loss: SmilLoss | None = None) -> Callable[[dict], None]:
    """One micro-batch exactly as ``Trainer.train_epoch`` runs it (the optimiser steps every
    ``optim.accumulate`` micro-batches)."""
    cfg = trainer.cfg
    loss = loss or trainer.loss
    frozen = backbone_frozen(cfg.model.freeze_backbone, cfg.model.unfreeze_epoch, epoch)
    acc = _Accumulator(cfg.optim.accumulate)

    def step(batch: dict[str, torch.Tensor]) -> None:
        trainer._begin_step()
        set_backbone_trainable(trainer.model, not frozen)
        trainer.model.train()
        if frozen:
            trainer.model.backbone.eval()
        with trainer._autocast():
            pred = run_model(trainer.model, batch, cfg.mode)
        pred = as_float32(pred)
        total, _ = loss(pred, batch, epoch)
        trainer.scaler.scale(total / acc.accumulate).backward()
        if acc.last_of_group():
            optimizer_step(trainer.optimizer, trainer.scaler, list(trainer.model.parameters()), cfg.optim.grad_clip)

    return step


def compiled_trainers(
    config: str | Path | dict[str, Any], body_model: Path, dataset: Path, work: Path, overrides: list[str],
    modes: list[str], device: str | None = None,
) -> dict[str, Trainer]:
    """One more trainer per ``optim.compile`` mode, for a compiled full step timed beside the eager
    one in the same run (same config and seed, so the same start; compiled at its first step)."""
    return {mode: make_trainer(config, body_model, dataset, work / f"out_compile_{mode}",
                               [*overrides, f"optim.compile={mode}"], device) for mode in modes}


def optimizer_step(optimizer, scaler, params: list[torch.nn.Parameter], grad_clip: float) -> None:
    """Clip, step, update the scaler and clear gradients, as the trainer does."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def backbone_images(batch: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    """The images the regressor's backbone sees: (B,3,S,S) single-view, the valid views multi-view,
    normalised as ``run_model`` normalises them (``normalise_images``, on the batch's device)."""
    if mode == "singleview":
        return normalise_images(batch["image"][:, 0])
    return normalise_images(batch["image"][batch["view_mask"].bool()])


def backbone_step_fn(trainer: Trainer) -> Callable[[dict], None]:
    """The reference: the same backbone, a trivial loss on pooled features, backward, clip, AdamW."""
    cfg = trainer.cfg
    backbone = trainer.model.backbone
    params = list(backbone.parameters())
    kernels = {k: trainer.optimizer.defaults[k] for k in ("fused", "foreach")}  # the trainer's AdamW settings
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.optim.weight_decay, **kernels)  # see make_trainer
    acc = _Accumulator(cfg.optim.accumulate)

    def step(batch: dict[str, torch.Tensor]) -> None:
        set_backbone_trainable(trainer.model, True)
        backbone.train()
        with trainer._autocast():
            _, pooled = backbone(backbone_images(batch, cfg.mode))
        total = pooled.float().pow(2).mean()
        trainer.scaler.scale(total / acc.accumulate).backward()
        if acc.last_of_group():
            optimizer_step(optimizer, trainer.scaler, params, cfg.optim.grad_clip)

    return step


def head_step_fn(trainer: Trainer) -> Callable[[dict], None]:
    """Backbone + head with a trivial loss on every prediction (no ``SmilLoss``): the head's cost."""
    cfg = trainer.cfg
    acc = _Accumulator(cfg.optim.accumulate)

    def step(batch: dict[str, torch.Tensor]) -> None:
        set_backbone_trainable(trainer.model, True)
        trainer.model.train()
        with trainer._autocast():
            pred = run_model(trainer.model, batch, cfg.mode)
        pred = as_float32(pred)
        total = sum(v.pow(2).mean() for k, v in pred.items() if k != "iterations")
        total = total + sum(v.pow(2).mean() for it in pred["iterations"] for v in it.values())
        trainer.scaler.scale(total / acc.accumulate).backward()
        if acc.last_of_group():
            optimizer_step(trainer.optimizer, trainer.scaler, list(trainer.model.parameters()), cfg.optim.grad_clip)

    return step


def staged_step(trainer: Trainer, epoch: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One full step (optimiser included) with the device synchronised between stages: seconds in
    the regressor forward, the loss forward, the backward pass and the optimiser step."""
    cfg, dev = trainer.cfg, trainer.device
    frozen = backbone_frozen(cfg.model.freeze_backbone, cfg.model.unfreeze_epoch, epoch)
    set_backbone_trainable(trainer.model, not frozen)
    trainer.model.train()
    out: dict[str, float] = {}
    sync(dev)
    t0 = time.perf_counter()
    with trainer._autocast():
        pred = run_model(trainer.model, batch, cfg.mode)
    pred = as_float32(pred)
    sync(dev)
    t1 = time.perf_counter()
    total, _ = trainer.loss(pred, batch, epoch)
    sync(dev)
    t2 = time.perf_counter()
    trainer.scaler.scale(total).backward()
    sync(dev)
    t3 = time.perf_counter()
    optimizer_step(trainer.optimizer, trainer.scaler, list(trainer.model.parameters()), cfg.optim.grad_clip)
    sync(dev)
    t4 = time.perf_counter()
    out.update(forward=t1 - t0, loss_forward=t2 - t1, backward=t3 - t2, optimizer=t4 - t3)
    return out


def stage_profile(trainer: Trainer, epoch: int, batches: list[dict], repeats: int = 3) -> dict[str, float]:
    """Median milliseconds per stage of :func:`staged_step` over ``repeats`` passes."""
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for b in batches:
            for k, v in staged_step(trainer, epoch, b).items():
                runs.setdefault(k, []).append(v)
    return {k: round(1000 * statistics.median(v), 2) for k, v in runs.items()}


# -- operator census -------------------------------------------------------------------------------

def op_census(fn: Callable[[], Any]) -> dict[str, Any]:
    """Count the ATen operators ``fn`` dispatches, forward and backward: all, those that are not views
    (≈ kernel launches on a GPU) and those that synchronise host and device on CUDA
    (:func:`smil.device_reads.is_device_read`: value reads, ``nonzero``, boolean-mask indexing,
    linear-solver error checks, blocking copies between host and device; copies are only seen when
    running on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Census(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = self.compute = self.syncs = 0
            self.sync_names: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.name().split(".")[0]
            self.total += 1
            if not func.is_view:
                self.compute += 1
            if is_device_read(name, args, kwargs):
                self.syncs += 1
                self.sync_names[name] = self.sync_names.get(name, 0) + 1
            return func(*args, **kwargs)

    with Census() as c:
        fn()
    return {"ops": c.total, "non_view_ops": c.compute, "sync_ops": c.syncs, "sync_by_op": c.sync_names}


#: The profiler's name for one call of a compiled graph (inductor), forward or backward: under
#: ``reduce-overhead`` on a GPU, one CUDA graph replay.
GRAPH_CALL = "## Call CompiledFxGraph"


def _is_view_op(name: str) -> bool:
    """Whether an ATen operator (profiler name ``aten::x``) is a view: no kernel of its own."""
    packet = getattr(torch.ops.aten, name.split("::", 1)[1], None)
    if packet is None:
        return False
    return any(getattr(packet, o).is_view for o in packet.overloads())


def launch_census(fn: Callable[[], Any], top: int = 12) -> dict[str, Any]:
    """What one call of ``fn`` launches, eager and compiled parts told apart (``torch.profiler``,
    forward and backward): ``eager_ops``, the top-level non-view ATen operators run outside compiled
    graphs (≈ one kernel launch each on a GPU); ``graph_calls``, the compiled graphs called (each one
    CUDA graph replay under ``reduce-overhead``); ``in_graph_ops``, the ATen operators that compiled
    graphs call themselves (matrix products and other library kernels; captured in the replay under
    ``reduce-overhead``); ``eager_syncs``, eager operators that make the host wait for a GPU
    (``item`` and :data:`smil.device_reads.SYNC_OPS`; boolean-mask indexing is not seen: the profiler does not record
    arguments; on a CPU these include the multi-tensor AdamW's step-count reads); and
    ``eager_by_op``, the ``top`` most frequent eager operators."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    eager: dict[str, int] = {}
    graph_calls = in_graph = syncs = 0
    for e in prof.events():
        if e.name.startswith(GRAPH_CALL):
            graph_calls += 1
            continue
        if not e.name.startswith("aten::"):
            continue
        parent, in_aten, in_graph_call = e.cpu_parent, False, False
        while parent is not None:
            in_aten |= parent.name.startswith("aten::")
            in_graph_call |= parent.name.startswith(GRAPH_CALL)
            parent = parent.cpu_parent
        if in_aten or _is_view_op(e.name):
            continue
        if in_graph_call:
            in_graph += 1
            continue
        eager[e.name] = eager.get(e.name, 0) + 1
        syncs += e.name in SYNC_OPS or e.name == "aten::item"
    top = dict(sorted(eager.items(), key=lambda kv: -kv[1])[:top])
    return {"eager_ops": sum(eager.values()), "graph_calls": graph_calls, "in_graph_ops": in_graph,
            "eager_syncs": syncs, "eager_by_op": top}


def host_waits(fn: Callable[[], Any], device: torch.device, top: int = 10) -> dict[str, Any] | None:
    """On a CUDA device, the times one call of ``fn`` made the host wait for the GPU, as CUDA's sync
    debug mode reports them (``torch.cuda.set_sync_debug_mode``: value reads, blocking copies, the
    solvers' error checks, explicit synchronisations; eager code and compiled graphs alike, so also
    what :func:`launch_census` cannot see), counted by the innermost frame of the project's code
    they came from (``smil/…`` before ``benchmarks/…``; a wait in the backward pass shows at its
    ``backward()`` call). ``None`` on other devices, which have no such mode."""
    import traceback
    import warnings

    if device.type != "cuda":
        return None
    places: dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing CUDA operation" not in str(message):
            return
        stack = [f for f in traceback.extract_stack()[:-1] if f.name != "host_waits"]
        ours = [f for f in stack if f"{os.sep}smil{os.sep}" in f.filename] or \
               [f for f in stack if f"{os.sep}benchmarks{os.sep}" in f.filename]
        frame = ours[-1] if ours else None
        where = (f"{Path(frame.filename).relative_to(REPO) if frame.filename.startswith(str(REPO)) else frame.filename}"
                 f":{frame.lineno} {frame.name}") if frame else f"{filename}:{lineno}"
        places[where] = places.get(where, 0) + 1

    torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {"count": sum(places.values()),
            "by_place": dict(sorted(places.items(), key=lambda kv: -kv[1])[:top])}


def compile_counters() -> dict[str, Any]:
    """torch.compile's running totals in this process: graphs compiled, graph breaks by reason and
    compiled graphs that CUDA graphs skipped (every graph on a CPU). Differences of two calls
    (:func:`counter_change`) tell what one piece of work compiled."""
    from torch._dynamo.utils import counters

    breaks: dict[str, int] = {}
    for reason, n in counters["graph_break"].items():  # the first line says what broke the graph
        line = reason.strip().splitlines()[0][:160] if reason.strip() else "?"
        breaks[line] = breaks.get(line, 0) + n
    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": breaks,
            "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"])}


def counter_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    breaks = {k: v - before["graph_breaks"].get(k, 0) for k, v in after["graph_breaks"].items()}
    return {"graphs": after["graphs"] - before["graphs"], "graph_breaks": {k: v for k, v in breaks.items() if v},
            "cudagraph_skips": after["cudagraph_skips"] - before["cudagraph_skips"]}


def census_by_stage(trainer: Trainer, epoch: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """:func:`op_census` of the regressor forward, the loss forward, the backward pass and the
    optimiser step of one full step, and of one reference (backbone-only) step."""
    cfg = trainer.cfg
    state: dict[str, Any] = {}

    def fwd() -> None:
        with trainer._autocast():
            state["pred"] = as_float32(run_model(trainer.model, batch, cfg.mode))

    def loss() -> None:
        state["total"], _ = trainer.loss(state["pred"], batch, epoch)

    def bwd() -> None:
        trainer.scaler.scale(state["total"]).backward()

    def opt() -> None:
        optimizer_step(trainer.optimizer, trainer.scaler, list(trainer.model.parameters()), cfg.optim.grad_clip)

    frozen = backbone_frozen(cfg.model.freeze_backbone, cfg.model.unfreeze_epoch, epoch)
    set_backbone_trainable(trainer.model, not frozen)
    trainer.model.train()
    out = {name: op_census(f) for name, f in (("forward", fwd), ("loss_forward", loss), ("backward", bwd), ("optimizer", opt))}
    ref = backbone_step_fn(trainer)
    out["backbone_step"] = op_census(lambda: ref(batch))
    return out


# -- timing ----------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[dict], None]], batches: list[dict], device: torch.device,
    seconds: float, min_rounds: int = 3, warmup_rounds: int = 1,
) -> dict[str, float]:
    """Seconds per pass over ``batches`` for each step function.

    The functions take turns on every batch (a, b, c on batch 1, then on batch 2, …), so load that
    drifts over time slows all of them alike; each function's time for a batch is the median over the
    rounds, and a pass is the sum over the batches.
    """
    for _ in range(warmup_rounds):
        for b in batches:
            for fn in steps.values():
                fn(b)
    sync(device)
    times: dict[str, list[list[float]]] = {k: [[] for _ in batches] for k in steps}
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < min_rounds or time.perf_counter() < deadline:
        for i, b in enumerate(batches):
            for name, fn in steps.items():
                sync(device)
                t0 = time.perf_counter()
                fn(b)
                sync(device)
                times[name][i].append(time.perf_counter() - t0)
        rounds += 1
    out: dict[str, float] = {k: sum(statistics.median(per) for per in v) for k, v in times.items()}
    out["rounds"] = rounds
    return out


def loss_breakdown(trainer: Trainer, batches: list[dict], epoch: int, seconds: float) -> dict[str, Any]:
    """``SmilLoss`` forward + backward alone (ms per batch) on fixed predictions: each configured term
    alone, all terms without and with the IEF intermediate losses."""
    cfg = trainer.cfg
    trainer.model.train()  # the predictions the training step sees (batch-norm statistics of the batch)
    preds = []
    with torch.no_grad(), trainer._autocast():
        for b in batches:
            preds.append(as_float32(run_model(trainer.model, b, cfg.mode)))

    def leaves(pred: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pred.items():
            if k == "iterations":
                out[k] = [{kk: vv.detach().clone().requires_grad_(True) for kk, vv in it.items()} for it in v]
            else:
                out[k] = v.detach().clone().requires_grad_(True)
        return out

    preds = [leaves(p) for p in preds]
    weights = curriculum_weights(trainer.loss.s.weights, trainer.loss.s.curriculum, epoch)
    active = [k for k, w in weights.items() if w != 0]
    variants: dict[str, SmilLoss] = {}
    base = trainer.loss.s
    for term in active:
        s = dataclasses.replace(base, weights={term: weights[term]}, curriculum={}, ief_intermediate_weight=0.0)
        variants[f"only_{term}"] = SmilLoss(trainer.body, s).to(trainer.device)
    s = dataclasses.replace(base, weights=dict(weights), curriculum={}, ief_intermediate_weight=0.0)
    variants["all_terms_no_ief"] = SmilLoss(trainer.body, s).to(trainer.device)
    variants["all_terms_with_ief"] = trainer.loss

    index = {id(b): i for i, b in enumerate(batches)}

    def fn_for(loss: SmilLoss) -> Callable[[dict], None]:
        def run(batch: dict) -> None:
            total, _ = loss(preds[index[id(batch)]], batch, epoch)
            total.backward()

        return run

    steps = {name: fn_for(loss) for name, loss in variants.items()}
    t = time_interleaved(steps, batches, trainer.device, seconds, min_rounds=3)
    n = len(batches)
    census = {name: op_census(lambda fn=fn: fn(batches[0])) for name, fn in steps.items()}
    return {
        "active_terms": {k: weights[k] for k in active},
        "ief_intermediate_weight": base.ief_intermediate_weight,
        "ief_iterations": cfg.model.ief_iterations,
        "loss_fwd_bwd_ms_per_batch": {k: round(1000 * v / n, 2) for k, v in t.items() if k != "rounds"},
        "loss_fwd_bwd_ops": {k: {"non_view_ops": c["non_view_ops"], "sync_ops": c["sync_ops"]} for k, c in census.items()},
    }


# -- one config ------------------------------------------------------------------------------------


def bench_config(
    config: str | Path | dict[str, Any], data: dict[str, Path], work: Path, *, batches: int, seconds: float,
    breakdown: bool, overrides: list[str] = (), device: str | None = None, loader_seconds: float = 0.0,
    epoch: int | None = None, label: str | None = None, compile_modes: list[str] = (),
) -> dict[str, Any]:
    mode = config["mode"] if isinstance(config, dict) else load_config(config, overrides=list(overrides)).mode
    trainer = make_trainer(config, data["body_model"], data[mode], work / "out", list(overrides), device)
    cfg = trainer.cfg
    ep = steady_epoch(cfg) if epoch is None else epoch
    name = label or (Path(config).stem if not isinstance(config, dict) else cfg.name or mode)
    log(f"{name}: {mode}, {cfg.model.backbone} at {cfg.data.image_size} px, batch {cfg.data.batch_size}, "
        f"device {trainer.device}, epoch {ep}")
    fetched = prefetch(trainer, batches, ep)
    n_img = sum(images_in(b) for b in fetched)
    steps = {"backbone": backbone_step_fn(trainer), "full": full_step_fn(trainer, ep)}
    if breakdown:
        steps["head_trivial_loss"] = head_step_fn(trainer)
    compiled = compiled_trainers(config, data["body_model"], data[mode], work, list(overrides), list(compile_modes),
                                 device)
    first_s: dict[str, float] = {}
    compiled_what: dict[str, dict[str, Any]] = {}
    for cmode, other in compiled.items():
        steps[f"full_compiled_{cmode}"] = full_step_fn(other, ep)
        before, t0 = compile_counters(), time.perf_counter()
        steps[f"full_compiled_{cmode}"](fetched[0])  # compiles; not timed
        first_s[cmode] = round(time.perf_counter() - t0, 1)
        compiled_what[cmode] = counter_change(before, compile_counters())
        log(f"{name}: compile {cmode}: first step {first_s[cmode]} s")
    t = time_interleaved(steps, fetched, trainer.device, seconds)
    weights = curriculum_weights(cfg.loss.weights, cfg.loss.curriculum, ep)
    row: dict[str, Any] = {
        "config": name,
        "mode": mode,
        "backbone": cfg.model.backbone,
        "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size,
        "views": int(fetched[0]["view_mask"].shape[1]),
        "images_per_pass": n_img,
        "batches_per_pass": len(fetched),
        "epoch": ep,
        "loss_terms": {k: v for k, v in weights.items() if v != 0},
        "ief_intermediate_weight": cfg.loss.ief_intermediate_weight,
        "amp": cfg.optim.amp if trainer.use_amp else "off",
        "rounds": t["rounds"],
        "backbone_images_per_s": round(n_img / t["backbone"], 2),
        "full_images_per_s": round(n_img / t["full"], 2),
        "backbone_ms_per_step": round(1000 * t["backbone"] / len(fetched), 1),
        "full_ms_per_step": round(1000 * t["full"] / len(fetched), 1),
        "ratio": round(t["backbone"] / t["full"], 3),
        "overhead": round(t["full"] / t["backbone"] - 1.0, 3),
    }
    for cmode in compiled:
        tc = t[f"full_compiled_{cmode}"]
        row[f"compiled_{cmode}"] = {
            "full_images_per_s": round(n_img / tc, 2), "full_ms_per_step": round(1000 * tc / len(fetched), 1),
            "ratio": round(t["backbone"] / tc, 3), "overhead": round(tc / t["backbone"] - 1.0, 3),
            "speed-up_over_eager": round(t["full"] / tc, 3), "first_step_s": first_s[cmode],
            "compiled": compiled_what[cmode],
            "launches": launch_census(lambda: steps[f"full_compiled_{cmode}"](fetched[0])),
        }
    row["launches"] = {"full": launch_census(lambda: steps["full"](fetched[0])),
                       "backbone": launch_census(lambda: steps["backbone"](fetched[0]))}
    if breakdown:
        row["head_trivial_loss_ms_per_step"] = round(1000 * t["head_trivial_loss"] / len(fetched), 1)
        row["stages_ms"] = stage_profile(trainer, ep, fetched)
        row["op_census"] = census_by_stage(trainer, ep, fetched[0])
        row["loss"] = loss_breakdown(trainer, fetched, ep, seconds / 2)
    if loader_seconds > 0:
        row["loader_images_per_s"] = round(loader_throughput(trainer, loader_seconds, ep), 1)
        row["loader_workers"] = cfg.data.num_workers
    log(json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="training configs")
    parser.add_argument("--batches", type=int, default=4, help="pre-fetched batches per timed pass (default 4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per config (default 20)")
    parser.add_argument("--loader-seconds", type=float, default=5.0,
                        help="DataLoader-only measurement per config; 0 = skip (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--breakdown", action="store_true", help="also time the head and the loss terms alone")
    parser.add_argument("--single-samples", type=int, default=48)
    parser.add_argument("--multi-samples", type=int, default=24)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the generated datasets here (reused when present; default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override key=value for every config (repeatable)")
    parser.add_argument("--compile", nargs="+", default=[], choices=["default", "reduce-overhead"],
                        help="also time the full step with optim.compile set to these modes (same run)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="smil_bench_train_") as tmp:
        root = args.data_dir or Path(tmp)
        results = []
        for config in args.configs:
            cfg = load_config(config, overrides=args.overrides)
            data = build_datasets(
                root / "data", image_size=cfg.data.image_size,
                single_samples=args.single_samples if cfg.mode == "singleview" else 0,
                multi_samples=args.multi_samples if cfg.mode == "multiview" else 0,
            )
            results.append(bench_config(
                config, data, Path(tmp) / Path(config).stem, batches=args.batches, seconds=args.seconds,
                breakdown=args.breakdown, overrides=args.overrides, loader_seconds=args.loader_seconds,
                compile_modes=args.compile,
            ))
    report = {
        "benchmark": "train_step",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "reference": "same backbone, same batches: forward, mean(pooled²), backward, grad clip, AdamW (same run)",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
