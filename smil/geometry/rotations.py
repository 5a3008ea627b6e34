"""Rotation representations and conversions (torch, batched, differentiable).

Conventions (see ``docs/conventions.md``):

* Rotation matrices act on column vectors: ``y = R @ x``. Shape ``(..., 3, 3)``.
* Axis-angle: a 3-vector whose direction is the axis and whose norm is the angle in radians.
  Shape ``(..., 3)``. Conversions back from a matrix return angles in ``[0, π]``.
* 6D: the first two *columns* of ``R`` flattened column by column,
  ``[R00, R10, R20, R01, R11, R21]``; the identity is ``[1, 0, 0, 0, 1, 0]``. Shape ``(..., 6)``.
  ``rot6d_to_matrix`` applies Gram–Schmidt, so any 6-vector with two non-parallel halves maps to a
  rotation.
* Quaternions: ``(w, x, y, z)``, scalar first. Shape ``(..., 4)``. Inputs need not be unit length
  (they are normalised); outputs are unit length with ``w ≥ 0``.

Every function accepts any number of leading batch dimensions, keeps the input's dtype and device,
and is differentiable. Small-angle cases use Taylor expansions, so gradients stay finite at the
identity; cases near π are handled by choosing the best-conditioned branch.
"""

from __future__ import annotations

import torch

from smil.errors import ShapeMismatchError, SmilError

__all__ = [
    "ROTATION_FORMATS",
    "average_rotations",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "geodesic_angle",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rot6d",
    "project_to_so3",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "rot6d_to_matrix",
    "to_matrix",
]

ROTATION_FORMATS: dict[str, tuple[int, ...]] = {
    "axis_angle": (3,),
    "6d": (6,),
    "matrix": (3, 3),
    "quaternion": (4,),
}
"""Trailing shape of each representation accepted by :func:`to_matrix`."""


def _small_threshold(dtype: torch.dtype) -> float:
    """Squared-angle threshold below which Taylor expansions are used (accurate to dtype eps)."""
    return 1e-6 if dtype in (torch.float64,) else 1e-3


