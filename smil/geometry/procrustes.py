"""Similarity Procrustes alignment (Umeyama's method), torch, batched and differentiable."""

from __future__ import annotations

import torch

from smil.errors import ShapeMismatchError

__all__ = ["similarity_procrustes"]


def _det3(M: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices by the triple product (no LAPACK call)."""
    return (M[..., 0, :] * torch.linalg.cross(M[..., 1, :], M[..., 2, :], dim=-1)).sum(-1)


#: cuSOLVER's SVD reads its error code back from the device, which a CUDA graph cannot capture: a
#: compiled caller (``optim.compile``, the triangulated placement) runs it eagerly, between graphs.
_svd_eagerly = torch.compiler.disable(torch.linalg.svd)


def similarity_procrustes(
    X: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align ``X`` onto ``Y`` with the best similarity transform ``Y ≈ s · R · X + t``.

    Minimises ``Σ_i w_i ‖s·R·x_i + t − y_i‖²`` over a scale ``s > 0``, a proper rotation ``R``
    (``det R = +1``: when the best orthogonal matrix would be a reflection, the sign of the
    smallest singular direction is flipped) and a translation ``t``.

    Args:
        X, Y: ``(..., N, 3)`` corresponding points. Points with a non-finite coordinate in either
            set are ignored (weight 0).
        weights: optional non-negative ``(..., N)`` weights (default: all 1).

    Returns:
        ``(X_aligned (..., N, 3), scale (...), R (..., 3, 3), t (..., 3))`` with
        ``X_aligned = scale · X @ Rᵀ + t`` (non-finite input points stay non-finite).

    Gradients go through ``torch.linalg.svd`` and are finite when the cross-covariance has distinct
    singular values (i.e. the points are not degenerate, such as all collinear).
    """
    if X.shape[-1] != 3 or X.ndim < 2:
        raise ShapeMismatchError(f"X: expected shape (..., N, 3), got {tuple(X.shape)}")
    if Y.shape[-2:] != X.shape[-2:]:
        raise ShapeMismatchError(f"Y: expected shape (..., {X.shape[-2]}, 3), got {tuple(Y.shape)}")
    dtype = torch.promote_types(X.dtype, Y.dtype)
    X, Y = X.to(dtype), Y.to(dtype)
    ok = torch.isfinite(X).all(-1) & torch.isfinite(Y).all(-1)
    w = torch.ones(ok.shape, dtype=dtype, device=X.device)
    if weights is not None:
        w = torch.broadcast_to(torch.as_tensor(weights, dtype=dtype, device=X.device), ok.shape)
    w = torch.where(ok, w, torch.zeros_like(w))
    Xs = torch.where(ok[..., None], X, torch.zeros_like(X))
    Ys = torch.where(ok[..., None], Y, torch.zeros_like(Y))

    wsum = w.sum(-1).clamp_min(torch.finfo(dtype).tiny)
    mu_x = (w[..., None] * Xs).sum(-2) / wsum[..., None]
    mu_y = (w[..., None] * Ys).sum(-2) / wsum[..., None]
    xc = Xs - mu_x[..., None, :]
    yc = Ys - mu_y[..., None, :]
    cov = (w[..., None, None] * (yc[..., :, None] * xc[..., None, :])).sum(-3) / wsum[..., None, None]
    var_x = (w * (xc * xc).sum(-1)).sum(-1) / wsum

    U, S, Vh = (_svd_eagerly if torch.compiler.is_compiling() else torch.linalg.svd)(cov)
    det = _det3(U) * _det3(Vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    d = torch.stack([torch.ones_like(det), torch.ones_like(det), sign], -1)
    R = (U * d[..., None, :]) @ Vh
    scale = (S * d).sum(-1) / var_x.clamp_min(torch.finfo(dtype).tiny)
    t = mu_y - scale[..., None] * (R @ mu_x[..., :, None])[..., 0]
    X_aligned = scale[..., None, None] * (X @ R.transpose(-1, -2)) + t[..., None, :]
    return X_aligned, scale, R, t
