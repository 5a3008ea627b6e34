"""Backbones, heads and regressors: every family × head × mode runs forward and backward on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smil.errors import ConfigError, ShapeMismatchError
from smil.models.backbones import create_backbone
from smil.models.heads import MLPHead, TransformerIEFHead
from smil.models.regressor import RegressorSpec, create_regressor

J, NB, S = 6, 3, 64


def spec(mode: str, backbone: str, head: str, **kw) -> RegressorSpec:
    base = dict(
        mode=mode, num_joints=J, num_betas=NB, backbone=backbone, image_size=S, head=head,
        hidden_dim=32, head_depth=1, num_heads=4, dropout=0.0, ief_iterations=2,
    )
    if mode == "multiview":
        base.update(rig=["back", "side", "top"], cross_view_layers=1, camera_mode="absolute")
    base.update(kw)
    return RegressorSpec(**base)


def calibration(B: int, V: int) -> dict[str, torch.Tensor]:
    K = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 31.5], [0, 0, 1]]).repeat(B, V, 1, 1)
    return {"K": K, "R": torch.eye(3).repeat(B, V, 1, 1), "t": torch.tensor([0, 0, 5.0]).repeat(B, V, 1)}


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224"])
@pytest.mark.parametrize("head", ["mlp", "transformer"])
@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_forward_backward_every_combination(backbone: str, head: str, mode: str) -> None:
    torch.manual_seed(0)
    model = create_regressor(spec(mode, backbone, head))
    if mode == "singleview":
        out = model(torch.randn(2, 3, S, S))
        assert out["fov"].shape == (2, 1) and out["cam_rot"].shape == (2, 6)
    else:
        out = model(torch.randn(2, 3, 3, S, S), torch.tensor([[1, 1, 0], [1, 1, 1]]).bool())
        assert out["fov"].shape == (2, 3, 1) and out["cam_trans"].shape == (2, 3, 3)
    assert out["joint_rot"].shape == (2, J - 1, 6)
    assert out["log_beta_scales"].shape == (2, J, 3) and out["betas_trans"].shape == (2, J, 3)
    assert out["scale"].shape == (2,) and out["betas"].shape == (2, NB)
    loss = sum(v.float().pow(2).mean() for k, v in out.items() if k != "iterations")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.backbone.net.state_dict()  # backbone is a real timm module
    first_conv = next(p for p in model.backbone.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_rotations_start_at_identity() -> None:
    model = create_regressor(spec("singleview", "resnet18", "transformer"))
    init = model.layout.split(model.init_params)
    assert torch.equal(init["global_rot"], torch.tensor([1.0, 0, 0, 0, 1, 0]))
    assert torch.equal(init["joint_rot"][0], torch.tensor([1.0, 0, 0, 0, 1, 0]))


@pytest.mark.parametrize("cls", [TransformerIEFHead, MLPHead])
def test_ief_iterations_differ_and_depend_on_the_previous(cls) -> None:
    torch.manual_seed(0)
    head = cls(feature_dim=16, param_dim=8, hidden_dim=16, depth=1, num_heads=2, dropout=0.0, iterations=3)
    for p in head.parameters():  # make corrections large enough to see
        torch.nn.init.normal_(p, std=0.5)
    tokens, pooled = torch.randn(1, 5, 16), torch.randn(1, 16)
    init = torch.zeros(1, 8)
    outs = head(tokens, pooled, init)
    assert len(outs) == 3
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    # The correction at iteration 2 depends on the estimate after iteration 1:
    # the same features with a different starting point give a different correction.
    step2 = outs[1] - outs[0]
    shifted = head(tokens, pooled, outs[0] + 1.0)
    assert not torch.allclose(shifted[0] - (outs[0] + 1.0), step2, atol=1e-5)
    # Intermediate predictions stay differentiable.
    outs[0].sum().backward()


def test_transformer_head_computes_what_torchs_decoder_computes() -> None:
    """The head runs its nn.TransformerDecoderLayer modules itself (keys and values once per forward):
    outputs and gradients equal the modules' own forward, with a padding mask."""
    torch.manual_seed(0)
    head = TransformerIEFHead(feature_dim=24, param_dim=10, hidden_dim=32, depth=2, num_heads=4, dropout=0.0,
                              iterations=3)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    tokens, pooled, init = torch.randn(3, 7, 24), torch.randn(3, 24), torch.randn(1, 10)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 4:] = True
    mask[2, :2] = True

    def reference() -> list[torch.Tensor]:
        memory = head.token_proj(tokens)
        x, context, outs = init.expand(3, -1), head.pooled_embed(pooled).unsqueeze(1), []
        for _ in range(head.iterations):
            query = head.query_base + context + head.param_embed(x).unsqueeze(1)
            h = head.decoder(query, memory, memory_key_padding_mask=mask)
            x = x + head.out(head.norm(h[:, 0]))
            outs.append(x)
        return outs

    for mode in (head.train, head.eval):  # training mode and eval (torch's fast path) alike
        mode()
        ours, theirs = head(tokens, pooled, init, mask), reference()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    head.train()
    grads = []
    for fn in (lambda: head(tokens, pooled, init, mask), reference):
        head.zero_grad()
        sum(o.pow(2).sum() for o in fn()).backward()
        grads.append({n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_padded_views_change_no_output() -> None:
    torch.manual_seed(0)
    for camera_mode in ("absolute", "delta", "calibrated"):
        model = create_regressor(spec("multiview", "resnet18", "transformer", camera_mode=camera_mode)).train()
        mask = torch.tensor([[1, 0, 1], [1, 1, 0]]).bool()
        x = torch.randn(2, 3, 3, S, S)
        y = x.clone()
        y[0, 1] = torch.randn(3, S, S) * 10
        y[1, 2] = 0.0
        cal = calibration(2, 3)
        a, b = model(x, mask, cal), model(y, mask, cal)
        for k in a:
            if k != "iterations":
                assert torch.equal(a[k], b[k]), k
        # Real views do matter.
        z = x.clone()
        z[0, 0] += 1.0
        assert not torch.allclose(model(z, mask, cal)["global_rot"], a["global_rot"])


def test_delta_cameras_start_at_the_calibration() -> None:
    from smil.losses import predicted_cameras

    model = create_regressor(spec("multiview", "resnet18", "mlp", camera_mode="delta")).eval()
    cal = calibration(1, 3)
    cal["K"][0, 1, :2, 2] = torch.tensor([12.0, 50.5])  # a crop moved this view's principal point
    out = model(torch.randn(1, 3, 3, S, S), torch.ones(1, 3, dtype=torch.bool), cal)
    assert torch.allclose(out["cam_trans"], cal["t"])  # zero-initialised camera heads
    K, R, t = predicted_cameras(out, S)
    torch.testing.assert_close(K, cal["K"])  # the principal point is the calibration's, not the centre
    with pytest.raises(ConfigError, match="calibration"):
        model(torch.randn(1, 3, 3, S, S), torch.ones(1, 3, dtype=torch.bool))


def test_calibrated_cameras_are_the_calibration_and_nothing_learns_them() -> None:
    from smil.geometry.rotations import rot6d_to_matrix
    from smil.models.regressor import camera_intrinsics

    model = create_regressor(spec("multiview", "resnet18", "mlp", camera_mode="calibrated")).train()
    assert len(model.camera_heads) == 0
    cal = calibration(2, 3)
    cal["t"] = torch.randn(2, 3, 3)
    out = model(torch.randn(2, 3, 3, S, S), torch.tensor([[1, 1, 0], [1, 1, 1]]).bool(), cal)
    assert torch.equal(out["cam_trans"], cal["t"])
    torch.testing.assert_close(rot6d_to_matrix(out["cam_rot"]), cal["R"])
    torch.testing.assert_close(camera_intrinsics(out["fov"], S, out["principal_point"]), cal["K"])
    with pytest.raises(ConfigError, match="calibration"):
        model(torch.randn(1, 3, 3, S, S), torch.ones(1, 3, dtype=torch.bool))


def test_wrong_view_count_and_empty_sample_are_errors() -> None:
    model = create_regressor(spec("multiview", "resnet18", "mlp"))
    with pytest.raises(ShapeMismatchError, match="3 view slots"):
        model(torch.randn(1, 2, 3, S, S), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match="at least one valid view"):
        model(torch.randn(1, 3, 3, S, S), torch.zeros(1, 3, dtype=torch.bool))


def test_unknown_backbone_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_backbone("resnet81", 64)


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    src = create_backbone("resnet18", 64)
    path = tmp_path / "resnet18.pth"
    torch.save(src.net.state_dict(), path)
    dst = create_backbone("resnet18", 64, pretrained_path=path)
    for (k, a), b in zip(src.net.state_dict().items(), dst.net.state_dict().values()):
        assert torch.equal(a, b), k
    other = tmp_path / "vit.pth"
    torch.save(create_backbone("vit_tiny_patch16_224", 64).net.state_dict(), other)
    with pytest.raises(ConfigError, match="do not match backbone 'resnet18'"):
        create_backbone("resnet18", 64, pretrained_path=other)
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet18", 64, pretrained_path=tmp_path / "missing.pth")


def test_resnet_tokens_are_spatial_and_vit_tokens_are_patches() -> None:
    r = create_backbone("resnet18", 64)
    tokens, pooled = r(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 4, 512) and pooled.shape == (1, 512)
    v = create_backbone("vit_tiny_patch16_224", 64)
    tokens, pooled = v(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 16, 192)


def test_soft_argmax_puts_a_peak_at_its_cells_pixel_centre() -> None:
    from smil.models.components.keypoint_heatmaps import KeypointHeatmaps

    heat = KeypointHeatmaps(map_dim=J, num_joints=J, feature_dim=8)
    with torch.no_grad():
        heat.logits.weight.copy_(torch.eye(J).view(J, J, 1, 1))
        heat.logits.bias.zero_()
    cells = [(0, 0), (7, 7), (2, 5), (6, 1), (3, 3), (4, 0)]  # (row, col) on an 8×8 map of a 64 px image
    fmap = torch.zeros(1, J, 8, 8)
    for j, (r, c) in enumerate(cells):
        fmap[0, j, r, c] = 50.0
    keypoints, embedding = heat(fmap, S)
    expected = torch.tensor([[(c + 0.5) * 8 - 0.5, (r + 0.5) * 8 - 0.5] for r, c in cells])
    torch.testing.assert_close(keypoints[0], expected, atol=1e-3, rtol=0)
    assert embedding.shape == (1, 8)
    flat, _ = heat(torch.zeros(1, J, 8, 8), S)  # no evidence anywhere: the image centre
    torch.testing.assert_close(flat[0], torch.full((J, 2), (S - 1) / 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224"])
@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_heatmap_keypoints_come_out_and_feed_the_head(backbone: str, mode: str) -> None:
    torch.manual_seed(0)
    model = create_regressor(spec(mode, backbone, "transformer", keypoint_heatmaps=True))
    if mode == "singleview":
        out = model(torch.randn(2, 3, S, S))
        assert out["heatmap_keypoints2d"].shape == (2, 1, J, 2)
    else:
        mask = torch.tensor([[1, 0, 1], [1, 1, 1]]).bool()
        out = model(torch.randn(2, 3, 3, S, S), mask)
        assert out["heatmap_keypoints2d"].shape == (2, 3, J, 2)
        assert torch.equal(out["heatmap_keypoints2d"][0, 1], torch.zeros(J, 2))  # padded view
    kp = out["heatmap_keypoints2d"]
    assert ((kp >= -0.5) & (kp <= S - 0.5)).all()
    # the body estimate depends on the heatmaps: its gradient reaches their logits
    out["global_rot"].sum().backward()
    assert model.heatmaps.logits.weight.grad.abs().sum() > 0
    assert create_regressor(spec(mode, backbone, "transformer")).heatmaps is None


def _ring_rig(B: int, V: int, radius: float = 20.0) -> dict[str, torch.Tensor]:
    """V cameras on a ring around the origin, looking at it (world → camera, OpenCV)."""
    from smil.geometry.rotations import axis_angle_to_matrix

    Rs, ts = [], []
    for v in range(V):
        yaw = 2 * torch.pi * v / V
        # camera z axis points from the centre (radius, yaw) back to the origin
        R = axis_angle_to_matrix(torch.tensor([0.0, yaw, 0.0])) @ axis_angle_to_matrix(torch.tensor([0.0, torch.pi, 0.0]))
        R = R.T
        C = torch.tensor([radius * torch.sin(torch.tensor(yaw)), 0.0, radius * torch.cos(torch.tensor(yaw))])
        Rs.append(R)
        ts.append(-R @ C)
    K = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]])
    return {"K": K.repeat(B, V, 1, 1), "R": torch.stack(Rs).repeat(B, 1, 1, 1), "t": torch.stack(ts).repeat(B, 1, 1)}


def test_triangulated_keypoints_recover_the_points_and_describe_them_without_units() -> None:
    from smil.geometry.camera import project
    from smil.models.components.triangulated_keypoints import TriangulatedKeypoints

    torch.manual_seed(0)
    B, V = 2, 3
    cal = _ring_rig(B, V)
    X = torch.randn(B, J, 3) * 2.0 + torch.tensor([1.0, -0.5, 0.5])
    uv, depth = project(X[:, None].expand(B, V, J, 3), cal["K"], cal["R"], cal["t"], return_depth=True)
    assert bool((depth > 0).all())
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]]).bool()
    points, features = TriangulatedKeypoints.measure(uv, mask, cal["K"], cal["R"], cal["t"])
    torch.testing.assert_close(points, X, atol=1e-3, rtol=0)
    assert features.shape == (B, 4 * J + 4)
    # the same scene in millimetres instead of centimetres: identical features
    _, scaled = TriangulatedKeypoints.measure(uv, mask, cal["K"], cal["R"], cal["t"] * 10)
    torch.testing.assert_close(scaled, features, atol=1e-4, rtol=0)
    # one valid view: nothing is triangulated, every feature is zero, no NaN anywhere
    one = torch.tensor([[1, 0, 0], [0, 0, 1]]).bool()
    nan_cal = {k: v.clone() for k, v in cal.items()}
    nan_cal["t"][:, 1] = float("nan")  # a padded view's camera is never read
    points1, features1 = TriangulatedKeypoints.measure(uv, one, nan_cal["K"], nan_cal["R"], nan_cal["t"])
    assert torch.isnan(points1).all() and torch.equal(features1, torch.zeros_like(features1))