def _check_trailing(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        expected = "(..., " + ", ".join(str(s) for s in shape) + ")"
        raise ShapeMismatchError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with a zero (not NaN/inf) gradient where ``x ≤ 0``."""
    positive = x > 0
    return torch.where(
        positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x)
    )


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]_×`` of ``(..., 3)`` vectors, shape ``(..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2
    )


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``(..., 3)`` axis-angle → ``(..., 3, 3)`` rotation matrix.

    ``R = I + sin θ/θ · K + (1 − cos θ)/θ² · K²`` with ``K = [aa]_×``; both coefficients use Taylor
    series near ``θ = 0`` so the result and its gradient are exact and finite at the identity.
    """
    _check_trailing(aa, (3,), "axis_angle")
    theta2 = (aa * aa).sum(-1)
    small = theta2 < _small_threshold(aa.dtype)
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    a_big = torch.sin(theta) / theta
    b_big = 2 * torch.sin(theta / 2) ** 2 / theta2_safe  # (1 − cos θ)/θ² without cancellation
    a_small = 1 - theta2 / 6 + theta2 * theta2 / 120
    b_small = 0.5 - theta2 / 24 + theta2 * theta2 / 720
    a = torch.where(small, a_small, a_big)[..., None, None]
    b = torch.where(small, b_small, b_big)[..., None, None]
    k = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle → ``(..., 4)`` unit quaternion ``(w, x, y, z)``.

    ``w = cos(θ/2)``; for ``θ ≤ π`` this gives ``w ≥ 0`` (larger angles give ``w < 0``; the
    quaternion still represents the same rotation).
    """
    _check_trailing(aa, (3,), "axis_angle")
    theta2 = (aa * aa).sum(-1)
    small = theta2 < _small_threshold(aa.dtype)
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    half_big = torch.sin(theta / 2) / theta
    half_small = 0.5 - theta2 / 48 + theta2 * theta2 / 3840
    s = torch.where(small, half_small, half_big)
    w_small = 1 - theta2 / 8 + theta2 * theta2 / 384
    w = torch.where(small, w_small, torch.cos(theta / 2))
    return torch.cat([w[..., None], aa * s[..., None]], -1)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` quaternion ``(w, x, y, z)`` → ``(..., 3)`` axis-angle with angle in ``[0, π]``.

    The quaternion is normalised and flipped to ``w ≥ 0`` first; the angle is
    ``2·atan2(|xyz|, w)``, which is well conditioned everywhere, with a Taylor series for
    ``|xyz| → 0``.
    """
    _check_trailing(q, (4,), "quaternion")
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    q = q * sign
    w = q[..., 0]
    v = q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < _small_threshold(q.dtype)
    n = _safe_sqrt(torch.where(small, torch.ones_like(n2), n2))
    factor_big = 2 * torch.atan2(n, w) / n
    # 2·atan(n/w)/n = (2/w)·(1 − (n/w)²/3 + (n/w)⁴/5 − …), with w ≈ 1 here.
    r2 = n2 / (w * w)
    factor_small = (2 / w) * (1 - r2 / 3 + r2 * r2 / 5)
    factor = torch.where(small, factor_small, factor_big)
    return v * factor[..., None]


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` quaternion ``(w, x, y, z)`` (normalised here) → ``(..., 3, 3)`` matrix."""
    _check_trailing(q, (4,), "quaternion")
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        torch.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], -1),
        torch.stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], -1),
        torch.stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrix → ``(..., 4)`` unit quaternion ``(w, x, y, z)``, ``w ≥ 0``.

    Uses Shepperd's method: of the four algebraically equivalent formulas, the one dividing by the
    largest quaternion component is chosen per element, so the result is accurate near ``π`` as well
    as near the identity.
    """
    _check_trailing(R, (3, 3), "matrix")
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4·q_i² for (w, x, y, z)
    sq4 = torch.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1
    )
    # Rows: 4·q_i·q for each choice of i.
    cand = torch.stack(
        [
            torch.stack([sq4[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
            torch.stack([r21 - r12, sq4[..., 1], r10 + r01, r02 + r20], -1),
            torch.stack([r02 - r20, r10 + r01, sq4[..., 2], r21 + r12], -1),
            torch.stack([r10 - r01, r02 + r20, r21 + r12, sq4[..., 3]], -1),
        ],
        -2,
    )
    best = sq4.argmax(-1)
    # The largest 4·q_i² is ≥ 1 for a rotation, so the divisor 2·sqrt(·) = 4|q_i| is ≥ 2.
    denom = 2 * _safe_sqrt(torch.clamp(sq4, min=0.25))
    cand = cand / denom[..., None]
    idx = best[..., None, None].expand(*best.shape, 1, 4)
    q = torch.gather(cand, -2, idx).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrix → ``(..., 3)`` axis-angle with angle in ``[0, π]``.

    Goes through :func:`matrix_to_quaternion`, which is stable at both 0 and π. At exactly π the
    axis sign is ambiguous; either sign is returned (both describe the same rotation).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` 6D representation → ``(..., 3, 3)`` rotation matrix by Gram–Schmidt.

    ``x[..., :3]`` is the (unnormalised) first column, ``x[..., 3:]`` the second; the third column
    is their cross product. The two halves must not be parallel.
    """
    _check_trailing(x, (6,), "6d")
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], -1)


def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` matrix → ``(..., 6)``: first two columns, column by column."""
    _check_trailing(R, (3, 3), "matrix")
    return R[..., :, :2].transpose(-1, -2).reshape(*R.shape[:-2], 6)


def to_matrix(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Convert a rotation in representation ``fmt`` to ``(..., 3, 3)`` matrices.

    ``fmt`` is one of ``"axis_angle"`` ``(..., 3)``, ``"6d"`` ``(..., 6)``, ``"matrix"``
    ``(..., 3, 3)`` (returned unchanged) or ``"quaternion"`` ``(..., 4)``.

    Raises:
        SmilError: unknown ``fmt``.
        ShapeMismatchError: ``x`` does not end in the shape ``fmt`` requires.
    """
    if fmt not in ROTATION_FORMATS:
        allowed = ", ".join(repr(k) for k in ROTATION_FORMATS)
        raise SmilError(f"unknown rotation format {fmt!r}; expected one of {allowed}")
    _check_trailing(x, ROTATION_FORMATS[fmt], fmt)
    if fmt == "axis_angle":
        return axis_angle_to_matrix(x)
    if fmt == "6d":
        return rot6d_to_matrix(x)
    if fmt == "quaternion":
        return quaternion_to_matrix(x)
    return x


def geodesic_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle in radians, in ``[0, π]``, of the relative rotation ``R1ᵀ R2``; shape ``(...)``.

    Computed as ``atan2(|vee(M − Mᵀ)|/2, (tr M − 1)/2)`` with ``M = R1ᵀ R2``, which is accurate
    near 0 and π (unlike ``acos`` of the trace). The gradient at exactly 0 is defined as 0.
    """
    _check_trailing(R1, (3, 3), "R1")
    _check_trailing(R2, (3, 3), "R2")
    m = R1.transpose(-1, -2) @ R2
    cos = (m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1) / 2
    v = torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
    )
    sin = _safe_sqrt((v * v).sum(-1)) / 2
    return torch.atan2(sin, cos)


def _det3(M: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices by the triple product (no LAPACK call)."""
    return (M[..., 0, :] * torch.linalg.cross(M[..., 1, :], M[..., 2, :], dim=-1)).sum(-1)


def project_to_so3(M: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius norm) to each ``(..., 3, 3)`` matrix, via SVD with det fix."""
    _check_trailing(M, (3, 3), "matrix")
    U, _, Vh = torch.linalg.svd(M)
    det = _det3(U) * _det3(Vh)
    d = torch.ones(*M.shape[:-2], 3, dtype=M.dtype, device=M.device)
    d = torch.cat([d[..., :2], torch.where(det < 0, -1.0, 1.0).to(M.dtype)[..., None]], -1)
    return (U * d[..., None, :]) @ Vh


def average_rotations(Rs: torch.Tensor, weights: torch.Tensor | None = None, dim: int = -3) -> torch.Tensor:
    """Chordal L2 (weighted) mean of rotations along ``dim``, projected back to SO(3).

    Args:
        Rs: rotation matrices ``(..., 3, 3)``; ``dim`` indexes one of the leading dimensions
            (default ``-3``: the dimension right before the matrix dims).
        weights: optional non-negative weights: 1-D with one weight per element along ``dim``, or
            any shape broadcastable to ``Rs.shape[:-2]``. ``None`` means equal weights.
        dim: the dimension to average over; it is removed from the output.

    Returns:
        ``(..., 3, 3)`` rotations: ``argmin_R Σ w_i ‖R − R_i‖²_F``, i.e. the SO(3) projection of the
        weighted arithmetic mean of the matrices (computed by SVD with a determinant fix).
    """
    _check_trailing(Rs, (3, 3), "Rs")
    nlead = Rs.ndim - 2
    d = dim if dim >= 0 else Rs.ndim + dim
    if not 0 <= d < nlead:
        raise ShapeMismatchError(
            f"average_rotations: dim={dim} must index a leading dimension of Rs with shape "
            f"{tuple(Rs.shape)} (not the trailing 3×3)"
        )
    if weights is None:
        mean = Rs.mean(dim=d)
    else:
        w = torch.as_tensor(weights, dtype=Rs.dtype, device=Rs.device)
        if w.ndim == 1 and w.shape[0] == Rs.shape[d]:
            w = w.reshape([-1 if i == d else 1 for i in range(nlead)])
        w = torch.broadcast_to(w, Rs.shape[:-2])[..., None, None]
        mean = (w * Rs).sum(dim=d) / w.sum(dim=d).clamp_min(torch.finfo(Rs.dtype).tiny)
    return project_to_so3(mean)
