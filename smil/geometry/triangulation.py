"""Linear (DLT) triangulation from several calibrated views, and reprojection errors (torch).

Points are ideal-pinhole pixel coordinates: undistort them first
(:func:`smil.geometry.camera.undistort_points`). ``P`` are ``3 × 4`` projection matrices
``K · [R | t]`` (:func:`smil.geometry.camera.projection_matrix`).
"""

from __future__ import annotations

import torch

from smil.errors import ShapeMismatchError

__all__ = ["reprojection_error", "triangulate_dlt"]


def _adjugate(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjugate ``(..., 3, 3)`` and determinant ``(...)`` of ``3 × 3`` matrices, in closed form: with
    rows ``m0, m1, m2`` the adjugate's columns are ``m1×m2, m2×m0, m0×m1`` (``M⁻¹ = adj / det``)."""
    m0, m1, m2 = M[..., 0, :], M[..., 1, :], M[..., 2, :]
    adj = torch.stack(
        [torch.linalg.cross(m1, m2, dim=-1), torch.linalg.cross(m2, m0, dim=-1), torch.linalg.cross(m0, m1, dim=-1)],
        -1,
    )
    return adj, (m0 * adj[..., :, 0]).sum(-1)


def _conditioning(P: torch.Tensor, valid_view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World normalisation from the camera centres: centroid ``c`` (..., 3) and scale ``s`` (...).

    Triangulating in coordinates ``X' = (X − c) / s`` keeps the 4 columns of the DLT system on a
    similar scale, which matters in float32 when the world unit is small (e.g. millimetres).
    """
    # Camera centre C solves M·C = −p4 (M = P[:, :3]). A singular M (affine camera) is skipped.
    cols, det = _adjugate(P[..., :3])
    det_ok = det.abs() > torch.finfo(P.dtype).tiny
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    C = -(cols @ P[..., 3:])[..., 0] / det_safe[..., None]
    w = (valid_view & det_ok).to(P.dtype)
    C = torch.where(w[..., None] > 0, C, torch.zeros_like(C))
    n = w.sum(-1).clamp_min(1.0)
    c = (w[..., None] * C).sum(-2) / n[..., None]
    d2 = (w * ((C - c[..., None, :]) ** 2).sum(-1)).sum(-1) / n
    s = torch.sqrt(d2.clamp_min(0) + 1e-30)
    s = torch.where(d2 > 0, s, torch.ones_like(s))
    return c.detach(), s.detach()


def triangulate_dlt(
    points2d: torch.Tensor,
    P: torch.Tensor,
    weights: torch.Tensor | None = None,
    view_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triangulate points seen in ``V`` views by the direct linear transform.

    Args:
        points2d: ``(..., V, N, 2)`` undistorted pixel coordinates; ``NaN`` marks a missing point.
        P: ``(..., V, 3, 4)`` projection matrices.
        weights: optional ``(..., V, N)`` non-negative confidence per observation. Each view's two
            DLT rows are multiplied by its weight; weight 0 drops the observation.
        view_mask: optional ``(..., V)`` booleans; ``False`` drops a whole view (its points may be
            garbage, they are never read).

    Returns:
        ``(..., N, 3)`` world points. A point with fewer than two usable observations (finite,
        weight > 0, view not masked) is ``NaN``, with zero gradient; so is a point its views do not
        determine (all usable views share one camera centre, so their rays coincide, or the rays
        are so close to parallel that the point recedes to infinity).

    Method: for each usable view the rows ``x·p3 − p1`` and ``y·p3 − p2`` are scaled by
    ``1/‖p3[:3]‖`` (so a row's residual at ``[X; 1]`` is depth × pixel error) and by the weight, in
    world coordinates normalised by the camera centres' centroid and spread. The point minimises the
    sum of the squared residuals ``‖A [X; 1]‖²`` (the inhomogeneous linear method): the
    depth-weighted reprojection error, solved in closed form from ``AᵀA``. The homogeneous variant
    (the smallest eigenvector of ``AᵀA``, as ``cv2.triangulatePoints``) minimises the same sum over
    ``‖[X; 1]‖²`` and differs from it only at the relative order of that residual. No solver is
    called, so the host never waits for a GPU and the whole function compiles into one graph.
    Differentiable, with finite gradients wherever the point is determined.
    """
    if points2d.ndim < 3 or points2d.shape[-1] != 2:
        raise ShapeMismatchError(f"points2d: expected shape (..., V, N, 2), got {tuple(points2d.shape)}")
    if P.ndim < 3 or tuple(P.shape[-2:]) != (3, 4):
        raise ShapeMismatchError(f"P: expected shape (..., V, 3, 4), got {tuple(P.shape)}")
    V = points2d.shape[-3]
    if P.shape[-3] != V:
        raise ShapeMismatchError(f"P has {P.shape[-3]} views but points2d has {V}")
    dtype, device = P.dtype, P.device
    points2d = points2d.to(dtype)
    batch = torch.broadcast_shapes(points2d.shape[:-3], P.shape[:-3])
    N = points2d.shape[-2]
    points2d = points2d.expand(*batch, V, N, 2)
    P = P.expand(*batch, V, 3, 4)

    usable = torch.isfinite(points2d).all(-1)  # (..., V, N)
    w = torch.ones(usable.shape, dtype=dtype, device=device)
    if weights is not None:
        w = torch.broadcast_to(torch.as_tensor(weights, dtype=dtype, device=device), usable.shape)
        usable = usable & (w > 0) & torch.isfinite(w)
    view_ok = torch.ones(usable.shape[:-1], dtype=torch.bool, device=device)
    if view_mask is not None:
        view_ok = torch.broadcast_to(
            torch.as_tensor(view_mask, dtype=torch.bool, device=device), view_ok.shape
        )
        usable = usable & view_ok[..., None]
    w = torch.where(usable, w, torch.zeros_like(w))
    pts = torch.where(usable[..., None], points2d, torch.zeros_like(points2d))
    P = torch.where(
        view_ok[..., None, None], P, torch.zeros_like(P) + torch.eye(3, 4, dtype=dtype, device=device)
    )

    # World conditioning: X = s·X' + c  ⇒  P' = P · T with T = [[s·I, c], [0, 1]].
    c, s = _conditioning(P, view_ok)
    T = torch.zeros(*c.shape[:-1], 4, 4, dtype=dtype, device=device)
    T[..., :3, :3] = s[..., None, None] * torch.eye(3, dtype=dtype, device=device)
    T[..., :3, 3] = c
    T[..., 3, 3] = 1
    Pn = P @ T[..., None, :, :]
    Pn = Pn / torch.linalg.vector_norm(Pn[..., 2:3, :3], dim=-1, keepdim=True).clamp_min(
        torch.finfo(dtype).tiny
    )

    p1, p2, p3 = Pn[..., 0, :], Pn[..., 1, :], Pn[..., 2, :]  # (..., V, 4)
    x = pts[..., 0:1]
    y = pts[..., 1:2]  # (..., V, N, 1)
    r1 = x * p3[..., None, :] - p1[..., None, :]
    r2 = y * p3[..., None, :] - p2[..., None, :]  # (..., V, N, 4)
    A = torch.stack([r1, r2], -2) * w[..., None, None]  # (..., V, N, 2, 4)
    A = A.movedim(-4, -3).reshape(*A.shape[:-4], N, 2 * V, 4)  # (..., N, 2V, 4)
    AtA = A.transpose(-1, -2) @ A
    # Scale-free: trace 1, so the test of whether the views determine a point is relative.
    AtA = AtA / AtA.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None].clamp_min(torch.finfo(dtype).tiny)

    enough = usable.sum(-2) >= 2  # (..., N)
    Xn, determined = _least_squares_point(AtA, enough)
    X = s[..., None, None] * Xn + c[..., None, :]
    return torch.where(determined[..., None], X, torch.full_like(X, float("nan")))


def _least_squares_point(AtA: torch.Tensor, enough: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The point ``X`` (..., N, 3) minimising ``‖A [X; 1]‖²``, and whether the views determine it (..., N).

    With ``AtA = [[B, b], [bᵀ, m]]`` the normal equations are ``B X = −b``, solved by the adjugate
    of the symmetric ``3 × 3`` block ``B`` (its columns are cross products of its rows): elementwise
    arithmetic only, so it fuses into a compiled graph, is captured by CUDA graphs, and never makes
    the host wait for a GPU (a solver such as ``torch.linalg.eigh`` reads its error code back).

    The views do not determine the point when ``B`` is (nearly) singular: coincident camera centres,
    or rays so close to parallel that the point recedes to infinity. ``det(B) / tr(adj B)`` lies
    between a third of ``B``'s smallest eigenvalue and that eigenvalue, and decides it, without
    autograd; ``AtA`` has trace 1, so the threshold is relative. Undetermined points divide by 1
    instead, so their (unused) gradients stay finite.
    """
    b = AtA[..., :3, 3]
    adj, det = _adjugate(AtA[..., :3, :3])
    with torch.no_grad():
        smallest = det / adj.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(AtA.dtype).tiny)
        determined = enough & (smallest > 10 * torch.finfo(AtA.dtype).eps)
    det = torch.where(determined, det, torch.ones_like(det))
    return -(adj @ b[..., None])[..., 0] / det[..., None], determined


def reprojection_error(X: torch.Tensor, points2d: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Pixel distance between projected points and observations.

    Args:
        X: ``(..., N, 3)`` world points.
        points2d: ``(..., V, N, 2)`` observed (undistorted) pixel coordinates.
        P: ``(..., V, 3, 4)`` projection matrices.

    Returns:
        ``(..., V, N)`` Euclidean errors in pixels; ``NaN`` where the point or observation is
        missing.
    """
    if X.shape[-1] != 3:
        raise ShapeMismatchError(f"X: expected shape (..., N, 3), got {tuple(X.shape)}")
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], -1)  # (..., N, 4)
    h = Xh[..., None, :, :] @ P.transpose(-1, -2)  # (..., V, N, 3)
    uv = h[..., :2] / h[..., 2:3]
    return torch.linalg.vector_norm(uv - points2d.to(uv.dtype), dim=-1)
