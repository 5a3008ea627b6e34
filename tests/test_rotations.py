"""Rotation conversions: round trips (incl. near 0 and π), conventions, batching, dtypes, gradients."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smil.errors import ShapeMismatchError, SmilError
from smil.geometry import rotations as rot

SETTINGS = settings(max_examples=60, deadline=None)

finite = st.floats(-1.0, 1.0, allow_nan=False)
axes = st.tuples(finite, finite, finite).filter(lambda v: math.hypot(*v) > 1e-3)
# Angles spread over [0, π], plus dense sampling close to 0 and close to π.
angles = st.one_of(
    st.floats(0.0, math.pi),
    st.floats(0.0, 12.0).map(lambda k: 10.0**-k),
    st.floats(0.0, 12.0).map(lambda k: math.pi - 10.0**-k),
    st.sampled_from([0.0, math.pi]),
)


def _aa(axis: tuple[float, float, float], angle: float, dtype=torch.float64) -> torch.Tensor:
    a = torch.tensor(axis, dtype=torch.float64)
    return (a / a.norm() * angle).to(dtype)


def _same_rotation_aa(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """Axis-angle vectors equal, allowing the sign flip that is legitimate exactly at π."""
    if abs(a.norm().item() - math.pi) < 1e-6:
        err = min((a - b).abs().max().item(), (a + b).abs().max().item())
    else:
        err = (a - b).abs().max().item()
    assert err < atol, (a, b)


@SETTINGS
@given(axes, angles)
def test_axis_angle_matrix_round_trip_float64(axis, angle):
    aa = _aa(axis, angle)
    R = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-12
    back = rot.matrix_to_axis_angle(R)
    assert abs(back.norm().item() - angle) < 1e-7
    _same_rotation_aa(aa, back, 1e-7)
    torch.testing.assert_close(rot.axis_angle_to_matrix(back), R, atol=1e-12, rtol=0)


@SETTINGS
@given(axes, angles)
def test_axis_angle_matches_opencv_rodrigues(axis, angle):
    aa = _aa(axis, angle)
    expected = cv2.Rodrigues(aa.numpy())[0]
    np.testing.assert_allclose(rot.axis_angle_to_matrix(aa).numpy(), expected, atol=1e-12)


@SETTINGS
@given(axes, angles)
def test_axis_angle_quaternion_round_trip(axis, angle):
    aa = _aa(axis, angle)
    q = rot.axis_angle_to_quaternion(aa)
    assert abs(q.norm().item() - 1) < 1e-12
    assert q[0] >= -1e-12  # w = cos(θ/2) ≥ 0 for θ ≤ π (up to rounding at exactly π)
    _same_rotation_aa(aa, rot.quaternion_to_axis_angle(q), 1e-7)
    torch.testing.assert_close(rot.quaternion_to_matrix(q), rot.axis_angle_to_matrix(aa), atol=1e-12, rtol=0)


@SETTINGS
@given(st.tuples(finite, finite, finite, finite).filter(lambda v: math.hypot(*v) > 1e-2))
def test_quaternion_matrix_round_trip(v):
    q = torch.tensor(v, dtype=torch.float64)
    q = q / q.norm()
    R = rot.quaternion_to_matrix(q)
    q2 = rot.matrix_to_quaternion(R)
    assert q2[0] >= 0
    assert abs(q2.norm().item() - 1) < 1e-12
    # q and −q are the same rotation; the output picks w ≥ 0.
    err = min((q2 - q).abs().max().item(), (q2 + q).abs().max().item())
    assert err < 1e-10
    torch.testing.assert_close(rot.quaternion_to_matrix(q2), R, atol=1e-12, rtol=0)


@SETTINGS
@given(axes, angles)
def test_rot6d_round_trip(axis, angle):
    R = rot.axis_angle_to_matrix(_aa(axis, angle))
    d6 = rot.matrix_to_rot6d(R)
    torch.testing.assert_close(d6, torch.cat([R[:, 0], R[:, 1]]), atol=0, rtol=0)
    torch.testing.assert_close(rot.rot6d_to_matrix(d6), R, atol=1e-12, rtol=0)


@SETTINGS
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=6, max_size=6))
def test_rot6d_gram_schmidt_gives_rotation(values):
    x = torch.tensor(values, dtype=torch.float64)
    a1, a2 = x[:3], x[3:]
    cross = torch.linalg.cross(a1, a2).norm()
    if a1.norm() < 1e-3 or a2.norm() < 1e-3 or cross < 1e-3 * a1.norm() * a2.norm():
        return  # parallel halves do not define a rotation
    R = rot.rot6d_to_matrix(x)
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-10
    torch.testing.assert_close(R[:, 0], a1 / a1.norm(), atol=1e-12, rtol=0)
    # The second column lies in the plane of a1, a2, on a2's side.
    assert (R[:, 1] @ a2).item() > 0
    assert abs((R[:, 2] @ a2).item()) < 1e-9


def test_rot6d_identity_and_layout():
    assert rot.matrix_to_rot6d(torch.eye(3)).tolist() == [1, 0, 0, 0, 1, 0]
    torch.testing.assert_close(rot.rot6d_to_matrix(torch.tensor([1.0, 0, 0, 0, 1, 0])), torch.eye(3))
    R = torch.arange(9.0).reshape(3, 3)
    assert rot.matrix_to_rot6d(R).tolist() == [0, 3, 6, 1, 4, 7]  # columns, not rows


def test_conventions_quarter_turn_about_z():
    aa = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
    R = rot.axis_angle_to_matrix(aa)
    # Column vectors: R·x̂ = ŷ.
    torch.testing.assert_close(
        R @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64)
    )
    q = rot.axis_angle_to_quaternion(aa)
    s = math.sqrt(0.5)
    torch.testing.assert_close(q, torch.tensor([s, 0, 0, s], dtype=torch.float64))
    torch.testing.assert_close(rot.matrix_to_quaternion(R), q)


def test_matrix_to_quaternion_w_nonnegative_for_half_turns():
    for axis in torch.eye(3, dtype=torch.float64):
        q = rot.matrix_to_quaternion(rot.axis_angle_to_matrix(axis * math.pi))
        assert q[0].item() >= 0
        torch.testing.assert_close(q[1:].abs(), axis.abs(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (4, 1, 2), (0,)])
def test_batch_shapes(shape):
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(*shape, 3, generator=g)
    R = rot.axis_angle_to_matrix(aa)
    assert R.shape == (*shape, 3, 3)
    assert rot.matrix_to_axis_angle(R).shape == (*shape, 3)
    assert rot.matrix_to_rot6d(R).shape == (*shape, 6)
    assert rot.rot6d_to_matrix(rot.matrix_to_rot6d(R)).shape == (*shape, 3, 3)
    assert rot.matrix_to_quaternion(R).shape == (*shape, 4)
    assert rot.quaternion_to_matrix(rot.matrix_to_quaternion(R)).shape == (*shape, 3, 3)
    assert rot.axis_angle_to_quaternion(aa).shape == (*shape, 4)
    assert rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(aa)).shape == (*shape, 3)
    assert rot.geodesic_angle(R, R).shape == shape


def test_batched_equals_elementwise():
    g = torch.Generator().manual_seed(1)
    aa = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    R = rot.axis_angle_to_matrix(aa)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(R[i, j], rot.axis_angle_to_matrix(aa[i, j]))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_dtype_preserved_and_precision(dtype, tol):
    g = torch.Generator().manual_seed(2)
    aa64 = torch.randn(500, 3, generator=g, dtype=torch.float64)
    aa64 = aa64 / aa64.norm(dim=-1, keepdim=True) * torch.rand(500, 1, generator=g, dtype=torch.float64) * 3.1
    aa = aa64.to(dtype)
    ref = torch.from_numpy(np.stack([cv2.Rodrigues(a)[0] for a in aa.double().numpy()]))
    R = rot.axis_angle_to_matrix(aa)
    assert R.dtype == dtype
    assert (R.double() - ref).abs().max().item() < tol * 4
    for out in (
        rot.matrix_to_axis_angle(R),
        rot.matrix_to_quaternion(R),
        rot.matrix_to_rot6d(R),
        rot.rot6d_to_matrix(rot.matrix_to_rot6d(R)),
        rot.axis_angle_to_quaternion(aa),
    ):
        assert out.dtype == dtype
    back = rot.matrix_to_axis_angle(R)
    assert (back.double() - aa.double()).abs().max().item() < tol * 50


def _finite_grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (fn(x) * torch.linspace(0.5, 1.5, fn(x).numel(), dtype=x.dtype).reshape(fn(x).shape)).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all(), x.grad
    return x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_identity(dtype):
    zero = torch.zeros(3, dtype=dtype)
    _finite_grad(rot.axis_angle_to_matrix, zero)
    _finite_grad(rot.axis_angle_to_quaternion, zero)
    _finite_grad(rot.matrix_to_axis_angle, torch.eye(3, dtype=dtype))
    _finite_grad(rot.matrix_to_quaternion, torch.eye(3, dtype=dtype))
    _finite_grad(rot.quaternion_to_axis_angle, torch.tensor([1.0, 0, 0, 0], dtype=dtype))
    _finite_grad(lambda R: rot.geodesic_angle(R, torch.eye(3, dtype=dtype)), torch.eye(3, dtype=dtype))
    _finite_grad(rot.rot6d_to_matrix, torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=dtype))
    # d R / d aa at 0 is the skew-matrix generator: R ≈ I + [aa]×.
    aa = zero.clone().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(rot.axis_angle_to_matrix, aa)
    torch.testing.assert_close(jac[2, 1], torch.tensor([1.0, 0, 0], dtype=dtype))
    torch.testing.assert_close(jac[0, 2], torch.tensor([0.0, 1, 0], dtype=dtype))


def test_gradients_finite_near_pi():
    for axis in torch.eye(3, dtype=torch.float64):
        for angle in (math.pi, math.pi - 1e-9, math.pi - 1e-4):
            R = rot.axis_angle_to_matrix(axis * angle)
            _finite_grad(rot.matrix_to_axis_angle, R)
            _finite_grad(rot.axis_angle_to_matrix, axis * angle)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, 2.0, math.pi - 1e-3])
def test_gradcheck(angle):
    g = torch.Generator().manual_seed(3)
    axis = torch.nn.functional.normalize(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=-1)
    aa = (axis * angle).requires_grad_(True)
    assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(rot.axis_angle_to_quaternion, (aa,))
    R = rot.axis_angle_to_matrix(axis * angle).requires_grad_(True)
    if angle > 0:  # at exactly 0 the map is fine but finite differences leave SO(3) asymmetrically
        assert torch.autograd.gradcheck(rot.matrix_to_axis_angle, (R,))
    x6 = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.rot6d_to_matrix, (x6,))


def test_to_matrix_dispatch():
    aa = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    R = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(rot.to_matrix(aa, "axis_angle"), R)
    torch.testing.assert_close(rot.to_matrix(rot.matrix_to_rot6d(R), "6d"), R)
    torch.testing.assert_close(rot.to_matrix(rot.matrix_to_quaternion(R), "quaternion"), R)
    assert rot.to_matrix(R, "matrix") is R


def test_to_matrix_errors():
    with pytest.raises(SmilError) as exc:
        rot.to_matrix(torch.zeros(3), "euler")
    msg = str(exc.value)
    assert "euler" in msg
    for fmt in ("axis_angle", "6d", "matrix", "quaternion"):
        assert fmt in msg
    with pytest.raises(ShapeMismatchError, match=r"\(\.\.\., 6\)"):
        rot.to_matrix(torch.zeros(2, 3), "6d")
    with pytest.raises(ShapeMismatchError):
        rot.to_matrix(torch.zeros(2, 3), "matrix")
    with pytest.raises(ShapeMismatchError):
        rot.axis_angle_to_matrix(torch.zeros(4))


@SETTINGS
@given(axes, angles, axes, st.floats(-math.pi, math.pi))
def test_geodesic_angle(axis, angle, axis0, angle0):
    R0 = rot.axis_angle_to_matrix(_aa(axis0, angle0))
    dR = rot.axis_angle_to_matrix(_aa(axis, angle))
    d = rot.geodesic_angle(R0, R0 @ dR)
    assert abs(d.item() - angle) < 1e-9
    assert abs(rot.geodesic_angle(R0 @ dR, R0).item() - d.item()) < 1e-9


def test_geodesic_angle_small_angles_are_accurate():
    for angle in (1e-10, 1e-7, 1e-4):
        R = rot.axis_angle_to_matrix(torch.tensor([0.0, 0.0, angle], dtype=torch.float64))
        d = rot.geodesic_angle(torch.eye(3, dtype=torch.float64), R).item()
        assert abs(d - angle) / angle < 1e-6  # acos of the trace would return 0 here


def test_average_rotations():
    g = torch.Generator().manual_seed(4)
    R0 = rot.axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64))
    delta = rot.axis_angle_to_matrix(torch.tensor([0.0, 0.2, 0.0], dtype=torch.float64))
    pair = torch.stack([R0 @ delta, R0 @ delta.T])
    torch.testing.assert_close(rot.average_rotations(pair), R0, atol=1e-12, rtol=0)
    # Weight 0 ignores a rotation; equal rotations average to themselves.
    far = rot.axis_angle_to_matrix(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    Rs = torch.stack([R0, R0, far])
    torch.testing.assert_close(
        rot.average_rotations(Rs, torch.tensor([1.0, 2.0, 0.0])), R0, atol=1e-12, rtol=0
    )
    # Any dim: average a (T, J) sequence over time.
    seq = torch.stack([pair, pair.flip(0), pair], dim=0)  # (T=3, J=2, 3, 3)
    out = rot.average_rotations(seq, dim=0)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[0], rot.average_rotations(seq[:, 0]))
    # 1-D weights apply along `dim`.
    seq2 = torch.stack([seq[0], seq[1], far.expand(2, 3, 3)], dim=0)
    torch.testing.assert_close(
        rot.average_rotations(seq2, torch.tensor([1.0, 1.0, 0.0]), dim=0),
        rot.average_rotations(seq2[:2], dim=0),
    )
    # The result is always a proper rotation.
    noisy = rot.axis_angle_to_matrix(torch.randn(10, 3, generator=g, dtype=torch.float64))
    A = rot.average_rotations(noisy)
    torch.testing.assert_close(A.T @ A, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(torch.linalg.det(A).item() - 1) < 1e-12
    with pytest.raises(ShapeMismatchError):
        rot.average_rotations(noisy, dim=-1)
