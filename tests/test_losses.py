"""Every loss term: zero at ground truth, positive otherwise, and decreasing under gradient descent."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dataset_factory import look_at
from smil.body.model import SMILModel
from smil.errors import ConfigError
from smil.geometry.camera import project
from smil.geometry.rotations import axis_angle_to_matrix, matrix_to_rot6d
from smil.losses import LossSettings, SmilLoss, body_forward, curriculum_weights, joint_weights
from smil.render.soft import soft_silhouette

S = 64  # network image size
V = 3


@pytest.fixture(scope="module")
def body(fixtures_dir: Path) -> SMILModel:
    return SMILModel.from_file(fixtures_dir / "models" / "SMILy_STICK.pkl").double()


def ground_truth(body: SMILModel, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    J, nb = body.num_joints, body.num_betas
    gt = {
        "global_rot": torch.randn(B, 3, generator=g, dtype=torch.float64) * 0.3,
        "joint_rot": torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64) * 0.2,
        "betas": torch.randn(B, nb, generator=g, dtype=torch.float64) * 0.5,
        "trans": torch.randn(B, 3, generator=g, dtype=torch.float64) * 0.05,
        "scale": torch.ones(B, dtype=torch.float64),
        "log_beta_scales": torch.randn(B, J, 3, generator=g, dtype=torch.float64) * 0.05,
        "betas_trans": torch.randn(B, J, 3, generator=g, dtype=torch.float64) * 0.01,
    }
    out = body(gt["betas"], gt["global_rot"], gt["joint_rot"], gt["trans"], gt["scale"],
               joint_log_scales=gt["log_beta_scales"], joint_trans=gt["betas_trans"])
    extent = float((out.joints.amax(1) - out.joints.amin(1)).norm(dim=-1).mean())
    import numpy as np

    Rs, ts = [], []
    for a in range(V):
        ang = 2 * math.pi * a / V
        R, t = look_at(np.array([3 * extent * math.cos(ang), 3 * extent * math.sin(ang), 1.5 * extent]))
        Rs.append(torch.as_tensor(R))
        ts.append(torch.as_tensor(t))
    fov = 0.6
    f = S / (2 * math.tan(fov / 2))
    K = torch.tensor([[f, 0, (S - 1) / 2], [0, f, (S - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    K = K.expand(B, V, 3, 3).clone()
    # crops move the principal point off the centre, differently per view: the loss must use it
    K[..., :2, 2] += torch.tensor([[3.0 * v, -2.0 * v] for v in range(V)], dtype=torch.float64)
    batch = {
        "K": K,
        "R": torch.stack(Rs).expand(B, V, 3, 3).clone(),
        "t": torch.stack(ts).expand(B, V, 3).clone(),
        "view_mask": torch.ones(B, V, dtype=torch.bool),
        "keypoints3d": out.joints.detach().clone(),
        "visibility": torch.ones(B, V, J, dtype=torch.float64),
    }
    batch["keypoints2d"] = project(out.joints.unsqueeze(1), batch["K"], batch["R"], batch["t"]).detach()
    for k, v in gt.items():
        batch[f"params/{k}"] = v
        batch[f"has_{k}"] = torch.ones(B, dtype=torch.bool)
    pred = {
        "global_rot": matrix_to_rot6d(axis_angle_to_matrix(gt["global_rot"])),
        "joint_rot": matrix_to_rot6d(axis_angle_to_matrix(gt["joint_rot"])),
        "betas": gt["betas"].clone(),
        "trans": gt["trans"].clone(),
        "scale": gt["scale"].clone(),
        "log_beta_scales": gt["log_beta_scales"].clone(),
        "betas_trans": gt["betas_trans"].clone(),
        "fov": torch.full((B, V, 1), fov, dtype=torch.float64),
        "cam_rot": matrix_to_rot6d(batch["R"]),
        "cam_trans": batch["t"].clone(),
        "principal_point": batch["K"][..., :2, 2].clone(),
        "heatmap_keypoints2d": batch["keypoints2d"].clone(),
    }
    sil = soft_silhouette(out.vertices.unsqueeze(1).expand(B, V, -1, -1).reshape(B * V, -1, 3), body.faces,
                          batch["K"].reshape(-1, 3, 3), batch["R"].reshape(-1, 3, 3), batch["t"].reshape(-1, 3), (S, S))
    batch["mask"] = sil.reshape(B, V, S, S).detach()
    batch["has_mask"] = torch.ones(B, V, dtype=torch.bool)
    return pred, batch, extent


def make_loss(body: SMILModel, term: str, extent: float) -> SmilLoss:
    settings = LossSettings(
        weights={term: 1.0}, curriculum={}, ief_intermediate_weight=0.0,
        joint_weights=torch.ones(body.num_joints, dtype=torch.float64), image_size=S, body_unit=extent,
        silhouette_size=S, silhouette_sigma=1.0,
    )
    return SmilLoss(body, settings)


PERTURB = {
    "keypoints2d": ["joint_rot", "cam_trans"],
    "keypoints3d": ["joint_rot", "trans"],
    "params": ["betas", "global_rot", "fov"],
    "silhouette": ["trans", "cam_trans"],
    "triangulation": ["joint_rot", "cam_trans"],
    "heatmap_keypoints2d": ["heatmap_keypoints2d"],
    "joint_angle_prior": ["joint_rot"],
    "limb_scale_prior": ["log_beta_scales"],
    "limb_trans_prior": ["betas_trans"],
}
REST_AT_ZERO = {"joint_angle_prior", "limb_scale_prior", "limb_trans_prior"}


@pytest.mark.parametrize("term", list(PERTURB))
def test_term_is_zero_at_ground_truth_positive_otherwise_and_decreases(body: SMILModel, term: str) -> None:
    pred, batch, extent = ground_truth(body, B=1 if term == "silhouette" else 2)
    loss = make_loss(body, term, extent)
    if term in REST_AT_ZERO:  # priors are zero at the rest pose
        pred["joint_rot"] = matrix_to_rot6d(torch.eye(3, dtype=torch.float64).expand_as(axis_angle_to_matrix(batch["params/joint_rot"])).clone())
        pred["log_beta_scales"] = torch.zeros_like(pred["log_beta_scales"])
        pred["betas_trans"] = torch.zeros_like(pred["betas_trans"])
    zero, terms = loss(pred, batch)
    assert term in terms
    assert float(zero) < 1e-10, f"{term} at ground truth: {float(zero)}"
    g = torch.Generator().manual_seed(1)
    bad = {k: v.clone() for k, v in pred.items()}
    for name in PERTURB[term]:
        bad[name] = bad[name] + 0.05 * torch.randn(bad[name].shape, generator=g, dtype=torch.float64)
    leaves = {k: v.requires_grad_(True) for k, v in bad.items()}
    start, _ = loss(leaves, batch)
    start = float(start.detach())
    assert start > 1e-8
    opt = torch.optim.Adam(list(leaves.values()), lr=3e-3)
    for _ in range(4):
        opt.zero_grad()
        value, _ = loss(leaves, batch)
        value.backward()
        opt.step()
    end, _ = loss(leaves, batch)
    assert float(end.detach()) < start


def test_triangulation_gradients_reach_the_cameras(body: SMILModel) -> None:
    pred, batch, extent = ground_truth(body)
    loss = make_loss(body, "triangulation", extent)
    pred["cam_trans"] = (pred["cam_trans"] + 0.02).requires_grad_(True)
    pred["cam_rot"] = pred["cam_rot"].clone().requires_grad_(True)
    pred["fov"] = pred["fov"].clone().requires_grad_(True)
    value, _ = loss(pred, batch)
    value.backward()
    for name in ("cam_trans", "cam_rot", "fov"):
        assert pred[name].grad is not None and float(pred[name].grad.abs().sum()) > 0, name


def test_masks_leave_out_missing_labels(body: SMILModel) -> None:
    pred, batch, extent = ground_truth(body)
    loss = make_loss(body, "keypoints2d", extent)
    batch["keypoints2d"][:, 0] += 10.0  # view 0 labels wrong...
    batch["visibility"][:, 0] = 0.0  # ...but invisible
    assert float(loss(pred, batch)[0]) < 1e-10
    loss3 = make_loss(body, "keypoints3d", extent)
    batch["keypoints3d"][:, 3] = float("nan")
    assert float(loss3(pred, batch)[0]) < 1e-10
    lh = make_loss(body, "heatmap_keypoints2d", extent)
    pred["heatmap_keypoints2d"] = pred["heatmap_keypoints2d"] + 5.0  # view 0: invisible
    pred["heatmap_keypoints2d"][:, 1:] -= 5.0
    assert float(lh(pred, batch)[0]) < 1e-10
    batch["view_mask"][:, 2] = False  # a padded view's keypoints are not compared
    pred["heatmap_keypoints2d"][:, 2] += 3.0
    assert float(lh(pred, batch)[0]) < 1e-10
    batch["view_mask"][:, 2] = True
    pred["heatmap_keypoints2d"][:, 2] -= 3.0
    lp = make_loss(body, "params", extent)
    batch["params/betas"] = batch["params/betas"] + 1.0
    batch["has_betas"][:] = False
    assert float(lp(pred, batch)[0]) < 1e-10


def test_ief_intermediate_predictions_are_supervised(body: SMILModel) -> None:
    pred, batch, extent = ground_truth(body)
    settings = LossSettings(weights={"params": 1.0}, curriculum={}, ief_intermediate_weight=0.5,
                            joint_weights=torch.ones(body.num_joints), image_size=S, body_unit=extent)
    loss = SmilLoss(body, settings)
    wrong = {k: v + 0.1 for k, v in pred.items() if k in ("betas", "trans")}
    with_inter, _ = loss({**pred, "iterations": [{**pred, **wrong}, pred]}, batch)
    without, _ = loss({**pred, "iterations": [pred]}, batch)
    assert float(without) < 1e-10 and float(with_inter) > 1e-6


def test_joint_weights_and_ignored_joints(body: SMILModel) -> None:
    names = list(body.joint_names)
    w = joint_weights(names, {names[1]: 2.0}, [names[2]])
    assert w[1] == 2.0 and w[2] == 0.0 and w[0] == 1.0
    with pytest.raises(ConfigError, match="unknown joint 'tail'"):
        joint_weights(names, {}, ["tail"])


def test_curriculum_weights_switch_at_their_epoch() -> None:
    base = {"keypoints2d": 1.0, "silhouette": 0.0}
    cur = {2: {"silhouette": 0.5}, 4: {"keypoints2d": 0.1}}
    assert curriculum_weights(base, cur, 0) == base
    assert curriculum_weights(base, cur, 2) == {"keypoints2d": 1.0, "silhouette": 0.5}
    assert curriculum_weights(base, cur, 9) == {"keypoints2d": 0.1, "silhouette": 0.5}


def test_ief_iterations_are_weighted_like_separate_evaluations(body: SMILModel) -> None:
    pred, batch, extent = ground_truth(body)
    g = torch.Generator().manual_seed(2)
    iterations = [{k: v + 0.03 * i * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in pred.items()}
                  for i in (3, 2, 1)]
    terms = {"keypoints2d": 1.0, "keypoints3d": 0.5, "params": 0.2, "triangulation": 0.1, "joint_angle_prior": 0.01}

    def loss_with(ief_weight: float) -> SmilLoss:
        return SmilLoss(body, LossSettings(
            weights=terms, curriculum={}, ief_intermediate_weight=ief_weight,
            joint_weights=torch.ones(body.num_joints, dtype=torch.float64), image_size=S, body_unit=extent))

    total, final_terms = loss_with(0.5)({**iterations[-1], "iterations": iterations}, batch)
    final, expected_terms = loss_with(0.0)(iterations[-1], batch)
    intermediate = loss_with(0.0)
    intermediate.s.weights = {k: w for k, w in terms.items() if k != "triangulation"}  # final estimate only
    expected = final + 0.5 * sum(intermediate(it, batch)[0] for it in iterations[:-1])
    assert torch.allclose(total, expected, rtol=1e-10)
    assert final_terms.keys() == expected_terms.keys()
    for k, v in expected_terms.items():
        assert torch.allclose(final_terms[k], v, rtol=1e-10), k


def test_silhouette_compares_only_views_with_masks(body: SMILModel) -> None:
    pred, batch, extent = ground_truth(body, B=1)
    loss = make_loss(body, "silhouette", extent)
    batch["mask"][0, 1] = 1.0 - batch["mask"][0, 1]  # a wrong mask...
    assert float(loss(pred, batch)[0]) > 1e-3
    batch["has_mask"][0, 1] = False  # ...that is not there
    assert float(loss(pred, batch)[0]) < 1e-10
    # a padded view with a degenerate camera (every vertex at depth 0) changes nothing, not even NaN
    batch["view_mask"][0, 2] = False
    leaves = {k: v.clone().requires_grad_(True) for k, v in pred.items()}
    with torch.no_grad():
        leaves["cam_rot"][0, 2] = 0.0
        leaves["cam_trans"][0, 2] = 0.0
    bad = {k: v.clone() for k, v in leaves.items()}
    bad["trans"] = bad["trans"] + 0.05
    value, _ = loss(bad, batch)
    value.backward()
    assert float(value.detach()) > 1e-6
    assert all(torch.isfinite(v.grad).all() for v in leaves.values() if v.grad is not None)


def test_silhouette_backface_culling_draws_only_the_faces_turned_to_the_camera(body: SMILModel) -> None:
    """``loss.silhouette_backface_culling``: the term compares the mask with the silhouette of the
    front faces alone. The masks here are drawn from all faces, so the culled term is no longer 0
    at the ground truth, and equals the mean squared difference from a culled drawing."""
    pred, batch, extent = ground_truth(body, B=1)
    everything = make_loss(body, "silhouette", extent)
    culled = SmilLoss(body, replace(everything.s, silhouette_backface_culling=True))
    assert float(everything(pred, batch)[0]) < 1e-12
    B, V = batch["has_mask"].shape
    verts = body_forward(body, pred).vertices
    front = soft_silhouette(verts.unsqueeze(1).expand(B, V, -1, -1).reshape(B * V, -1, 3), body.faces,
                            batch["K"].reshape(-1, 3, 3), batch["R"].reshape(-1, 3, 3), batch["t"].reshape(-1, 3),
                            (S, S), backface_culling=True)
    expected = (front - batch["mask"].reshape(B * V, S, S)).square().mean()
    assert float(expected) > 1e-6
    torch.testing.assert_close(culled(pred, batch)[0], expected)


def test_compiled_terms_compile_the_renderers_chunks_without_cuda_graphs(body: SMILModel) -> None:
    loss = SmilLoss(body, LossSettings(
        weights={"silhouette": 1.0}, curriculum={}, ief_intermediate_weight=0.0,
        joint_weights=torch.ones(body.num_joints, dtype=torch.float64), image_size=S, body_unit=1.0))
    assert loss.render_compile_options() is None  # not compiled: eager chunks
    loss.compile_terms(backend="inductor", mode="reduce-overhead")
    # Chunk shapes change every call: no CUDA graphs for them, whatever the terms' mode.
    assert loss.render_compile_options() == {"backend": "inductor"}
