"""The trainer: outputs, honoured options, DDP equivalence, and exact resume after kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smil.config import iter_fields, load_config
from smil.render.soft import chunk_kernels as _chunk_kernels
from smil.train.checkpoint import CheckpointError, check_compatible, load_model_record
from smil.train.loop import Trainer
from smil.train.schedule import learning_rate

TINY = {
    "seed": 0,
    "deterministic": True,
    "data": {"image_size": 32, "batch_size": 4, "num_workers": 0, "augment": True},
    "model": {"backbone": "vit_tiny_patch16_224", "head": "transformer", "hidden_dim": 32, "head_depth": 1,
              "num_heads": 2, "dropout": 0.0, "ief_iterations": 2},
    "optim": {"epochs": 2, "lr": 1e-3},
}


def config(tmp_path: Path, tiny_data: dict, mode: str = "singleview", **over) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["mode"] = mode
    cfg["body_model"] = str(tiny_data["body_model"])
    cfg["data"]["dataset"] = str(tiny_data["single" if mode == "singleview" else "multi"])
    for key, value in over.items():
        node = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path = tmp_path / f"{mode}.json"
    path.write_text(json.dumps(cfg))
    return path


def fit(cfg_path: Path, out: Path, *overrides: str) -> Trainer:
    trainer = Trainer(load_config(cfg_path, list(overrides)), out)
    trainer.fit()
    return trainer


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model_record(path)["state_dict"]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0), k


@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_training_writes_a_complete_model(tmp_path: Path, tiny_data: dict, mode: str) -> None:
    out = tmp_path / "exp"
    fit(config(tmp_path, tiny_data, mode), out)
    record = torch.load(out / "model.pt", weights_only=True)
    assert record["joint_names"] and len(record["joint_names"]) == record["spec"]["num_joints"]
    assert len(record["body_model_sha256"]) == 64
    assert record["data_fingerprints"]["train"]
    assert record["config"]["mode"] == mode
    if mode == "multiview":
        assert record["rig"] == ["cam0", "cam1", "cam2", "cam3"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[-1]["val/keypoints2d_px"]) > 0
    assert (out / "loss_curves.png").stat().st_size > 1000
    assert json.loads((out / "resolved_config.json").read_text())["optim"]["epochs"] == 2
    assert (out / "checkpoints" / "last.pt").is_file()


def test_loading_against_another_body_model_or_rig_is_an_error(tmp_path: Path, tiny_data: dict) -> None:
    out = tmp_path / "exp"
    fit(config(tmp_path, tiny_data, "multiview", optim__epochs=1), out)
    record = load_model_record(out / "model.pt")
    with pytest.raises(CheckpointError, match="camera rig"):
        check_compatible(record, out / "model.pt", rig=["a", "b"])
    with pytest.raises(CheckpointError, match="joints"):
        check_compatible(record, out / "model.pt", joint_names=["x"] * 3)


def test_same_seed_gives_identical_weights(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1)
    fit(cfg, tmp_path / "a")
    fit(cfg, tmp_path / "b")
    assert_same_weights(weights(tmp_path / "a/model.pt"), weights(tmp_path / "b/model.pt"))
    fit(cfg, tmp_path / "c", "seed=1")
    a, c = weights(tmp_path / "a/model.pt"), weights(tmp_path / "c/model.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_frozen_backbone_stays_fixed_until_unfrozen(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1)
    init = Trainer(load_config(cfg), tmp_path / "x")
    init.setup()
    before = {k: v.clone() for k, v in init.model.backbone.state_dict().items()}
    frozen = fit(cfg, tmp_path / "f", "model.freeze_backbone=true")
    for k, v in frozen.model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    # validated only after the last epoch, so the weights kept are the thawed epoch's
    thawed = fit(cfg, tmp_path / "t", "model.freeze_backbone=true", "model.unfreeze_epoch=1", "optim.epochs=2",
                 "val_every=2")
    changed = [k for k, v in thawed.model.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_backbone_lr_multiplier_and_schedule(tmp_path: Path, tiny_data: dict) -> None:
    cfg = load_config(config(tmp_path, tiny_data, optim__backbone_lr_mult=0.1, optim__lr_schedule={"1": 5e-4}))
    assert learning_rate(cfg.optim, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg.optim, 1) == pytest.approx(5e-4)
    trainer = Trainer(cfg, tmp_path / "x")
    trainer.setup()
    from smil.train.schedule import set_learning_rate

    set_learning_rate(trainer.optimizer, 1e-3)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {"backbone": pytest.approx(1e-4), "head": pytest.approx(1e-3)}
    cos = load_config(config(tmp_path, tiny_data, optim__cosine=True, optim__epochs=4))
    assert learning_rate(cos.optim, 0) > learning_rate(cos.optim, 2) > learning_rate(cos.optim, 3, 0.99)


def test_epoch_fraction_validation_interval_and_best_model(tmp_path: Path, tiny_data: dict) -> None:
    out = tmp_path / "exp"
    trainer = fit(config(tmp_path, tiny_data, optim__epochs=3, val_every=2, data__epoch_fraction=0.5), out)
    assert len(trainer.loader) == 3  # 18 train samples × 0.5 = 9 → 3 batches of 4
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [bool(r.get("val/keypoints2d_px")) for r in rows] == [False, True, True]
    record = load_model_record(out / "model.pt")
    best = min(float(r["val/keypoints2d_px"]) for r in rows if r.get("val/keypoints2d_px"))
    assert record["extra"]["best_value"] == pytest.approx(best)


# Visibility-weighted keypoint losses are normalised per batch, so only a loss that is a plain mean
# over samples splits exactly across micro-batches or processes: the parameter loss. The MLP head is
# used because the decoder's self-attention over its single query token has an exactly-zero true
# gradient, which AdamW turns from rounding noise into full-size steps.
MEAN_LOSS = {"params": 1.0, "keypoints2d": 0.0, "keypoints3d": 0.0, "joint_angle_prior": 0.0,
             "limb_scale_prior": 0.0, "limb_trans_prior": 0.0}


def test_gradient_accumulation_matches_a_larger_batch(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1, data__augment=False, data__epoch_fraction=0.5,
                 optim__grad_clip=0.0, loss__weights=MEAN_LOSS, model__head="mlp")
    big = fit(cfg, tmp_path / "big", "data.batch_size=8")
    acc = fit(cfg, tmp_path / "acc", "data.batch_size=4", "optim.accumulate=2")
    assert_same_weights(weights(tmp_path / "big/model.pt"), weights(tmp_path / "acc/model.pt"), atol=2e-5)
    del big, acc


def test_every_config_field_is_read_by_the_code(repo_root: Path) -> None:
    sources = "\n".join(p.read_text() for p in (repo_root / "smil").rglob("*.py") if p.name != "config.py")
    for name, f in iter_fields():
        if f.metadata.get("metadata_only"):
            continue
        leaf = name.split(".")[-1]
        assert f".{leaf}" in sources, f"config field {name} is never read"


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    return subprocess.run([str(bindir / "torchrun"), "--standalone", "--nproc-per-node", "2", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ddp_two_processes_match_one_process_on_the_union(tmp_path: Path, tiny_data: dict, repo_root: Path) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1, data__epoch_fraction=0.2, data__augment=False,
                 loss__weights=MEAN_LOSS, model__head="mlp")
    ddp_out = tmp_path / "ddp"
    proc = torchrun(str(repo_root / "tests" / "ddp_worker.py"), str(cfg), str(ddp_out), "data.batch_size=2",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(ddp_out / "rank0.pt", weights_only=True)
    r1 = torch.load(ddp_out / "rank1.pt", weights_only=True)
    assert_same_weights(r0, r1)
    single = fit(cfg, tmp_path / "single", "data.batch_size=4")
    assert len(single.loader) == 1
    assert_same_weights(r0, {k: v for k, v in single.model.state_dict().items()}, atol=2e-5)
    init = Trainer(load_config(cfg), tmp_path / "init")
    init.setup()
    assert any(not torch.equal(r0[k], v) for k, v in init.model.state_dict().items())  # it did train


def test_resume_after_kill_ends_where_an_uninterrupted_run_ends(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=3, log_every=1, data__batch_size=2)
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "smil", "train", "--config", str(cfg), "--out", str(out)]

    ref = tmp_path / "ref"
    subprocess.run(command(ref), check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed"
    cmd = command(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert_same_weights(weights(ref / "model.pt"), weights(out / "model.pt"))


def test_silhouette_term_trains_with_masks_loaded_only_when_needed(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1, data__epoch_fraction=0.2, loss__silhouette_size=32)
    plain = Trainer(load_config(cfg), tmp_path / "plain")
    plain.setup()
    assert "mask" not in plain.train_ds[0]
    out = tmp_path / "sil"
    fit(cfg, out, "loss.curriculum={0: {silhouette: 0.1}}")
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert float(rows[0]["train/silhouette"]) > 0


@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_keypoint_heatmaps_train_and_their_term_falls(tmp_path: Path, tiny_data: dict, mode: str) -> None:
    cfg = config(tmp_path, tiny_data, mode, optim__epochs=4, model__backbone="resnet18", data__augment=False,
                 model__keypoint_heatmaps=True, loss__weights={"keypoints2d": 1.0, "heatmap_keypoints2d": 5.0})
    out = tmp_path / "hm"
    fit(cfg, out)
    rows = list(csv.DictReader(open(out / "history.csv")))
    first, last = float(rows[0]["train/heatmap_keypoints2d"]), float(rows[-1]["train/heatmap_keypoints2d"])
    assert 0 < last < first
    spec = load_model_record(out / "model.pt")["spec"]
    assert spec["keypoint_heatmaps"] is True


def test_triangulated_keypoints_place_the_first_estimate(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, "multiview", optim__epochs=1, model__backbone="resnet18", data__augment=False,
                 model__head="mlp", model__keypoint_heatmaps=True, model__triangulate_keypoints=True,
                 data__random_view_subsets=False,
                 loss__weights={"keypoints2d": 1.0, "heatmap_keypoints2d": 5.0})
    out = tmp_path / "tri"
    trainer = fit(cfg, out)
    tri = trainer.model.triangulation.eval()
    assert bool(tri.has_template) and tri.template.abs().sum() > 0
    # with the true 2D keypoints, the closed-form placement of the mean skeleton finds each sample's
    # root rotation far better than the training set's mean rotation does
    from smil.geometry.rotations import axis_angle_to_matrix, rot6d_to_matrix

    def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cos = (((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        return torch.rad2deg(torch.arccos(cos))

    placed, mean = [], []
    for batch in trainer._loader(trainer.train_ds, None):
        batch = trainer.prepare(batch)
        kp = torch.where(batch["visibility"][..., None] > 0, batch["keypoints2d"], torch.nan)
        points, _ = tri.measure(kp, batch["view_mask"], batch["K"], batch["R"], batch["t"])
        R, _, _, ok = tri.place(points)
        truth = axis_angle_to_matrix(batch["params/global_rot"])
        assert ok.all()
        placed.append(angle(R, truth))
        mean.append(angle(rot6d_to_matrix(trainer.mean_params["global_rot"]).expand_as(truth), truth))
    placed, mean = torch.cat(placed), torch.cat(mean)
    assert placed.median() < 20 and placed.median() < mean.median() / 3, (placed.median(), mean.median())
    assert load_model_record(out / "model.pt")["spec"]["triangulate_keypoints"] is True



def _one_step(trainer: Trainer, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one training step (no optimiser step)."""
    from smil.train.loop import as_float32, run_model

    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    total, _ = trainer.loss(as_float32(run_model(trainer.model, batch, trainer.cfg.mode)), batch, 0)
    total.backward()
    return float(total.detach()), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _graphs_compiled() -> int:
    import torch._dynamo

    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_compiled_step_matches_eager(tmp_path: Path, tiny_data: dict) -> None:
    """optim.compile with inductor (generated C++ kernels on the CPU): same loss and gradients."""
    import torch._dynamo

    cfg = config(tmp_path, tiny_data, data__augment=False, model__backbone="resnet18", model__head="mlp")
    trainers = {}
    for name, sets in (("eager", []), ("compiled", ["optim.compile=default"])):
        trainers[name] = Trainer(load_config(cfg, sets), tmp_path / name)
        trainers[name].setup()
    batch = trainers["eager"].prepare(next(iter(trainers["eager"].loader)))
    torch._dynamo.reset()
    before = _graphs_compiled()  # a running count over the process
    loss_e, grads_e = _one_step(trainers["eager"], batch)
    assert _graphs_compiled() == before
    loss_c, grads_c = _one_step(trainers["compiled"], batch)
    assert _graphs_compiled() > before  # it did compile
    assert loss_c == pytest.approx(loss_e, rel=1e-5)
    assert grads_e.keys() == grads_c.keys()
    for name, g in grads_e.items():
        assert torch.allclose(grads_c[name], g, rtol=1e-3, atol=1e-5 * float(g.abs().max())), name