def test_triangulated_keypoints_feed_the_multiview_body_head() -> None:
    torch.manual_seed(0)
    sp = spec("multiview", "resnet18", "mlp", keypoint_heatmaps=True, triangulate_keypoints=True, camera_mode="delta")
    model = create_regressor(sp)
    cal = _ring_rig(2, 3)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]]).bool()
    images = torch.randn(2, 3, 3, S, S)
    out = model(images, mask, cal)
    assert torch.isfinite(out["global_rot"]).all()
    # the body estimate depends on the triangulation's embedding
    out["global_rot"].sum().backward()
    assert model.triangulation.embed[0].weight.grad.abs().sum() > 0
    # a padded view's pixels and camera change nothing
    images2, cal2 = images.clone(), {k: v.clone() for k, v in cal.items()}
    images2[0, 1] = 7.0
    cal2["R"][0, 1] = torch.eye(3) * 3
    with torch.no_grad():
        a, b = model(images, mask, cal), model(images2, mask, cal2)
    torch.testing.assert_close(a["global_rot"], b["global_rot"])
    with pytest.raises(ConfigError, match="keypoint_heatmaps"):
        create_regressor(spec("multiview", "resnet18", "mlp", triangulate_keypoints=True, camera_mode="delta"))


def test_triangulated_placement_recovers_root_rotation_and_translation() -> None:
    from smil.geometry.rotations import axis_angle_to_matrix
    from smil.models.components.triangulated_keypoints import TriangulatedKeypoints

    torch.manual_seed(1)
    tri = TriangulatedKeypoints(J, 8)
    rest = torch.randn(J, 3)
    assert not tri.place(torch.randn(2, J, 3))[-1].any()  # no template yet: nothing is placed
    tri.set_template(rest)  # root joint 0
    rot = axis_angle_to_matrix(torch.tensor([[0.4, -2.5, 0.9], [2.9, 0.1, 0.0]]))
    trans = torch.tensor([[1.0, 2.0, -3.0], [0.0, -0.5, 0.25]])
    size = torch.tensor([1.3, 0.8])
    # the body model's convention: the root rotation turns the body about the root joint, then the
    # global scale scales about the origin, then the translation is added
    points = size[:, None, None] * ((rest - rest[0]) @ rot.transpose(1, 2) + rest[0]) + trans[:, None]
    points[1, 2] = float("nan")  # a joint not found is left out
    R, t, log_size, ok = tri.place(points)
    torch.testing.assert_close(R, rot, atol=1e-4, rtol=0)
    torch.testing.assert_close(t, trans, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_size.exp(), size, atol=1e-4, rtol=0)
    assert ok.all()
    few = torch.full_like(points, float("nan"))
    few[:, :2] = points[:, :2]
    assert not tri.place(few)[-1].any()  # two joints fix no rotation


def test_multiview_step_reads_nothing_from_the_device_once_the_backbone_runs() -> None:
    """On a GPU a value read back (``.item()``, ``nonzero``, boolean-mask indexing) makes the host wait
    for all queued work: after the backbone's, it would leave the GPU idle while the head launches."""
    from smil.device_reads import DeviceReads

    torch.manual_seed(0)
    model = create_regressor(spec("multiview", "resnet18", "transformer", keypoint_heatmaps=True,
                                  triangulate_keypoints=True, camera_mode="delta"))
    reads = DeviceReads(armed=False)
    model.backbone.net.conv1.register_forward_pre_hook(lambda *_: setattr(reads, "armed", True))
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]]).bool()
    with reads:
        out = model(torch.randn(2, 3, 3, S, S), mask, _ring_rig(2, 3))
        sum(v.float().pow(2).mean() for k, v in out.items() if k != "iterations").backward()
    assert reads.armed and reads.seen == []
