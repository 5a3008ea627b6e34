"""Similarity Procrustes: recovers a known similarity; never returns a reflection."""

from __future__ import annotations

import torch

from smil.geometry.procrustes import similarity_procrustes
from smil.geometry.rotations import axis_angle_to_matrix


def _random_similarity(seed: int, batch: tuple[int, ...] = ()):
    g = torch.Generator().manual_seed(seed)
    R = axis_angle_to_matrix(torch.randn(*batch, 3, generator=g, dtype=torch.float64))
    s = torch.rand(batch, generator=g, dtype=torch.float64) * 3 + 0.2
    t = torch.randn(*batch, 3, generator=g, dtype=torch.float64) * 5
    X = torch.randn(*batch, 25, 3, generator=g, dtype=torch.float64)
    Y = s[..., None, None] * X @ R.transpose(-1, -2) + t[..., None, :]
    return X, Y, s, R, t


def test_recovers_known_similarity():
    X, Y, s, R, t = _random_similarity(0)
    Xa, s_hat, R_hat, t_hat = similarity_procrustes(X, Y)
    torch.testing.assert_close(s_hat, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(R_hat, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_hat, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(Xa, Y, atol=1e-10, rtol=0)


def test_batched():
    X, Y, s, R, t = _random_similarity(1, batch=(4, 2))
    Xa, s_hat, R_hat, t_hat = similarity_procrustes(X, Y)
    assert Xa.shape == (4, 2, 25, 3) and s_hat.shape == (4, 2) and R_hat.shape == (4, 2, 3, 3)
    torch.testing.assert_close(R_hat, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(s_hat, s, atol=1e-10, rtol=0)


def test_reflection_is_never_returned():
    X, _, _, _, _ = _random_similarity(2)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    Y = X @ mirror  # a mirror image: the best orthogonal map is a reflection
    Xa, s, R, t = similarity_procrustes(X, Y)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-12
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert s.item() > 0
    # It is the best proper rotation: no random rotation does better.
    err = (Xa - Y).square().sum()
    g = torch.Generator().manual_seed(3)
    for Rr in axis_angle_to_matrix(torch.randn(200, 3, generator=g, dtype=torch.float64)):
        Xr = s * X @ Rr.T
        Xr = Xr - Xr.mean(0) + Y.mean(0)
        assert (Xr - Y).square().sum() >= err - 1e-9


def test_planar_mirror_is_a_rotation():
    # Planar points mirrored within their plane equal a half-turn: the det fix makes it exact.
    g = torch.Generator().manual_seed(4)
    X = torch.cat(
        [torch.randn(20, 2, generator=g, dtype=torch.float64), torch.zeros(20, 1, dtype=torch.float64)], 1
    )
    Y = X * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64) * 2.0 + torch.tensor(
        [1.0, 2.0, 3.0], dtype=torch.float64
    )
    Xa, s, R, t = similarity_procrustes(X, Y)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-12
    torch.testing.assert_close(Xa, Y, atol=1e-10, rtol=0)
    assert abs(s.item() - 2.0) < 1e-10


def test_weights_and_missing_points():
    X, Y, s, R, t = _random_similarity(5)
    Y_bad = Y.clone()
    Y_bad[:5] += 100.0  # outliers with weight 0
    Y_bad[5] = float("nan")  # a missing point is ignored
    w = torch.ones(25, dtype=torch.float64)
    w[:5] = 0
    Xa, s_hat, R_hat, t_hat = similarity_procrustes(X, Y_bad, weights=w)
    torch.testing.assert_close(R_hat, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(s_hat, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(Xa, Y, atol=1e-10, rtol=0)  # X is complete, so every point aligns
    # Without the weights the outliers pull the fit away.
    _, _, R_unw, _ = similarity_procrustes(X, Y_bad)
    assert (R_unw - R).abs().max().item() > 1e-3


def test_gradients_are_finite():
    X, Y, _, _, _ = _random_similarity(6)
    X = X.clone().requires_grad_(True)
    Xa, s, R, t = similarity_procrustes(X, Y + 0.01 * torch.randn_like(Y))
    ((Xa - Y).square().sum() + s).backward()
    assert torch.isfinite(X.grad).all() and X.grad.abs().sum() > 0


def test_compiled_alignment_matches_eager_with_the_svd_outside_the_graph():
    """Under ``optim.compile`` the SVD runs eagerly between graphs (a CUDA graph cannot capture its
    read of the error code): the same alignment and gradients as eager."""
    X, Y, _, _, _ = _random_similarity(7, (3,))
    Y = Y + 0.01 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(8), dtype=Y.dtype)

    def run(fn):
        x = X.clone().requires_grad_(True)
        Xa, s, R, t = fn(x, Y)
        ((Xa - Y).square().sum() + s.sum()).backward()
        return Xa.detach(), s.detach(), R.detach(), t.detach(), x.grad

    torch._dynamo.reset()
    assert torch._dynamo.explain(similarity_procrustes)(X, Y).graph_break_count == 1
    for got, want in zip(run(torch.compile(similarity_procrustes, backend="aot_eager")), run(similarity_procrustes)):
        torch.testing.assert_close(got, want)
    torch._dynamo.reset()
