"""DLT triangulation: exact recovery, weights and masks, NaN rules, gradients, and a real session."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smil.data.calibration import by_name, read_calibration_toml
from smil.errors import ShapeMismatchError
from smil.geometry.camera import distort_points, intrinsics, project, projection_matrix, undistort_points
from smil.geometry.triangulation import reprojection_error, triangulate_dlt


def _look_at(center: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV world→camera R, t for a camera at ``center`` looking at ``target`` (world z up)."""
    z = torch.nn.functional.normalize(target - center, dim=-1)
    down = torch.tensor([0.0, 0.0, -1.0], dtype=center.dtype)
    y = torch.nn.functional.normalize(down - (down @ z) * z, dim=-1)
    x = torch.linalg.cross(y, z)
    R = torch.stack([x, y, z])
    return R, -R @ center


def _rig(n_views: int = 4, radius: float = 5.0, dtype=torch.float64):
    Ks, Rs, ts = [], [], []
    for i in range(n_views):
        a = 2 * math.pi * i / n_views
        c = torch.tensor([radius * math.cos(a), radius * math.sin(a), 1.0 + 0.3 * i], dtype=torch.float64)
        R, t = _look_at(c, torch.zeros(3, dtype=torch.float64))
        Ks.append(intrinsics(800.0 + 50 * i, 800.0 + 50 * i, 320.0, 240.0).double())
        Rs.append(R)
        ts.append(t)
    K, R, t = torch.stack(Ks), torch.stack(Rs), torch.stack(ts)
    return K.to(dtype), R.to(dtype), t.to(dtype)


