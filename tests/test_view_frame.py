"""Single-view targets in the view frame (smil.train.view_frame) on real synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smil.body.model import SMILModel
from smil.config import DataConfig
from smil.data.datasets import create_dataset
from smil.geometry.camera import project
from smil.train.view_frame import centred_intrinsics, centring_rotation, to_view_frame


@pytest.fixture(scope="module")
def batch_and_body(tiny_data):
    body = SMILModel.from_file(tiny_data["body_model"]).double()
    cfg = DataConfig(image_size=64, augment=False)
    ds = create_dataset("singleview", tiny_data["single"], None, cfg, train=False)
    batch = next(iter(DataLoader(ds, batch_size=12, shuffle=False)))
    return batch, body


def test_centring_rotation_takes_the_centre_ray_to_the_axis():
    K = torch.tensor([[[200.0, 0, 20.0], [0, 210.0, 50.0], [0, 0, 1]]], dtype=torch.float64)
    Rv = centring_rotation(K, 64)
    assert torch.allclose(Rv @ Rv.transpose(-1, -2), torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(Rv).item() == pytest.approx(1.0)
    ray = torch.linalg.solve(K[0], torch.tensor([31.5, 31.5, 1.0], dtype=torch.float64))
    moved = Rv[0] @ ray
    assert moved[:2].abs().max().item() < 1e-12 and moved[2].item() > 0
    # a centred camera needs no rotation
    Kc = centred_intrinsics(K, 64)
    assert torch.allclose(centring_rotation(Kc, 64), torch.eye(3, dtype=torch.float64).unsqueeze(0), atol=1e-12)


def test_view_frame_keeps_the_pixels_and_the_body(batch_and_body):
    batch, body = batch_and_body
    out = to_view_frame(batch, body, 64)
    assert torch.equal(out["R"][:, 0], torch.eye(3).expand(12, 3, 3))
    assert torch.equal(out["t"], torch.zeros_like(batch["t"]))
    assert torch.allclose(out["K"][:, 0, :2, 2], torch.full((12, 2), 31.5))
    # the stored crops are off-centre: the test is not vacuous
    assert (batch["K"][:, 0, :2, 2] - 31.5).abs().max() > 2.0

    # 1. the 3D keypoints seen through the canonical camera land on the same pixels, up to the
    #    homography's second-order part (under a pixel for these off-centre 64-px crops)
    uv = project(out["keypoints3d"].double().unsqueeze(1), out["K"].double(), out["R"].double(), out["t"].double())
    vis = batch["visibility"] > 0
    err = (uv - batch["keypoints2d"].double()).norm(dim=-1)[vis]
    assert err.median().item() < 0.1 and err.max().item() < 1.0, (err.median().item(), err.max().item())

    # 2. the transformed ground-truth parameters pose the body at the transformed 3D keypoints, exactly
    params = {k[len("params/"):]: v.double() for k, v in out.items() if k.startswith("params/")}
    joints = body.forward_params(params, rotation_format="axis_angle").joints
    assert torch.allclose(joints, out["keypoints3d"].double(), atol=1e-4), (joints - out["keypoints3d"]).abs().max()

    # 3. distances (a rigid motion) are unchanged; other keys pass through untouched
    d0 = torch.cdist(batch["keypoints3d"].double(), batch["keypoints3d"].double())
    d1 = torch.cdist(out["keypoints3d"].double(), out["keypoints3d"].double())
    assert torch.allclose(d0, d1, atol=1e-5)
    assert out["keypoints2d"] is batch["keypoints2d"] and out["params/betas"] is batch["params/betas"]


def test_view_frame_refuses_multi_view_batches(tiny_data):
    body = SMILModel.from_file(tiny_data["body_model"])
    ds = create_dataset("multiview", tiny_data["multi"], None, DataConfig(image_size=64), train=False)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    with pytest.raises(ValueError, match="V = 4"):
        to_view_frame(batch, body, 64)


def test_missing_keypoints_stay_missing(batch_and_body):
    batch, body = batch_and_body
    b = dict(batch)
    kp = b["keypoints3d"].clone()
    kp[0, 3] = float("nan")
    b["keypoints3d"] = kp
    out = to_view_frame(b, body, 64)
    assert np.isnan(out["keypoints3d"][0, 3].numpy()).all()
    assert np.isfinite(out["keypoints3d"][0, 4].numpy()).all()


def test_view_frame_reads_nothing_from_the_device(batch_and_body):
    """The trainer moves every single-view batch into the view frame before the step: a value read
    there (a linear solver's error check) would make the host wait on a GPU for the previous step."""
    from smil.device_reads import DeviceReads

    batch, body = batch_and_body
    with DeviceReads() as reads:
        to_view_frame(batch, body, 64)
    assert reads.seen == []