def test_compiled_runs_train_like_eager_ones(tmp_path: Path, tiny_data: dict, monkeypatch) -> None:
    """A whole multi-view run compiled (training with the silhouette term, whose renderer is traced up
    to its plan and compiles its chunks, and a curriculum stage; validation, checkpoint, model.pt),
    through torch's graph capture without generated kernels (SMIL_COMPILE_BACKEND=aot_eager)."""
    import torch._dynamo

    import smil.render.soft as soft

    monkeypatch.setenv("SMIL_COMPILE_BACKEND", "aot_eager")
    kernels_used = []
    monkeypatch.setattr(soft, "chunk_kernels", lambda options: kernels_used.append(options) or _chunk_kernels(options))
    cfg = config(tmp_path, tiny_data, "multiview", optim__epochs=2, data__augment=False, loss__silhouette_size=32,
                 loss__weights={**load_config(data={"mode": "multiview"}).loss.weights, "silhouette": 0.1},
                 loss__curriculum={"1": {"keypoints2d": 2.0, "silhouette": 0.2}})
    eager = fit(cfg, tmp_path / "eager")
    torch._dynamo.reset()
    before = _graphs_compiled()
    compiled = fit(cfg, tmp_path / "compiled", "optim.compile=default")
    assert _graphs_compiled() > before
    assert {"backend": "aot_eager"} in kernels_used  # the chunks compiled, without CUDA graphs
    a, b = weights(tmp_path / "eager/model.pt"), weights(tmp_path / "compiled/model.pt")
    assert_same_weights(a, b, atol=1e-4)  # same parameter names, nearly the same values
    rows = [list(csv.DictReader(open(tmp_path / f"{n}/history.csv"))) for n in ("eager", "compiled")]
    assert float(rows[1][-1]["train/silhouette"]) > 0
    for key in ("train/loss", "train/silhouette", "val/keypoints2d_px"):
        assert [float(r[key]) for r in rows[1]] == pytest.approx([float(r[key]) for r in rows[0]], rel=1e-4)
    assert compiled.history[-1]["epoch"] == eager.history[-1]["epoch"] == 2