def _scene(n_points: int = 30, n_views: int = 4, scale: float = 1.0, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    K, R, t = _rig(n_views, dtype=torch.float64)
    t = t * scale
    X = (torch.rand(n_points, 3, generator=g, dtype=torch.float64) - 0.5) * scale
    uv = project(X[None], K, R, t)  # (V, N, 2)
    P = projection_matrix(K, R, t)
    return X.to(dtype), uv.to(dtype), P.to(dtype)


@pytest.mark.parametrize("n_views", [2, 3, 5])
def test_noiseless_points_are_recovered(n_views):
    X, uv, P = _scene(n_views=n_views)
    assert uv.shape == (n_views, 30, 2)
    Xh = triangulate_dlt(uv, P)
    assert Xh.shape == (30, 3)
    torch.testing.assert_close(Xh, X, atol=1e-9, rtol=0)
    assert reprojection_error(Xh, uv, P).max().item() < 1e-6


def test_float32_and_millimetre_scale_are_accurate():
    # Millimetre-sized world (cameras ~5000 units away): conditioning keeps float32 usable.
    X, uv, P = _scene(scale=1000.0)
    Xh = triangulate_dlt(uv.float(), P.float())
    assert Xh.dtype == torch.float32
    assert (Xh.double() - X).abs().max().item() < 0.01  # 10 µm on a 1 m cube
    assert torch.nanmedian(reprojection_error(Xh.double(), uv, P)).item() < 0.05


def test_batch_dims_and_broadcast_cameras():
    X, uv, P = _scene()
    uvb = torch.stack([uv, uv.flip(1)])  # (B=2, V, N, 2)
    out = triangulate_dlt(uvb, P)  # P shared across the batch
    assert out.shape == (2, 30, 3)
    torch.testing.assert_close(out[1], X.flip(0), atol=1e-9, rtol=0)
    out2 = triangulate_dlt(uvb, P.expand(2, *P.shape))
    torch.testing.assert_close(out, out2)


def test_weights_scale_invariance_and_zero_weight_drops_view():
    X, uv, P = _scene(n_views=4)
    w = torch.rand(4, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.1
    torch.testing.assert_close(triangulate_dlt(uv, P, weights=w), X, atol=1e-9, rtol=0)
    garbage = uv.clone()
    garbage[2] = torch.randn(30, 2, dtype=torch.float64) * 1e4
    w0 = torch.ones(4, 30, dtype=torch.float64)
    w0[2] = 0
    torch.testing.assert_close(triangulate_dlt(garbage, P, weights=w0), X, atol=1e-9, rtol=0)
    # Without the zero weight the garbage view does move the result.
    assert (triangulate_dlt(garbage, P) - X).abs().max().item() > 1e-3


def test_weights_trade_off_between_noisy_views():
    X, uv, P = _scene(n_views=3)
    noisy = uv.clone()
    noisy[0] += 20.0  # a badly wrong view
    w = torch.ones(3, 30, dtype=torch.float64)
    err_equal = (triangulate_dlt(noisy, P, weights=w) - X).norm(dim=-1).mean()
    w[0] = 0.01
    err_down = (triangulate_dlt(noisy, P, weights=w) - X).norm(dim=-1).mean()
    assert err_down < 0.1 * err_equal


def test_masked_view_with_garbage_changes_nothing():
    X, uv, P = _scene(n_views=4)
    ref = triangulate_dlt(uv[[0, 1, 3]], P[[0, 1, 3]])
    uv_bad = uv.clone()
    P_bad = P.clone()
    uv_bad[2] = float("nan")
    uv_bad[2, ::2] = 1e9
    P_bad[2] = float("inf")
    mask = torch.tensor([True, True, False, True])
    out = triangulate_dlt(uv_bad, P_bad, view_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, X, atol=1e-9, rtol=0)


def test_fewer_than_two_views_gives_nan():
    X, uv, P = _scene(n_points=5, n_views=3)
    uv = uv.clone()
    uv[0, 0] = float("nan")
    uv[1, 0] = float("nan")  # point 0: only view 2
    uv[:, 1] = float("nan")  # point 1: no view
    uv[0, 2, 0] = float("nan")  # point 2: one coordinate missing in view 0 → still 2 views
    out = triangulate_dlt(uv, P)
    assert torch.isnan(out[:2]).all()
    torch.testing.assert_close(out[2:], X[2:], atol=1e-9, rtol=0)
    only_one = triangulate_dlt(uv, P, view_mask=torch.tensor([True, False, False]))
    assert torch.isnan(only_one).all()


def test_coincident_cameras_give_nan_with_finite_gradients():
    X, uv, P = _scene(n_points=4, n_views=3)
    P2 = P.clone()
    P2[1] = P2[0]  # two views with the same camera: the ray is seen twice, depth is unknown
    uv2 = uv.clone()
    uv2[1] = uv2[0]
    uv2[2, :2] = float("nan")  # points 0, 1: only the duplicated camera sees them
    P2.requires_grad_(True)
    out = triangulate_dlt(uv2, P2)
    assert torch.isnan(out[:2]).all()
    torch.testing.assert_close(out[2:], X[2:], atol=1e-9, rtol=0)
    torch.nan_to_num(out, nan=0.0).sum().backward()
    assert torch.isfinite(P2.grad).all()


def test_gradient_flows_to_projection_matrices_and_points():
    X, uv, P = _scene(n_points=8, n_views=3)
    uv = uv.clone()
    uv[0, 0] = float("nan")
    uv[1, 0] = float("nan")  # point 0 unusable → NaN, must not poison gradients
    P_ = P.clone().requires_grad_(True)
    uv_ = (
        uv + 0.3 * torch.randn(uv.shape, generator=torch.Generator().manual_seed(5), dtype=uv.dtype)
    ).requires_grad_(True)
    out = triangulate_dlt(uv_, P_)
    loss = torch.nan_to_num(out, nan=0.0).square().sum()
    loss.backward()
    assert torch.isfinite(P_.grad).all() and P_.grad.abs().sum() > 0
    assert torch.isfinite(uv_.grad).all() and uv_.grad[:, 1:].abs().sum() > 0


def test_gradcheck_small_problem():
    X, uv, P = _scene(n_points=1, n_views=3)
    uv = (uv + 0.5).requires_grad_(True)
    P = P.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: triangulate_dlt(a, b), (uv, P))


def test_shape_errors():
    X, uv, P = _scene(n_views=3)
    with pytest.raises(ShapeMismatchError):
        triangulate_dlt(uv, P[:2])
    with pytest.raises(ShapeMismatchError):
        triangulate_dlt(uv[..., :1], P)
    with pytest.raises(ShapeMismatchError):
        triangulate_dlt(uv, P[..., :3])


def test_reprojection_error_in_pixels():
    X, uv, P = _scene(n_views=2, n_points=4)
    shifted = uv.clone()
    shifted[1, 2] += torch.tensor([3.0, 4.0], dtype=torch.float64)
    err = reprojection_error(X, shifted, P)
    assert err.shape == (2, 4)
    assert abs(err[1, 2].item() - 5.0) < 1e-9
    err[1, 2] = 0
    assert err.abs().max().item() < 1e-9
    shifted[0, 1] = float("nan")
    assert torch.isnan(reprojection_error(X, shifted, P)[0, 1])


# ---------------------------------------------------------------------------------------------
# Real data: the sleap-anipose minimal session (labelled 2D points in 3 views + calibration).

SESSION = Path("sleap/talmolab+sleap-anipose/tests/data/minimal_session")
VIEWS = ("back", "mid", "top")  # "side" is excluded: its calibration is a copy of "top"


def _read_tracks(path: Path) -> tuple[np.ndarray, list[str]]:
    """SLEAP analysis HDF5 → points ``(frames, nodes, 2)`` of track 0 (NaN = missing), node names."""
    with h5py.File(path, "r") as f:
        tracks = f["tracks"][:]  # (n_tracks, 2, n_nodes, n_frames)
        nodes = [n.decode() for n in f["node_names"][:]]
    assert tracks.shape[0] == 1 and tracks.shape[1] == 2
    return np.transpose(tracks[0], (2, 1, 0)), nodes


def test_real_session_reprojection_error(fixtures_dir: Path):
    session = fixtures_dir / SESSION
    cams = by_name(read_calibration_toml(session / "calibration.toml"))
    pts_raw, pts_und, Ps = [], [], []
    node_names = None
    for view in VIEWS:
        (h5,) = sorted((session / view).glob("*.analysis.h5"))
        pts, nodes = _read_tracks(h5)
        node_names = node_names or nodes
        assert nodes == node_names  # same skeleton in every view
        cam = cams[view]  # matched by name, never by position
        flat = pts.reshape(-1, 2)
        pts_raw.append(flat)
        pts_und.append(undistort_points(flat, cam.K, cam.dist))
        Ps.append(cam.projection_matrix())
    uv = torch.from_numpy(np.stack(pts_und))  # (V=3, frames·nodes, 2)
    P = torch.from_numpy(np.stack(Ps))
    X = triangulate_dlt(uv, P)
    n_seen = np.isfinite(np.stack(pts_raw)).all(-1).sum(0)
    assert np.array_equal(torch.isfinite(X).all(-1).numpy(), n_seen >= 2)
    assert (n_seen >= 2).sum() > 1000

    # Reproject into each view, re-apply its lens distortion and compare with the raw labels.
    errors = []
    for i, view in enumerate(VIEWS):
        cam = cams[view]
        uv_proj = project(X, torch.from_numpy(cam.K), torch.from_numpy(cam.R), torch.from_numpy(cam.t))
        raw_proj = distort_points(uv_proj.numpy(), cam.K, cam.dist)
        errors.append(np.linalg.norm(raw_proj - pts_raw[i], axis=1))
    errors = np.concatenate(errors)
    median = float(np.nanmedian(errors))
    assert median <= 5.0, f"median reprojection error {median:.2f} px"
    # The undistorted-space error agrees with the helper.
    und_median = float(np.nanmedian(reprojection_error(X, uv, P).numpy()))
    assert und_median <= 5.0


class _Dispatched(TorchDispatchMode):
    """Records the name of every ATen operator dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


def test_triangulation_calls_no_solver_and_compiles_into_one_graph():
    """On a GPU a linear-algebra solver (cuSOLVER's ``eigh``, ``svd``, ``solve``) reads its error code
    back, which stalls the host and cannot be captured by a CUDA graph. The triangulation (and its
    backward) calls none, so the compiled multi-view loss stays one graph, and it equals the eager one."""
    torch._dynamo.reset()
    X, uv, P = _scene(n_points=6, n_views=3)
    uv = uv + 0.2 * torch.randn(uv.shape, generator=torch.Generator().manual_seed(1), dtype=uv.dtype)
    uv[0, 0] = float("nan")
    uv[1, 0] = float("nan")  # point 0 is undetermined (one view)

    def run(fn):
        a, b = uv.clone().requires_grad_(True), P.clone().requires_grad_(True)
        out = fn(a, b)
        torch.nan_to_num(out, nan=0.0).square().sum().backward()
        return out.detach(), a.grad, b.grad

    with _Dispatched() as dispatched:
        eager = run(triangulate_dlt)
    solvers = {n for n in dispatched.names if "linalg" in n and "cross" not in n and "vector_norm" not in n}
    assert not solvers, solvers
    assert torch._dynamo.explain(triangulate_dlt)(uv, P).graph_break_count == 0
    compiled = run(torch.compile(triangulate_dlt, backend="aot_eager", fullgraph=True))
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, equal_nan=True)
    torch._dynamo.reset()


@pytest.mark.parametrize("n_views", [2, 4])
def test_noisy_points_agree_with_opencv_homogeneous_dlt(n_views):
    """With 2 px of noise the least-squares point (``‖A [X; 1]‖²``) and the homogeneous DLT (smallest
    singular vector of the unscaled rows, as ``cv2.triangulatePoints``) differ by about 1 % of the
    error the noise causes, and are as close to the truth."""
    X, uv, P = _scene(n_points=100, n_views=n_views)
    noisy = uv + 2.0 * torch.randn(uv.shape, generator=torch.Generator().manual_seed(2), dtype=uv.dtype)
    ours = triangulate_dlt(noisy, P)
    if n_views == 2:
        h = cv2.triangulatePoints(P[0].numpy(), P[1].numpy(), noisy[0].T.numpy(), noisy[1].T.numpy())
        ref = torch.from_numpy((h[:3] / h[3:]).T)
    else:  # the same homogeneous system, unscaled rows, solved by SVD
        rows = torch.cat([noisy[..., :1] * P[:, None, 2] - P[:, None, 0], noisy[..., 1:] * P[:, None, 2] - P[:, None, 1]])
        h = torch.linalg.svd(rows.transpose(0, 1)).Vh[:, -1]
        ref = h[:, :3] / h[:, 3:]
    noise_error = (ref - X).norm(dim=-1).mean()
    assert noise_error > 1e-3  # the noise matters …
    assert (ours - ref).norm(dim=-1).mean() < 0.05 * noise_error  # … the method hardly does
    assert (ours - X).norm(dim=-1).mean() < 1.05 * noise_error
