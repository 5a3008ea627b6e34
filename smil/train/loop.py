"""One training loop for single- and multi-view regressors.

Files in the output folder (``results/experiments/{exp}/``):

- ``model.pt`` — the declared output, written last: best (or last) weights plus everything needed to
  rebuild and check the network (:mod:`smil.train.checkpoint`);
- ``checkpoints/last.pt`` — the rolling training state (model, optimiser, epoch, RNG states, history);
  not a declared output, so Snakemake never deletes it when a job fails, and a rerun resumes from it;
- ``resolved_config.json``, ``history.csv`` and ``loss_curves.png``.

Resuming: a run whose rolling checkpoint was written with the same resolved config continues from it
automatically (a requeued SLURM job, or the same command after a crash); ``--resume`` insists on it.
All randomness is drawn from ``(seed, epoch, …)`` or restored from the checkpoint, so a resumed run ends
with the weights an uninterrupted run would have (exactly, in ``deterministic`` mode on the CPU).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from smil.config import TrainConfig, deep_merge, to_dict
from smil.data.batching import collate_items
from smil.data.datasets import create_dataset
from smil.errors import ConfigError, DataError
from smil.io_utils import atomic_path, write_json_atomic
from smil.losses import LossSettings, SmilLoss, joint_weights
from smil.models.regressor import create_regressor, spec_from_config
from smil.train import distributed as D
from smil.train.checkpoint import (
    CheckpointError,
    data_fingerprint,
    load_weights_only,
    model_record,
    save_atomic,
)
from smil.train.mean_params import body_unit, mean_body_joints, mean_parameters
from smil.train.schedule import (
    backbone_frozen,
    learning_rate,
    parameter_groups,
    set_backbone_trainable,
    set_learning_rate,
)
from smil.train.view_frame import to_view_frame

log = logging.getLogger("smil.train")


class EpochSampler(DistributedSampler):
    """A seeded per-epoch permutation, cut to ``fraction`` of the data, sharded across ranks."""

    def __init__(self, dataset, fraction: float, seed: int, rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.fraction = fraction

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        order = torch.randperm(n, generator=g).tolist()
        take = max(self.num_replicas, int(math.ceil(n * self.fraction)))
        order = order[:take]
        per_rank = int(math.ceil(len(order) / self.num_replicas))
        order += order[: per_rank * self.num_replicas - len(order)]
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        n = len(self.dataset)
        take = max(self.num_replicas, int(math.ceil(n * self.fraction)))
        return int(math.ceil(take / self.num_replicas))


def compile_for_training(model: torch.nn.Module, loss: SmilLoss, mode: str) -> None:
    """``torch.compile`` every part of the regressor after its backbone (keypoint heatmaps; heads,
    cross-view attention, triangulation and cameras as one graph: ``compile_heads``) and the loss's
    terms (stacking of the IEF estimates, body model, projections, priors; the silhouette renderer,
    planned on the host, runs as it is), with ``mode`` ("default" or "reduce-overhead"): the step's
    many small operators become a few fused kernels. The backbone stays as it is: its few large
    operators are not what costs there. In place, so parameter names, checkpoints and DDP wrapping
    are unchanged. Compilation happens at the first step of each kind (training, evaluation, a
    shorter last batch, a curriculum stage that switches a term on or off).

    ``SMIL_COMPILE_BACKEND`` picks another torch.compile backend than inductor, e.g. ``aot_eager``
    (torch's graph capture and autograd, no generated kernels) to tell a tracing problem from a
    code-generation one; the mode applies to inductor only."""
    backend = os.environ.get("SMIL_COMPILE_BACKEND", "inductor")
    options = {"backend": backend, **({"mode": mode} if backend == "inductor" else {})}
    model.compile_heads(**options)
    loss.compile_terms(**options)


def config_json(cfg: TrainConfig) -> str:
    """A resolved config as the rolling checkpoint stores it."""
    return json.dumps(to_dict(cfg), sort_keys=True, default=str)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_model(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str) -> dict[str, Any]:
    """Call the (possibly DDP-wrapped) model: DDP synchronises gradients through its forward.

    The one place the network is fed: the batch's ``uint8`` images are normalised here, on the batch's
    device (``smil.data.images.normalise_images``, float32 even under autocast)."""
    from smil.data.images import normalise_images

    if mode == "singleview":
        return model(normalise_images(batch["image"][:, 0]))
    calibration = {"K": batch["K"], "R": batch["R"], "t": batch["t"]}
    return model(normalise_images(batch["image"]), batch["view_mask"], calibration)


def as_float32(pred: dict[str, Any]) -> dict[str, Any]:
    """Predictions made under autocast, in float32 for the losses (IEF iterations included)."""
    out: dict[str, Any] = {}
    for k, v in pred.items():
        if k == "iterations":
            out[k] = [{kk: vv.float() for kk, vv in it.items()} for it in v]
        else:
            out[k] = v.float()
    return out


def keypoint_error_px(body, pred: dict[str, Any], batch: dict[str, torch.Tensor], image_size: int) -> tuple[float, float]:
    """Sum of pixel errors over visible joints and their count (network input pixels)."""
    from smil.geometry.camera import project
    from smil.losses import body_forward, predicted_cameras

    with torch.no_grad():
        joints = body_forward(body, pred).joints
        K, R, t = predicted_cameras(pred, image_size)
        proj = project(joints.unsqueeze(1), K, R, t)
        vis = (batch["visibility"] > 0) & batch["view_mask"].bool().unsqueeze(-1)
        err = (proj - batch["keypoints2d"]).norm(dim=-1)
        return float(err[vis].sum()), int(vis.sum())


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, where: str = "<config>") -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.resume_required = resume
        self.where = where
        self.info = D.detect()
        self.device = D.device_for(self.info)

    # -- set-up --------------------------------------------------------------------------------
    def setup(self) -> None:
        from smil.body.model import SMILModel

        cfg = self.cfg
        if not cfg.body_model:
            raise ConfigError("missing; the SMIL body-model pickle to train with", path=self.where, field="body_model")
        if not cfg.data.dataset:
            raise ConfigError("missing; the HDF5 dataset to train on", path=self.where, field="data.dataset")
        seed_everything(cfg.seed, cfg.deterministic)
        self.body = SMILModel.from_file(cfg.body_model).to(self.device)
        for p in self.body.parameters():
            p.requires_grad_(False)
        # Masks are decoded only when some epoch's loss uses silhouettes.
        stages = [cfg.loss.weights, *cfg.loss.curriculum.values()]
        masks = any(stage.get("silhouette", 0.0) > 0 for stage in stages)
        self.train_ds = create_dataset(
            cfg.mode, cfg.data.dataset, "train", cfg.data, train=True, seed=cfg.seed, masks=masks
        )
        val_path = cfg.data.val_dataset or cfg.data.dataset
        val_split = None if cfg.data.val_dataset else "val"
        self.val_ds = create_dataset(cfg.mode, val_path, val_split, cfg.data, train=False, seed=cfg.seed, masks=masks)
        reader = self.train_ds.reader
        if list(reader.joint_names) != list(self.body.joint_names):
            raise DataError(
                f"the dataset's joints ({len(reader.joint_names)}: {reader.joint_names[:3]}…) are not the body "
                f"model's ({self.body.num_joints}: {list(self.body.joint_names)[:3]}…); preprocess it for this model",
                path=reader.path,
                field="joint_names",
            )
        if len(self.train_ds) == 0:
            raise DataError("the train split is empty", path=reader.path, field="split")
        rig = list(reader.camera_names) if cfg.mode == "multiview" else []
        self.spec = spec_from_config(cfg, self.body.num_joints, self.body.num_betas, rig)
        model = create_regressor(self.spec, cfg.model.pretrained_path)
        train_idx = reader.split_indices("train")
        self.mean_params = mean_parameters(reader, train_idx, self.body, cfg.mode == "multiview")
        model.set_initial_params(self.mean_params)
        if getattr(model, "triangulation", None) is not None:
            model.triangulation.set_template(mean_body_joints(self.body, self.mean_params))
        self.model = model.to(self.device)
        self.unit = body_unit(reader, train_idx)
        settings = LossSettings(
            weights=dict(cfg.loss.weights),
            curriculum={int(k): dict(v) for k, v in cfg.loss.curriculum.items()},
            ief_intermediate_weight=cfg.loss.ief_intermediate_weight,
            joint_weights=joint_weights(list(self.body.joint_names), cfg.loss.joint_importance, cfg.loss.ignored_joints),
            image_size=cfg.data.image_size,
            body_unit=self.unit,
            silhouette_size=cfg.loss.silhouette_size,
            silhouette_sigma=cfg.loss.silhouette_sigma,
            silhouette_backface_culling=cfg.loss.silhouette_backface_culling,
        )
        self.loss = SmilLoss(self.body, settings).to(self.device)
        if cfg.optim.compile != "off":
            compile_for_training(self.model, self.loss, cfg.optim.compile)
        # One fused kernel per step on CUDA (no per-parameter host reads); multi-tensor kernels elsewhere.
        fused = all(p.is_cuda for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg.optim), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                           fused=fused or None, foreach=None if fused else True)
        self.sampler = EpochSampler(self.train_ds, cfg.data.epoch_fraction, cfg.seed, self.info.rank, self.info.world_size)
        self.loader = self._loader(self.train_ds, self.sampler)
        self.fingerprints = {"train": data_fingerprint(reader)}
        if cfg.data.val_dataset:
            self.fingerprints["val"] = data_fingerprint(self.val_ds.reader)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"value": math.inf, "epoch": -1, "state": None}
        self.start_epoch = 0
        self.ddp: torch.nn.Module | None = None
        self.ddp_frozen: bool | None = None
        self.use_amp = self.device.type == "cuda" and cfg.optim.amp != "off"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and cfg.optim.amp == "fp16")

    def _loader(self, dataset, sampler) -> DataLoader:
        g = torch.Generator()
        g.manual_seed(self.cfg.seed)
        return DataLoader(
            dataset,
            batch_size=self.cfg.data.batch_size,
            sampler=sampler,
            shuffle=False if sampler is not None else False,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=g,
            persistent_workers=False,
            collate_fn=collate_items,  # one shared-memory buffer per batch (smil.data.batching)
        )

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def _config_json(self) -> str:
        return config_json(self.cfg)

    def _same_config(self, stored: str | None) -> bool:
        """Whether a checkpoint's config is this run's. Fields added to the config since the
        checkpoint was written count at their defaults, so upgrading smil does not restart a run."""
        if stored is None:
            return False
        try:
            old = deep_merge(json.loads(config_json(TrainConfig())), json.loads(stored))
        except (json.JSONDecodeError, TypeError, AttributeError):  # not JSON, or not a mapping
            return False
        return old == json.loads(self._config_json())

    def save_checkpoint(self, epoch: int) -> None:
        if self.info.is_main:
            state = {
                "config": self._config_json(),
                "epoch": epoch,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy_rng": json.dumps(np.random.get_state()[1].tolist()),
                "history": json.dumps(self.history),
                "best_value": float(self.best["value"]),
                "best_epoch": int(self.best["epoch"]),
                "best_state": self.best["state"],
            }
            save_atomic(state, self.checkpoint_path)
        D.barrier(self.info)

    def maybe_resume(self) -> None:
        path = self.checkpoint_path
        if not path.is_file():
            if self.resume_required:
                raise CheckpointError("--resume given but there is no rolling checkpoint", path=path)
            return
        state = load_weights_only(path)
        if not self._same_config(state.get("config")):
            if self.resume_required:
                raise CheckpointError(
                    "the rolling checkpoint was written with a different config; remove it or drop --resume",
                    path=path,
                )
            log.info("config changed since %s was written: starting from scratch", path)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = json.loads(state["history"])
        self.best = {"value": state["best_value"], "epoch": state["best_epoch"], "state": state["best_state"]}
        self.start_epoch = int(state["epoch"]) + 1
        log.info("resuming from %s after epoch %d", path, state["epoch"])

    # -- the loop ------------------------------------------------------------------------------
    def wrapped(self, frozen: bool) -> torch.nn.Module:
        """The model to call: DDP-wrapped when distributed (re-wrapped when freezing changes)."""
        if not self.info.distributed:
            return self.model
        if self.ddp is None or self.ddp_frozen != frozen:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.ddp_frozen = frozen
        return self.ddp

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A loader batch as the loss sees it: on the device, single-view targets in the view frame."""
        batch = to_device(batch, self.device)
        if self.cfg.mode == "singleview":
            batch = to_view_frame(batch, self.body, self.cfg.data.image_size)
        return batch

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        frozen = backbone_frozen(cfg.model.freeze_backbone, cfg.model.unfreeze_epoch, epoch)
        set_backbone_trainable(self.model, not frozen)
        model = self.wrapped(frozen)
        model.train()
        if frozen:
            self.model.backbone.eval()
        self.sampler.set_epoch(epoch)
        self.train_ds.set_epoch(epoch)
        steps = len(self.loader)
        sums: dict[str, float] = {}
        count = 0
        progress = self._progress(steps, f"epoch {epoch + 1}/{cfg.optim.epochs}")
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(self.loader):
            self._begin_step()
            set_learning_rate(self.optimizer, learning_rate(cfg.optim, epoch, step / max(steps, 1)))
            batch = self.prepare(batch)
            last_of_group = (step + 1) % cfg.optim.accumulate == 0 or step + 1 == steps
            # The last group of an epoch may hold fewer micro-batches: average over those it has.
            group_start = step - step % cfg.optim.accumulate
            group_size = min(cfg.optim.accumulate, steps - group_start)
            sync = nullcontext() if (last_of_group or not self.info.distributed) else model.no_sync()
            with sync:
                with self._autocast():
                    pred = run_model(model, batch, cfg.mode)
                pred = as_float32(pred)
                total, terms = self.loss(pred, batch, epoch)
                self.scaler.scale(total / group_size).backward()
            if last_of_group:
                if cfg.optim.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            count += 1
            # No host-device synchronisation per step: the sums stay on the device (float64, so they
            # equal sums of Python floats) and are read after the last step; the loss shown is read
            # only at the steps where it is logged.
            names = ("loss", *terms)
            values = torch.stack([total.detach(), *terms.values()]).double()
            sums[names] = sums[names] + values if names in sums else values
            if step + 1 == steps:
                per_term: dict[str, float] = {}
                for key, vals in sums.items():
                    for k, v in zip(key, vals.tolist()):
                        per_term[k] = per_term.get(k, 0.0) + v
                sums = per_term
            if step == 0 or (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                shown = float(total.detach())
            self._tick(progress, step, steps, shown)
        self._close(progress)
        out = {f"train/{k}": v / max(count, 1) for k, v in sums.items()}
        out["lr"] = float(self.optimizer.param_groups[-1]["lr"])
        return out

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float]:
        self.model.eval()
        loader = self._loader(self.val_ds, None) if len(self.val_ds) else []
        err_sum, err_n, loss_sum, batches = 0.0, 0, 0.0, 0
        for batch in loader:
            self._begin_step()
            batch = self.prepare(batch)
            pred = run_model(self.model, batch, self.cfg.mode)
            total, _ = self.loss(pred, batch, epoch)
            s, n = keypoint_error_px(self.body, pred, batch, self.cfg.data.image_size)
            err_sum, err_n = err_sum + s, err_n + n
            loss_sum, batches = loss_sum + float(total), batches + 1
        if batches == 0:
            return {}
        return {"val/loss": loss_sum / batches, "val/keypoints2d_px": err_sum / max(err_n, 1)}

    def fit(self) -> Path:
        self.setup()
        self.maybe_resume()
        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out / "resolved_config.json", to_dict(cfg))
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            t0 = time.time()
            row: dict[str, float] = {"epoch": epoch + 1}
            row.update(self.train_epoch(epoch))
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.optim.epochs:
                row.update(self.validate(epoch))
            row["seconds"] = time.time() - t0
            self.history.append(row)
            metric = row.get(cfg.best_metric)
            if metric is not None and metric < self.best["value"]:
                self.best = {
                    "value": float(metric),
                    "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                }
            self._log_row(row)
            if self.info.is_main:
                self.write_history()
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.optim.epochs:
                self.save_checkpoint(epoch)
        return self.finish()

    def finish(self) -> Path:
        path = self.out / "model.pt"
        if self.info.is_main:
            if self.best["state"] is not None:
                self.model.load_state_dict(self.best["state"])
            extra = {
                "best_epoch": int(self.best["epoch"]),
                "best_metric": self.cfg.best_metric,
                "best_value": float(self.best["value"]) if math.isfinite(self.best["value"]) else None,
                "body_unit": self.unit,
                "mean_params": {k: v.cpu() for k, v in self.mean_params.items()},
                "epochs_trained": len(self.history),
            }
            record = model_record(self.model, self.spec, to_dict(self.cfg), self.body, self.fingerprints, extra)
            save_atomic(record, path)
        D.barrier(self.info)
        return path

    # -- history and progress ------------------------------------------------------------------
    def write_history(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for row in self.history:
            writer.writerow(row)
        with atomic_path(self.out / "history.csv") as tmp:
            tmp.write_text(buf.getvalue())
        from smil.train.curves import plot_loss_curves

        plot_loss_curves(self.history, self.out / "loss_curves.png")

    def _begin_step(self) -> None:
        """With CUDA graphs (compile mode reduce-overhead), tell torch that the previous step's graph
        outputs are no longer read, so the next replay may reuse their memory."""
        if self.cfg.optim.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def _autocast(self):
        if not self.use_amp:
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.optim.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _progress(self, total: int, desc: str):
        if self.info.is_main and sys.stderr.isatty():
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, leave=False)
        return None

    def _tick(self, progress, step: int, steps: int, loss: float) -> None:
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}")
        elif self.info.is_main and ((step + 1) % self.cfg.log_every == 0 or step + 1 == steps):
            log.info("step %d/%d loss %.5f", step + 1, steps, loss)

    def _close(self, progress) -> None:
        if progress is not None:
            progress.close()

    def _log_row(self, row: dict[str, float]) -> None:
        if self.info.is_main:
            parts = [f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
            log.info("epoch %d: %s", row["epoch"], " ".join(parts[1:]))


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, where: str = "<config>") -> Path:
    """Train in this process (joining the process group when launched by torchrun or srun)."""
    info = D.detect()
    D.init(info)
    try:
        return Trainer(cfg, out_dir, resume=resume, where=where).fit()
    finally:
        D.cleanup(info)