@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_compiled_graphs_are_fit_for_cuda_graphs_for_a_model_on_another_device(
    tmp_path: Path, tiny_data: dict, mode: str
) -> None:
    """Everything a compiled step traces (the regressor after its backbone, the loss's terms, forward
    and backward) stays on the model's device: a tensor made on the host in a graph keeps it out of
    CUDA graphs, or splits it around the host's work and copies the tensor over every step. Nor do
    they hold an operator that CUDA graphs cannot capture (inductor's own test). Checked with the
    model and the batch on the ``meta`` device (shapes only), which a CPU can trace."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch._inductor.utils import get_first_incompatible_cudagraph_node

    from smil.losses import LOSS_TERMS
    from smil.train.loop import as_float32, run_model

    on_host: list[str] = []
    unsafe: list[str] = []

    def inspect(gm, example_inputs):
        if (node := get_first_incompatible_cudagraph_node(gm)) is not None:  # inductor's own test
            unsafe.append(f"{node.target}: {(node.meta.get('stack_trace') or '').strip()[-300:]}")
        for node in gm.graph.nodes:
            vals = node.meta.get("val")
            for v in vals if isinstance(vals, (list, tuple)) else [vals]:
                if isinstance(v, torch.Tensor) and v.device.type == "cpu":
                    on_host.append(f"{node.target} {tuple(v.shape)}: {(node.meta.get('stack_trace') or '').strip()[-300:]}")
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=inspect, bw_compiler=inspect)
    extra = {"model__triangulate_keypoints": True, "model__camera_mode": "delta"} if mode == "multiview" else {}
    cfg = config(tmp_path, tiny_data, mode, data__augment=False, model__keypoint_heatmaps=True, **extra)
    trainer = Trainer(load_config(cfg), tmp_path / "out")
    trainer.setup()
    batch = trainer.prepare(next(iter(trainer.loader)))
    model, loss = trainer.model, trainer.loss
    decode_inputs: list = []

    def record_inputs(*args):
        decode_inputs.extend(args)
        return model.decode(*args)

    def meta(x):
        if isinstance(x, dict):
            return {k: meta(v) for k, v in x.items()}
        return x.detach().to("meta").requires_grad_(x.requires_grad) if torch.is_tensor(x) else x

    model._decode = record_inputs
    run_model(model, batch, mode)  # the inputs decode gets on the CPU
    args, batch = [meta(a) for a in decode_inputs], meta(batch)
    model.to("meta"), loss.to("meta")
    torch._dynamo.reset()
    pred = as_float32(torch.compile(model.decode, backend=backend)(*args))
    active = [k for k in LOSS_TERMS if k != "silhouette"]  # the renderer reads its plan from the device
    if mode == "singleview":
        active.remove("triangulation")
    per_iter, final = torch.compile(loss.evaluate, backend=backend)(pred, pred["iterations"][:-1], batch, active)
    assert set(per_iter) | set(final) == set(active)
    sum(v.sum() for v in [*per_iter.values(), *final.values()]).backward()
    assert on_host == []
    assert unsafe == []  # e.g. a solver that reads its error code back (eigh)


def test_a_checkpoint_from_before_a_config_field_existed_still_resumes(tmp_path: Path, tiny_data: dict) -> None:
    cfg = config(tmp_path, tiny_data, optim__epochs=1, data__epoch_fraction=0.2)
    out = tmp_path / "exp"
    fit(cfg, out)
    path = out / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)

    def resumes_with(stored: dict) -> bool:
        torch.save({**state, "config": json.dumps(stored, sort_keys=True)}, path)
        trainer = Trainer(load_config(cfg), out)
        trainer.setup()
        trainer.maybe_resume()
        return trainer.start_epoch == 1

    stored = json.loads(state["config"])
    assert resumes_with(stored)
    del stored["optim"]["compile"]  # written by a version without this field: its default is implied
    assert resumes_with(stored)
    stored["optim"]["lr"] = 0.5  # a real difference still starts afresh
    assert not resumes_with(stored)
